"""A per-user signing key that seals the manifests of the user's own saves.

A seal is HMAC-SHA256 over the manifest's canonical bytes (which include every payload file's
sha256). An artifact sealed by a key in the user's keyring is the user's own work, so loading it
runs no stranger's code, and it loads without ``trusted=``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from persistkit import config
from persistkit.errors import SigningKeyError
from persistkit.manifest import Manifest

SEAL_ALGORITHM = "hmac-sha256"
_KEY_BYTES = 32


def key_path() -> Path:
    return config.keys_dir() / "signing.key"


def user_key() -> bytes:
    """The user's signing key, created (mode 0600) on first use."""
    path = key_path()
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    import secrets  # only to make a key: loads never need it

    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    key = secrets.token_bytes(_KEY_BYTES)
    # unique per call: threads of one process race here too (they share the pid)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    try:
        os.link(tmp, path)  # first writer wins; a racing process reads the winner's key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise SigningKeyError(
            f"the signing key {path} is damaged (it is not hex digits)",
            hint="restore it from a backup; deleting it makes a new key, and artifacts sealed "
            "with the old one then load as someone else's",
        ) from None


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"persistkit-key-id:" + key).hexdigest()[:16]


def trusted_keys() -> dict[str, bytes]:
    """Every key whose seals this user accepts: their own (first) plus any added with
    ``trust_key``."""
    keys = {}
    own = user_key()
    keys[key_id(own)] = own
    folder = config.keys_dir() / "trusted"
    if folder.is_dir():
        for file in sorted(folder.glob("*.key")):
            try:
                key = bytes.fromhex(file.read_text().strip())
            except ValueError:
                continue
            keys[key_id(key)] = key
    return keys


def seal(manifest: Manifest, key: bytes | None = None) -> dict[str, str]:
    """The seal of ``manifest`` as it is now (it forgets the bytes it was parsed from)."""
    key = user_key() if key is None else key
    manifest.sealed_source = None
    mac = hmac.new(key, manifest.sealed_bytes(), hashlib.sha256).hexdigest()
    return {"algorithm": SEAL_ALGORITHM, "key_id": key_id(key), "value": mac}


#: what a manifest's seal says about who made it
SEAL_STATES = {
    "yours": "sealed by you",
    "trusted": "sealed by a key you trust",
    "foreign": "sealed by a key you do not trust",
    "unsealed": "not sealed",
    "modified": "sealed by a key you trust, but changed since it was sealed",
}


def seal_state(manifest: Manifest) -> str:
    """One of :data:`SEAL_STATES`: ``"yours"`` (your own key), ``"trusted"`` (a key added
    with ``trust_key``), ``"foreign"`` (another key, or an algorithm this version does not
    know), ``"unsealed"``, or ``"modified"``: the key is one you trust but the manifest's
    sealed fields (and so the hashes of its files) changed after it was sealed."""
    sealed = manifest.seal
    if not sealed:
        return "unsealed"
    if sealed.get("algorithm") != SEAL_ALGORITHM:
        return "foreign"
    kid = str(sealed.get("key_id", ""))
    keyring = trusted_keys()
    key = keyring.get(kid)
    if key is None:
        return "foreign"
    covered = manifest.sealed_source or manifest.sealed_bytes()  # as written, if parsed
    expected = hmac.new(key, covered, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(sealed.get("value", ""))):
        return "modified"
    return "yours" if kid == next(iter(keyring)) else "trusted"


def seal_is_valid(manifest: Manifest) -> bool:
    """True when the manifest carries a seal made by one of the user's trusted keys."""
    return seal_state(manifest) in ("yours", "trusted")


def export_key() -> str:
    """The user's key as hex, to share with a teammate's ``persistkit.trust_key``."""
    return user_key().hex()


def trust_key(key_hex: str) -> str:
    """Accept seals made with another person's key (hex, as printed by ``export_key``).

    Returns the key id. Only do this for people whose code you would run: their sealed
    artifacts load with ``trusted=True`` semantics. Raises :class:`SigningKeyError` for a
    malformed or short key.
    """
    try:
        key = bytes.fromhex(key_hex.strip())
    except (ValueError, AttributeError):
        raise SigningKeyError(
            "a signing key must be hex digits, as printed by persistkit.export_key()",
            hint="copy the whole key your teammate exported",
        ) from None
    if len(key) < 16:
        raise SigningKeyError(
            f"a signing key must be at least 16 bytes (32 hex digits), got {len(key)} bytes",
            hint="copy the whole key your teammate exported",
        )
    folder = config.keys_dir() / "trusted"
    folder.mkdir(parents=True, exist_ok=True)
    kid = key_id(key)
    path = folder / f"{kid}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return kid
