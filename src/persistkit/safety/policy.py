"""The trust policy in force for one load: what code, if any, a payload may make us run."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from persistkit.errors import UntrustedArtifactError
from persistkit.values import Value

# Decompression limits for compressed joblib files: a cap on the decompressed size, and a
# cap on the ratio decompressed/compressed beyond a floor (real float data rarely compresses
# more than 10x; zeros compress ~1000x with zlib, more with bz2/lzma).
MAX_DECOMPRESSED_BYTES = 8 * 1024**3
MAX_COMPRESSION_RATIO = 1100
RATIO_FLOOR_BYTES = 64 * 1024**2


class TrustPolicy(Value):
    """Decides which globals an untrusted payload may import.

    ``trust_all`` means the user vouched for the whole artifact (``trusted=True``, or the
    manifest is sealed by a key they trust): its code will run. Otherwise only the default
    allow-list (exact ``(module, qualname)`` pairs) plus the exact ``module.qualname`` names
    in ``trusted_globals`` may be imported. Immutable (see :mod:`persistkit.values`).
    """

    _fields = (
        "trust_all",
        "trusted_globals",
        "reason",
        "source",
        "max_decompressed_bytes",
        "max_compression_ratio",
    )
    __slots__ = _fields
    trust_all: bool
    trusted_globals: frozenset[str]
    reason: str
    source: str
    max_decompressed_bytes: int
    max_compression_ratio: int

    def __init__(
        self,
        trust_all: bool = False,
        trusted_globals: frozenset[str] = frozenset(),
        reason: str = "untrusted by default",
        source: str = "this artifact",
        max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES,
        max_compression_ratio: int = MAX_COMPRESSION_RATIO,
    ) -> None:
        self._set(
            trust_all,
            trusted_globals,
            reason,
            source,
            max_decompressed_bytes,
            max_compression_ratio,
        )

    @classmethod
    def from_argument(
        cls,
        trusted: bool | Iterable[str] | None,
        *,
        sealed: bool = False,
        source: str = "this artifact",
    ) -> TrustPolicy:
        """The policy for ``load(..., trusted=trusted)``; ``sealed`` is a valid own seal."""
        if trusted is True:
            return cls(trust_all=True, reason="trusted=True", source=source)
        if sealed:
            return cls(trust_all=True, reason="sealed by a key you trust", source=source)
        if trusted in (None, False):
            return cls(source=source)
        if isinstance(trusted, str):
            trusted = [trusted]
        names = frozenset(str(t) for t in trusted)  # type: ignore[union-attr]
        return cls(trusted_globals=names, reason="trusted= list", source=source)

    def allows_global(self, module: str, name: str) -> bool:
        """True if a payload may import ``name`` from ``module`` (exact match only)."""
        # imported here: a trusted load never asks, and the list is ~0.7 ms to import
        from persistkit.safety.allowlist import is_allowed

        return (
            self.trust_all or is_allowed(module, name) or f"{module}.{name}" in self.trusted_globals
        )

    def allows(self, qualified_name: str) -> bool:
        """True if ``module.qualname`` is trusted or on the allow-list (any exact split)."""
        if self.trust_all or qualified_name in self.trusted_globals:
            return True
        parts = qualified_name.split(".")
        return any(
            self.allows_global(".".join(parts[:i]), ".".join(parts[i:]))
            for i in range(1, len(parts))
        )

    def unpickle(self, fileobj: IO[bytes], *, what: str = "payload") -> Any:
        """Unpickle ``fileobj`` under this policy (the only way backends may unpickle)."""
        from persistkit.safety.unpickler import restricted_load

        return restricted_load(fileobj, self, what=what)

    def load_joblib(self, path: str | Path) -> Any:
        """Load a joblib file (any compression) under this policy, never via ``joblib.load``.

        Raises :class:`UntrustedArtifactError` naming every global that is not allowed and
        :class:`persistkit.errors.FormatError` for damaged or unsupported files.
        """
        from persistkit.safety.joblib_reader import read_joblib

        return read_joblib(Path(path), self)

    def load_joblib_payload(self, payload: Any) -> Any:
        """:meth:`load_joblib` for an opened, checked :class:`persistkit.payload.PayloadFile`:
        reads the bytes that were checked. Trusting everything, ``joblib.load`` streams it,
        except an old file with companion ``.npy`` files (``joblib.load`` would open those by
        path, through links): persistkit's reader takes them from the load's checked files."""
        from persistkit.safety.joblib_format import compression_of

        old = compression_of(payload.head(8)) is None and payload.contains(b"NDArrayWrapper")
        if not self.trust_all or old:
            from persistkit.safety.joblib_reader import read_joblib

            return read_joblib(payload, self)
        import joblib

        payload.ensure_unchanged()
        with payload.stream() as stream:
            return joblib.load(stream)

    def load_torch_payload(self, payload: Any, *, map_location: Any = "cpu") -> Any:
        """:meth:`load_torch` for an opened, checked :class:`persistkit.payload.PayloadFile`."""
        from persistkit.safety.torch_reader import read_torch_zip

        return read_torch_zip(payload, self, map_location=map_location)

    def load_torch(self, path: Any, *, map_location: Any = "cpu") -> Any:
        """Load a full-module ``torch.save`` file (zip) under this policy, never via
        ``torch.load(weights_only=False)``: ``data.pkl`` goes through the restricted
        unpickler and tensors are rebuilt from the zip's storage records."""
        from persistkit.safety.torch_reader import read_torch_zip

        return read_torch_zip(Path(path), self, map_location=map_location)

    def refuse(
        self, globals_needed: Iterable[str | tuple[str, str]], *, what: str = "payload"
    ) -> None:
        """Raise :class:`UntrustedArtifactError` for ``globals_needed`` that are not allowed.

        Names are ``"module.qualname"`` strings or exact ``(module, qualname)`` pairs.
        """
        untrusted: list[str] = []
        for item in globals_needed:
            if isinstance(item, tuple):
                if not self.allows_global(*item):
                    untrusted.append(f"{item[0]}.{item[1]}")
            elif not self.allows(item):
                untrusted.append(item)
        untrusted = sorted(set(untrusted))
        if not untrusted:
            return
        shown = ", ".join(untrusted)
        listed = ", ".join(repr(g) for g in untrusted[:20])
        raise UntrustedArtifactError(
            f"refusing to load {self.source}: its {what} would import {shown}, which "
            f"{'is' if len(untrusted) == 1 else 'are'} not on persistkit's allow-list "
            "(loading it could run code)",
            hint=f"if you trust its source, pass trusted=[{listed}] or trusted=True "
            "(that runs this file's code); `persistkit scan` shows the full audit",
            globals_needed=untrusted,
        )
