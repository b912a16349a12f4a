"""The trust policy in force for one load: what code, if any, a payload may make us run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from persistkit.errors import UntrustedArtifactError


@dataclass(frozen=True)
class TrustPolicy:
    """Decides which globals an untrusted payload may import.

    ``trust_all`` means the user vouched for the whole artifact (``trusted=True``, or the
    manifest is sealed by their own key): its code will run. Otherwise only the default
    allow-list plus the exact ``module.qualname`` names in ``trusted_globals`` may be imported.
    """

    trust_all: bool = False
    trusted_globals: frozenset[str] = frozenset()
    reason: str = "untrusted by default"
    source: str = "this artifact"

    @classmethod
    def from_argument(
        cls,
        trusted: bool | Iterable[str] | None,
        *,
        sealed: bool = False,
        source: str = "this artifact",
    ) -> TrustPolicy:
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

    def allows(self, qualified_name: str) -> bool:
        from persistkit.safety.allowlist import is_allowed

        return (
            self.trust_all or qualified_name in self.trusted_globals or is_allowed(qualified_name)
        )

    def unpickle(self, fileobj: IO[bytes], *, what: str = "payload") -> Any:
        """Unpickle ``fileobj`` under this policy (the only way backends may unpickle)."""
        from persistkit.safety.unpickler import restricted_load

        return restricted_load(fileobj, self, what=what)

    def load_joblib(self, path: Any) -> Any:
        """Load a joblib file under this policy (untrusted: refused until audited reading)."""
        raise UntrustedArtifactError(
            f"refusing to load {self.source}: it is a joblib file that is not sealed by a key "
            "you trust, and reading joblib files through the allow-list is not implemented yet",
            hint="if you trust its source, pass trusted=True (that runs this file's code)",
        )

    def load_torch(self, path: Any, *, map_location: Any = "cpu") -> Any:
        """Load a full-module ``torch.save`` file under this policy (untrusted: refused until
        audited reading of the torch zip exists)."""
        raise UntrustedArtifactError(
            f"refusing to load {self.source}: it is a whole PyTorch module saved with "
            "torch.save (a pickle) that is not sealed by a key you trust, and reading such "
            "files through the allow-list is not implemented yet",
            hint="if you trust its source, pass trusted=True (that runs this file's code); "
            'save models with backend="safetensors" to share them safely',
        )

    def refuse(self, globals_needed: Iterable[str], *, what: str = "payload") -> None:
        """Raise :class:`UntrustedArtifactError` for ``globals_needed`` that are not allowed."""
        needed = sorted(set(globals_needed))
        untrusted = [g for g in needed if not self.allows(g)]
        if not untrusted:
            return
        shown = ", ".join(untrusted)
        listed = ", ".join(repr(g) for g in untrusted[:20])
        raise UntrustedArtifactError(
            f"refusing to load {self.source}: its {what} would import {shown}, which is "
            "not on persistkit's allow-list (loading it could run code)",
            hint=f"if you trust its source, pass trusted=[{listed}] or trusted=True "
            "(that runs this file's code); `persistkit scan` shows the full audit",
            globals_needed=untrusted,
        )
