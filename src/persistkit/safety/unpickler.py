"""The restricted unpickler: audit the whole stream first, then build it importing only
exact ``(module, qualname)`` pairs the trust policy allows.

Order of events for an untrusted payload:

1. :func:`persistkit.safety.pickle_audit.audit_pickle` validates every opcode and length and
   lists every global - nothing has been imported or called yet;
2. the policy refuses the load if any global is not allowed, naming all of them at once;
3. only then Python's C unpickler runs, with :meth:`find_class` checking each name again (a
   second, independent gate) and resolving it by exact attribute path.

Three allowed callables are wrapped with argument checks: ``copyreg._reconstructor``
(protocols 0-1 build every object through it; it takes a class and a base as arguments),
``_codecs.encode`` (protocols 0-2 store ``bytes`` through it; other codecs are not data) and
``builtins.bytes`` (data only: ``bytes(n)`` would allocate ``n`` bytes).
"""

from __future__ import annotations

import copyreg
import importlib
import io
import pickle
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from persistkit.errors import FormatError, PersistkitError
from persistkit.safety.native_checks import check_native_structures
from persistkit.safety.pickle_audit import PickleAudit, mapped_global

if TYPE_CHECKING:
    from persistkit.safety.policy import TrustPolicy

__all__ = ["RestrictedUnpickler", "load_audited", "restricted_load"]

# Bases copyreg._reconstructor may combine with an allowed class: base.__new__(cls, state)
# and base.__init__(obj, state) of these builtins only copy plain data.
_RECONSTRUCT_BASES = (object, dict, list, set, frozenset, tuple, int, float, str, bytes)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only globals the policy allows (after an audit).

    ``replacements`` maps ``(module, name)`` to the object to hand out instead of importing
    it (readers use it to put harmless placeholders where a format names its own helper
    class, e.g. joblib's array wrapper). ``persistent_load`` receives persistent ids.
    """

    def __init__(
        self,
        fileobj: IO[bytes],
        policy: TrustPolicy,
        *,
        protocol: int,
        replacements: dict[tuple[str, str], Any] | None = None,
        persistent_load: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(fileobj)
        self._policy = policy
        self._protocol = protocol
        self._replacements = replacements or {}
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        module, name = mapped_global(module, name, self._protocol)
        if (module, name) in self._replacements:
            return self._replacements[(module, name)]
        if not self._policy.allows_global(module, name):
            self._policy.refuse([f"{module}.{name}"])
        if (module, name) == ("copyreg", "_reconstructor"):
            return self._checked_reconstructor
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) == ("builtins", "bytes"):
            return _bytes_from_data
        return resolve_global(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise pickle.UnpicklingError("persistent ids are not supported")
        return self._persistent(pid)

    def _checked_reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        # identity, not ``in``: an object array holding ``object`` compares equal to it
        if not isinstance(cls, type) or not any(base is b for b in _RECONSTRUCT_BASES):
            raise pickle.UnpicklingError("copyreg._reconstructor with arguments not allowed")
        if cls not in self._replacements.values() and not self._policy.allows_global(
            cls.__module__, cls.__qualname__
        ):
            self._policy.refuse([f"{cls.__module__}.{cls.__qualname__}"])
        return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # pickle protocols 0-2 write bytes as _codecs.encode(text, "latin1"); any other codec
    # (compression codecs, third-party codecs) is never needed to rebuild a pickle
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode is only allowed as (str, 'latin1')")
    return text.encode("latin1")


def _bytes_from_data(*args: Any) -> bytes:
    # bytes() and bytes(text, "latin1") rebuild data; bytes(n) would allocate n zero bytes
    if args and not isinstance(args[0], (str, bytes, list, tuple)):
        raise pickle.UnpicklingError("builtins.bytes is only allowed on data, not a size")
    return bytes(*args)


def resolve_global(module: str, name: str) -> Any:
    """Import ``module`` and follow the dotted ``name`` inside it, exactly."""
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise FormatError(
            f"the payload needs {module}.{name}, which this environment does not have: {exc}",
            hint="install the library versions listed in the artifact's manifest "
            "(`persistkit show`)",
        ) from None
    return obj


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
    allow. Errors raised while building become :class:`FormatError`.
    """
    replaced = set(replacements or {})
    policy.refuse([pair for pair in audit.globals if pair not in replaced], what=what)
    unpickler = RestrictedUnpickler(
        io.BytesIO(data),
        policy,
        protocol=audit.protocol,
        replacements=replacements,
        persistent_load=persistent_load,
    )
    try:
        result = unpickler.load()
        check_native_structures(result, what=what)
        return result
    except PersistkitError:
        raise
    except MemoryError:
        raise FormatError(
            f"the {what} asks for more memory than is available while it loads",
            hint="the file is corrupted or hostile; it is refused",
        ) from None
    except RecursionError:
        raise FormatError(f"the {what} nests objects too deeply to load") from None
    except Exception as exc:
        # allowed constructors reject bad arguments with all kinds of exceptions
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
