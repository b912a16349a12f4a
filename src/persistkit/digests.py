"""The digests that prove a payload file's bytes: which algorithm a save uses, and hashers.

A manifest entry names its own algorithm (``sha256`` or ``blake3``, see
:class:`persistkit.manifest.FileEntry`), and every check uses the entry's algorithm. Saves
use BLAKE3 when the ``blake3`` module is importable: it hashes about 4.4 GB/s on one core here
against sha256's 1.74 GB/s, so hashing beside the write no longer sets the save's pace (see
docs/performance.md). ``PERSISTKIT_FILE_DIGEST=sha256`` forces sha256, whose manifests stay in
format ``persistkit/1`` and are readable by every persistkit release.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

from persistkit.errors import MissingExtraError, OptionError

ALGORITHMS = ("sha256", "blake3")
ENV_VAR = "PERSISTKIT_FILE_DIGEST"
_CHUNK = 1024 * 1024


if TYPE_CHECKING:  # a Protocol costs ~0.1 ms to define, on every first load
    from typing import Protocol

    class Hasher(Protocol):
        """What hashlib's and blake3's hash objects have in common (both release the GIL on
        large updates, so hashing runs on the other core while the caller writes)."""

        def update(self, data: Any, /) -> Any: ...

        def hexdigest(self) -> str: ...


def save_algorithm() -> str:
    """The algorithm a save hashes its files with now: ``$PERSISTKIT_FILE_DIGEST`` when set,
    else ``blake3`` when the module is importable, else ``sha256``."""
    chosen = os.environ.get(ENV_VAR, "").strip().lower()
    if chosen:
        if chosen not in ALGORITHMS:
            raise OptionError(
                f"{ENV_VAR}={chosen!r} names no file digest persistkit knows",
                hint=f"set {ENV_VAR} to one of {', '.join(ALGORITHMS)}, or unset it",
            )
        if chosen == "blake3":
            _blake3_module()  # asked for it: say so now if it is missing
        return chosen
    try:
        _blake3_module()
    except MissingExtraError:
        return "sha256"
    return "blake3"


def new_hasher(algorithm: str) -> Hasher:
    """A fresh, single-threaded hasher for ``algorithm`` (``sha256`` or ``blake3``).

    BLAKE3 stays on one thread: the save hashes on the second core while the first writes,
    and more hashing threads would take the writer's core (measured slower on 2 cores)."""
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "blake3":
        hasher: Hasher = _blake3_module().blake3()
        return hasher
    raise ValueError(f"unknown file digest {algorithm!r}")


def hexdigest_of(algorithm: str, data: Any) -> str:
    """The hex digest of one buffer."""
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return hasher.hexdigest()


def _blake3_module() -> Any:
    try:
        import blake3
    except ImportError:
        raise MissingExtraError(
            "this needs BLAKE3, but the blake3 module is not installed",
            hint='pip install "blake3>=1.0" (a dependency of persistkit)',
        ) from None
    return blake3


def hash_descriptor(algorithm: str, fd: int, size_hint: int) -> tuple[int, str]:
    """``(bytes read, hex digest)`` of everything ``fd`` holds, read from offset 0 in chunks of
    up to 1 MiB (``size_hint``, the expected size, keeps small files from zeroing a whole
    MiB). The read and the hash both release the GIL, so this runs beside other threads."""
    digest = new_hasher(algorithm)
    buf = bytearray(min(_CHUNK, max(size_hint + 1, 4096)))
    view = memoryview(buf)
    pos = 0
    while n := os.preadv(fd, [view], pos):
        digest.update(view[:n])
        pos += n
    return pos, digest.hexdigest()
