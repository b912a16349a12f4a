"""Unpickling under a trust policy: the single entry point the readers use.

Order of events for an untrusted payload:

1. :func:`persistkit.safety.pickle_audit.audit_pickle` validates every opcode and length and
   lists every global - nothing has been imported or called yet;
2. the policy refuses the load if any global is not allowed, naming all of them at once;
3. only then :class:`persistkit.safety.vm.RestrictedMachine` builds the stream, enforcing what
   it may *do* with those globals (which may be called, with which arguments, what BUILD may
   touch) by identity, at each opcode.

A policy that trusts the whole artifact (``trusted=True`` or a valid own seal) runs Python's
own unpickler instead: the user vouched for the file's code.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from persistkit.errors import FormatError, PersistkitError
from persistkit.safety.native_checks import check_native_structures
from persistkit.safety.pickle_audit import PickleAudit

if TYPE_CHECKING:
    from persistkit.safety.policy import TrustPolicy

__all__ = ["load_audited", "restricted_load"]


class _TrustedUnpickler(pickle.Unpickler):
    """Python's unpickler plus a reader's replacements and persistent ids (trusted files)."""

    def __init__(
        self,
        fileobj: IO[bytes],
        *,
        replacements: dict[tuple[str, str], Any],
        persistent_load: Callable[[Any], Any] | None,
    ) -> None:
        super().__init__(fileobj)
        self._replacements = replacements
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._replacements:
            return self._replacements[(module, name)]
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise pickle.UnpicklingError("persistent ids are not supported")
        return self._persistent(pid)


def load_audited(
    data: bytes | bytearray | memoryview,
    audit: PickleAudit,
    policy: TrustPolicy,
    *,
    what: str = "payload",
    replacements: dict[tuple[str, str], Any] | None = None,
    persistent_load: Callable[[Any], Any] | None = None,
) -> Any:
    """Build the objects of a stream that :func:`audit_pickle` has already validated.

    Refuses (before building anything) when the audit lists globals the policy does not
    allow; then builds with the restricted machine. Errors raised while building become
    :class:`FormatError` (or :class:`UntrustedArtifactError` for a broken invariant).
    """
    replaced = set(replacements or {})
    policy.refuse([pair for pair in audit.globals if pair not in replaced], what=what)
    if policy.trust_all:
        return _load_trusted(data, what, replacements or {}, persistent_load)
    # imported here: the machine is needed only when an untrusted file loads, not by
    # `import persistkit` (first-load latency)
    from persistkit.safety.vm import run_restricted

    result = run_restricted(
        bytes(data),
        policy,
        protocol=audit.protocol,
        what=what,
        replacements=replacements,
        persistent_load=persistent_load,
    )
    check_native_structures(result, what=what)
    return result


def _load_trusted(
    data: bytes | bytearray | memoryview,
    what: str,
    replacements: dict[tuple[str, str], Any],
    persistent_load: Callable[[Any], Any] | None,
) -> Any:
    unpickler = _TrustedUnpickler(
        io.BytesIO(data), replacements=replacements, persistent_load=persistent_load
    )
    try:
        return unpickler.load()
    except PersistkitError:
        raise
    except Exception as exc:
        raise FormatError(
            f"the {what} is corrupted: rebuilding it failed ({type(exc).__name__}: {exc})",
            hint="the file is damaged, or was written by incompatible library versions",
        ) from None


def restricted_load(fileobj: IO[bytes], policy: TrustPolicy, *, what: str = "payload") -> Any:
    """Unpickle a plain pickle stream under ``policy`` (the only way backends may unpickle).

    With ``policy.trust_all`` this is ``pickle.load``. Otherwise the whole stream is audited
    first (a stream written by ``joblib.dump``, compressed or not, is recognised and read as
    joblib); :class:`UntrustedArtifactError` lists every global that is not allowed and
    :class:`FormatError` reports corrupted or truncated input.
    """
    if policy.trust_all:
        return pickle.load(fileobj)
    from pathlib import Path

    from persistkit.safety.joblib_reader import load_pickle_family

    name = getattr(fileobj, "name", None)
    directory = Path(name).parent if isinstance(name, str) else None
    return load_pickle_family(fileobj.read(), policy, what=what, directory=directory)
