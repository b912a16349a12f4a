"""The restricted pickle machine: builds an untrusted stream and enforces, in this one place,
what such a stream may *do* — not only which names it may import.

Invariants (each enforced by identity on the real objects, at the opcode that would break it):

1. **Calls.** The callable of ``REDUCE`` is a global resolved from the allow-list in the role
   ``called class`` or ``reconstructor`` (:mod:`persistkit.safety.allowlist`), and every such
   global has a reviewed argument check here (:data:`_CALL_CHECKS`) that validates the
   arguments and makes the call itself. The class of ``NEWOBJ``/``NEWOBJ_EX`` is a global
   resolved in the role ``data class`` or ``called class``, called with no arguments.
   ``INST``/``OBJ`` are never executed. A value the stream computed — an instance, whatever a
   call returned — is never called, even when it is callable (``nn.Identity()``, a kernel).
2. **BUILD.** ``BUILD`` applies only to an object this machine made (``NEWOBJ``, a checked
   call, ``copyreg._reconstructor``) — never a type, function, module, builtin or container
   literal — and at most once. Its state is a ``dict`` (or a ``(dict, slots)`` pair) with
   string keys that are neither dunder names nor, for slots, undeclared slots, and that do not
   shadow a method or descriptor of the class. ``__setstate__`` runs only when the class that
   defines it is reviewed in :mod:`persistkit.safety.capabilities`; torch modules additionally
   get empty hook tables only.
3. **numpy.** A dtype's pickled state (flags, field offsets, item size) is never handed to
   numpy as is: the description is validated (bounded sizes, fields inside the item,
   object fields never overlapping), a fresh dtype is built from it by numpy's own
   constructor, and only that dtype's canonical state is applied. Arrays are built only from
   such dtypes, with exact byte counts (object arrays from lists), by numpy's public
   constructors.
4. **Values.** Every value the machine holds is a literal, a container made by a container
   opcode, an allowed global, or an object one of the checked paths above made — so BUILD
   state is plain data and allowed instances by construction.

Globals named in ``trusted=[...]`` get plain pickle semantics (the user vouched for them);
everything else follows the rules above.
"""

from __future__ import annotations

import codecs
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from persistkit.errors import FormatError, PersistkitError, UntrustedArtifactError
from persistkit.safety.allowlist import (
    CALLED_CLASS,
    DATA_CLASS,
    PURE_FUNCTION,
    RECONSTRUCTOR,
    role_of,
)
from persistkit.safety.capabilities import (
    MODULE_HOOK_ATTRIBUTES,
    STATE_CALLABLE_ATTRIBUTES,
    defining_class,
    reviewed,
    state_key_shadows_method,
)

if TYPE_CHECKING:
    from persistkit.safety.policy import TrustPolicy

__all__ = ["JoblibArray", "NeedsAudit", "Refusal", "RestrictedMachine", "run_restricted"]

TRUSTED = "trusted"
REPLACEMENT = "replacement"
_MAX_MEMO_SLACK = 4096
_MAX_DIMS = 64
_MAX_ELEMENTS = 1 << 48
_MAX_ITEMSIZE = 1 << 31
_MAX_FIELDS = 1 << 16


class Refusal(UntrustedArtifactError):
    """The stream tried to do something no pickler writes (an invariant of this module)."""


class NeedsAudit(Exception):
    """The first pass cannot decide alone: the stream names a global that is not allowed
    (the audited path then lists every one of them at once) or uses a layout of joblib < 0.10.
    """


class JoblibArray:
    """Stands where joblib's ``NumpyArrayWrapper`` would be imported; its ``BUILD`` is
    followed by the array's raw bytes, which the machine reads in its place."""

    __slots__ = ()


_JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
_JOBLIB_PAIRS = frozenset(
    {
        _JOBLIB_WRAPPER,
        ("joblib.numpy_pickle", "NDArrayWrapper"),
        ("joblib.numpy_pickle", "ZNDArrayWrapper"),
    }
)
_MAX_NESTING = 1000


class _Mark:
    __slots__ = ()


_MARK = _Mark()


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _exact_int(value: Any) -> bool:
    return type(value) is int


class RestrictedMachine:
    """Runs one pickle stream under ``policy`` (see the module docstring for the rules).

    ``replacements`` maps ``(module, name)`` to an object of ours handed out instead of
    importing it (readers use placeholders for a format's helper classes); a replacement that
    is a class is made like a data class and its own ``__setstate__`` runs. ``persistent_load``
    receives persistent ids (torch storages, joblib arrays).
    """

    def __init__(
        self,
        data: bytes,
        policy: TrustPolicy,
        *,
        protocol: int,
        what: str,
        replacements: dict[tuple[str, str], Any] | None = None,
        persistent_load: Callable[[Any], Any] | None = None,
        joblib: bool = False,
        first_pass: bool = False,
        start: int = 0,
        nested: bool = False,
    ) -> None:
        self.data = data
        self.policy = policy
        # joblib: read joblib's raw array data where its array wrappers are built;
        # first_pass: raise NeedsAudit instead of refusing, so the caller can list every
        # untrusted global at once; nested: a stream inside another (may be followed by more)
        self.joblib = joblib
        self.first_pass = first_pass
        self.nested = nested
        self.frame_end = -1
        # id -> nesting depth of tuples (and tuple-like objects) deeper than 1: hashing a
        # tuple nested ~100,000 deep recurses in C without a check and kills the process
        self.depths: dict[int, tuple[int, Any]] = {}
        self.protocol = protocol
        self.what = what
        self.replacements = replacements or {}
        self.persistent_load = persistent_load
        # id -> (object, (module, name), role) of every global resolved in this load; the
        # object is held so its id cannot be reused by another value
        self.globals: dict[int, tuple[Any, tuple[str, str], str]] = {}
        # id -> object, for everything a checked path made (BUILD targets)
        self.made: dict[int, Any] = {}
        self.built: set[int] = set()
        # id -> object handed out by the reader's persistent_load (storages, arrays)
        self.persisted: dict[int, Any] = {}
        self.consumed: set[int] = set()  # dtypes arrays or other dtypes were built from
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.pos = start

    # -- errors ----------------------------------------------------------------------------
    def refuse(self, why: str) -> Refusal:
        return Refusal(
            f"refusing the {self.what}: {why}, which no pickler writes",
            hint="the file was crafted to run code or corrupt memory; it is refused. If you "
            "trust its source, pass trusted=True (that runs this file's code)",
        )

    def corrupt(self, why: str) -> FormatError:
        return FormatError(
            f"the {self.what} is corrupted: {why}",
            hint="the file is damaged, or was written by incompatible library versions",
        )

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> Any:
        data = self.data
        size = len(data)
        table = _DISPATCH
        stack = self.stack
        memo = self.memo
        while True:
            pos = self.pos
            if pos >= size:
                raise self.corrupt("the stream ends before its STOP opcode")
            if self.frame_end >= 0 and pos >= self.frame_end:
                if pos > self.frame_end:
                    raise self.corrupt("an opcode straddles the end of its frame")
                self.frame_end = -1
            code = data[pos]
            # the opcodes that dominate model pickles, inline (same rules as their handlers)
            if code == 0x68 and pos + 1 < size:  # BINGET
                index = data[pos + 1]
                if index not in memo:
                    raise self.corrupt(f"memo slot {index} is read before it is written")
                stack.append(memo[index])
                self.pos = pos + 2
                continue
            if code == 0x94 and stack and stack[-1] is not _MARK:  # MEMOIZE
                memo[len(memo)] = stack[-1]
                self.pos = pos + 1
                continue
            if code == 0x8C and pos + 1 < size:  # SHORT_BINUNICODE
                end = pos + 2 + data[pos + 1]
                if end <= size:
                    try:
                        stack.append(str(data[pos + 2 : end], "utf-8", "surrogatepass"))
                    except UnicodeDecodeError:
                        raise self.corrupt("a string is not valid UTF-8") from None
                    self.pos = end
                    continue
            self.pos = pos + 1
            handler = table[code]
            if handler is None:
                raise self.refuse(f"opcode 0x{code:02x} at byte {pos}")
            if handler is _stop:
                if len(self.stack) != 1:
                    raise self.corrupt("STOP with an unbalanced stack")
                if self.frame_end >= 0 and self.pos != self.frame_end:
                    raise self.corrupt("STOP inside an unfinished frame")
                if not self.nested and self.pos != size:
                    raise self.corrupt(f"it has {size - self.pos} bytes after its STOP opcode")
                return self.stack[0]
            handler(self)

    # -- reading -----------------------------------------------------------------------------
    def read(self, n: int) -> bytes:
        pos = self.pos
        end = pos + n
        if n < 0 or end > len(self.data):
            raise self.corrupt(f"a length of {n} bytes runs past the end of the stream")
        self.pos = end
        return self.data[pos:end]

    def skip(self, n: int) -> int:
        """Check that ``n`` bytes follow, move past them and return where they start."""
        pos = self.pos
        if n < 0 or pos + n > len(self.data):
            raise self.corrupt(f"a length of {n} bytes runs past the end of the stream")
        self.pos = pos + n
        return pos

    def readline(self) -> bytes:
        data = self.data
        nl = data.find(b"\n", self.pos)
        if nl < 0:
            raise self.corrupt("a text argument has no terminating newline")
        line = data[self.pos : nl]
        self.pos = nl + 1
        return line

    # -- stack -------------------------------------------------------------------------------
    def pop(self) -> Any:
        if not self.stack:
            raise self.corrupt("the stack underflows")
        value = self.stack.pop()
        if value is _MARK:
            raise self.corrupt("an opcode consumed a MARK as a value")
        return value

    def top(self) -> Any:
        if not self.stack or self.stack[-1] is _MARK:
            raise self.corrupt("the stack underflows")
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is _MARK:
                items = stack[i + 1 :]
                del stack[i:]
                return items
        raise self.corrupt("an opcode needs a MARK that is not there")

    # -- globals -----------------------------------------------------------------------------
    def find_global(self, module: str, name: str) -> Any:
        from persistkit.safety.pickle_audit import mapped_global
        from persistkit.safety.unpickler import resolve_global

        module, name = mapped_global(module, name, self.protocol)
        pair = (module, name)
        if self.joblib and pair in _JOBLIB_PAIRS:
            if pair != _JOBLIB_WRAPPER:  # joblib < 0.10 layouts: the audited reader's job
                raise NeedsAudit(f"{module}.{name}")
            self.globals[id(JoblibArray)] = (JoblibArray, pair, REPLACEMENT)
            return JoblibArray
        if pair in self.replacements:
            obj, role = self.replacements[pair], REPLACEMENT
        else:
            role = role_of(module, name)  # type: ignore[assignment]
            if role is None or self.policy.trust_all:
                if not self.policy.allows_global(module, name):
                    if self.first_pass:
                        raise NeedsAudit(f"{module}.{name}")
                    self.policy.refuse([pair], what=self.what)
                role = TRUSTED
            obj = resolve_global(module, name)
        self.globals[id(obj)] = (obj, pair, role)
        return obj

    def role(self, value: Any) -> tuple[tuple[str, str], str] | None:
        """The ``(pair, role)`` of ``value`` if it *is* a global resolved in this load."""
        entry = self.globals.get(id(value))
        if entry is None or entry[0] is not value:
            return None
        return entry[1], entry[2]

    def make(self, obj: Any) -> Any:
        """Record ``obj`` as made by a checked path (it may then be the target of BUILD)."""
        self.made[id(obj)] = obj
        return obj

    # -- calls -------------------------------------------------------------------------------
    def call(self, func: Any, args: Any) -> Any:
        known = self.role(func)
        if known is None:
            raise self.refuse(
                f"the stream calls a value it computed ({_describe(func)}) instead of an "
                "allowed global"
            )
        pair, role = known
        if type(args) is not tuple:
            raise self.corrupt("REDUCE arguments are not a tuple")
        if role == TRUSTED:
            return self.make(func(*args))
        if role not in (CALLED_CLASS, RECONSTRUCTOR):
            raise self.refuse(f"the stream calls {pair[0]}.{pair[1]}, a {role}")
        check = _CALL_CHECKS.get(pair)
        if check is None:
            raise self.refuse(f"the stream calls {pair[0]}.{pair[1]}, which has no argument check")
        return self.make(check(self, func, args))

    def new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        known = self.role(cls)
        if known is None or not isinstance(cls, type):
            raise self.refuse(f"NEWOBJ on a value that is not an allowed class ({_describe(cls)})")
        pair, role = known
        if role == TRUSTED:
            return self.make(cls.__new__(cls, *args, **kwargs))
        if role not in (DATA_CLASS, CALLED_CLASS, REPLACEMENT):
            raise self.refuse(f"NEWOBJ on {pair[0]}.{pair[1]}, a {role}")
        if args != () or kwargs:
            raise self.refuse(f"NEWOBJ passes arguments to {pair[0]}.{pair[1]}.__new__")
        if role == CALLED_CLASS and pair not in _NEWOBJ_OK:
            raise self.refuse(f"NEWOBJ on {pair[0]}.{pair[1]}, which is only rebuilt by a call")
        made: Any = cls
        return self.make(made.__new__(made))

    # -- BUILD -------------------------------------------------------------------------------
    def build(self, target: Any, state: Any) -> None:
        inst: Any = target
        key = id(inst)
        if self.made.get(key) is not target:
            raise self.refuse(f"BUILD on {_describe(inst)}, which the stream did not make")
        if key in self.built:
            raise self.refuse(f"a second BUILD on the same {_describe(inst)}")
        self.built.add(key)
        import numpy as np

        cls = type(inst)
        if isinstance(inst, np.dtype):
            return _build_dtype(self, inst, state)
        if cls is np.ndarray:
            return _build_array(self, inst, state)
        if cls is np.ma.MaskedArray:
            return _build_masked(self, inst, state)
        owner = defining_class(cls, "__setstate__")
        known = self.role(cls)
        role = known[1] if known is not None else None
        if role == TRUSTED:
            _plain_build(inst, state)
            return None
        if role == REPLACEMENT:
            inst.__setstate__(state)
            return None
        if owner is not None:
            if not reviewed(owner, "__setstate__"):
                raise self.refuse(
                    f"BUILD would run {owner.__module__}.{owner.__qualname__}.__setstate__, "
                    "which is not reviewed"
                )
            if type(state) is dict and type(getattr(inst, "__dict__", None)) is dict:
                # it will update the instance's __dict__: the same rules as a plain BUILD
                self.check_dict_state(cls, state)
            _check_module_state(self, inst, state)
            inst.__setstate__(state)
            return None
        dict_state, slot_state = state, None
        if type(state) is tuple and len(state) == 2:
            dict_state, slot_state = state
        if dict_state is not None:
            if type(dict_state) is not dict:
                raise self.refuse("BUILD with state that is not a dict")
            self.check_dict_state(cls, dict_state)
            attrs = getattr(inst, "__dict__", None)
            if type(attrs) is not dict:
                raise self.refuse(f"BUILD sets attributes on a {_describe(inst)} without __dict__")
            for k, v in dict_state.items():
                attrs[sys.intern(k)] = v
        if slot_state is not None:
            if type(slot_state) is not dict:
                raise self.refuse("BUILD with slot state that is not a dict")
            slots = _declared_slots(cls)
            for k in slot_state:
                if type(k) is not str or k not in slots or _is_dunder(k):
                    raise self.refuse(f"BUILD sets {k!r}, which is not a declared slot")
            _check_called_attributes(self, cls, slot_state)
            for k, v in slot_state.items():
                setattr(inst, k, v)
        return None

    def check_dict_state(self, cls: type, state: dict[Any, Any]) -> None:
        for k in state:
            if type(k) is not str:
                raise self.refuse("BUILD state has a key that is not a string")
            if _is_dunder(k):
                raise self.refuse(f"BUILD state sets {k!r}")
            if _shadows_behaviour(cls, k):
                raise self.refuse(
                    f"BUILD state replaces {cls.__qualname__}.{k}, which is a method or "
                    "descriptor of the class"
                )
        _check_called_attributes(self, cls, state)


_SHADOWS: dict[tuple[type, str], bool] = {}


def _shadows_behaviour(cls: type, name: str) -> bool:
    """:func:`capabilities.state_key_shadows_method`, cached per load-independent key."""
    key = (cls, name)
    found = _SHADOWS.get(key)
    if found is None:
        found = _SHADOWS[key] = state_key_shadows_method(cls, name)
    return found


def _declared_slots(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        slots = vars(klass).get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        names.update(s for s in slots if isinstance(s, str))
    return names


def _plain_build(inst: Any, state: Any) -> None:
    """What pickle's BUILD does (for globals the user trusted)."""
    setstate = getattr(inst, "__setstate__", None)
    if setstate is not None and defining_class(type(inst), "__setstate__") is not None:
        setstate(state)
        return
    slot_state = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slot_state = state
    if state:
        inst.__dict__.update(state)
    if slot_state:
        for k, v in slot_state.items():
            setattr(inst, k, v)


def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}"
    kind = type(value)
    if callable(value) and not isinstance(value, type):
        return f"a callable {kind.__module__}.{kind.__qualname__}"
    return f"a {kind.__module__}.{kind.__qualname__}"


# --- state a class later calls ---------------------------------------------------------------
_RULES_BY_CLASS: dict[type, list[tuple[str, str]]] = {}


def _rules_for(cls: type) -> list[tuple[str, str]]:
    rules = _RULES_BY_CLASS.get(cls)
    if rules is None:
        rules = []
        for klass in cls.__mro__:
            table = STATE_CALLABLE_ATTRIBUTES.get(f"{klass.__module__}.{klass.__qualname__}")
            if table:
                rules.extend(table.items())
        _RULES_BY_CLASS[cls] = rules
    return rules


def _check_called_attributes(machine: RestrictedMachine, cls: type, state: dict[str, Any]) -> None:
    """Attributes a class calls or resolves by name hold only what the review allows
    (:data:`persistkit.safety.capabilities.STATE_CALLABLE_ATTRIBUTES`)."""
    for name, policy in _rules_for(cls):
        if name in state and not _satisfies(machine, state[name], policy):
            raise machine.refuse(
                f"{cls.__qualname__}.{name} holds {_describe(state[name])}; it may only "
                f"hold a {policy}"
            )


def _satisfies(machine: RestrictedMachine, value: Any, policy: str) -> bool:
    known = machine.role(value)
    if policy == "absent":  # derived at load time: the state may carry only its default
        return value is None
    if policy == "module or absent":
        torch_nn = sys.modules.get("torch.nn")
        return torch_nn is not None and isinstance(value, torch_nn.Module)
    if policy == "option name":
        return value is None or type(value) is str
    if policy == "pure function":
        return value is None or (known is not None and known[1] == PURE_FUNCTION)
    if policy == "kernel instance":
        return value is None or _is_kernel(machine, value)
    if policy == "kernel instances":
        return type(value) is list and all(_is_kernel(machine, v) for v in value)
    if policy == "passthrough scorer":
        return value is None or (
            machine.made.get(id(value)) is value
            and type(value).__qualname__ == "_PassthroughScorer"
            and type(value).__module__ == "sklearn.metrics._scorer"
        )
    if policy == "numpy scalar type":
        return known is not None and isinstance(value, type) and issubclass(value, _np().generic)
    if policy == "splitter class":
        return known is not None and known[0] in (
            ("sklearn.model_selection._split", "KFold"),
            ("sklearn.model_selection._split", "StratifiedKFold"),
        )
    if policy == "parameter names":
        return type(value) is list and all(type(v) is str for v in value)
    return False  # a policy this machine does not know: fail closed


def _is_kernel(machine: RestrictedMachine, value: Any) -> bool:
    return (
        machine.made.get(id(value)) is value
        and type(value).__module__ == "sklearn.gaussian_process.kernels"
        and machine.role(type(value)) is not None
    )


def _check_module_state(machine: RestrictedMachine, inst: Any, state: Any) -> None:
    """A torch module's hook tables must be empty and its child tables hold only modules,
    parameters and tensors (``__call__`` runs hooks and reaches children through them)."""
    torch_nn = sys.modules.get("torch.nn")
    if torch_nn is None or not isinstance(inst, torch_nn.Module):
        return
    import torch

    if type(state) is not dict:
        raise machine.refuse("a torch module's state is not a dict")
    for name, value in state.items():
        if name in MODULE_HOOK_ATTRIBUTES or "hook" in name:
            if isinstance(value, dict):
                if value:
                    raise machine.refuse(f"a torch module's {name} holds hooks it would run")
            elif not (value is None or type(value) is bool):
                raise machine.refuse(f"a torch module's {name} is not a hook table")
    if state.get("_compiled_call_impl") is not None:
        raise machine.refuse("a torch module replaces its __call__ (_compiled_call_impl)")
    kinds = {
        "_modules": torch_nn.Module,
        "_parameters": torch_nn.Parameter,
        "_buffers": torch.Tensor,
    }
    for table, kind in kinds.items():
        entries = state.get(table)
        if entries is None:
            continue
        if not isinstance(entries, dict) or not all(
            type(k) is str and (v is None or isinstance(v, kind)) for k, v in entries.items()
        ):
            raise machine.refuse(f"a torch module's {table} holds something other than {table[1:]}")
    non_persistent = state.get("_non_persistent_buffers_set")
    if non_persistent is not None and not (
        type(non_persistent) is set and all(type(v) is str for v in non_persistent)
    ):
        raise machine.refuse("a torch module's _non_persistent_buffers_set is not a set of names")


# --- numpy ----------------------------------------------------------------------------------
def _np() -> Any:
    import numpy

    return numpy


def _shape(machine: RestrictedMachine, shape: Any) -> tuple[tuple[int, ...], int]:
    """A validated shape and its element count (bounded before any multiplication)."""
    if type(shape) is not tuple or len(shape) > _MAX_DIMS:
        raise machine.corrupt("an array shape is not a short tuple")
    count = 1
    for n in shape:
        if not _exact_int(n) or n < 0 or n > _MAX_ELEMENTS:
            raise machine.corrupt(f"an array dimension {n!r} is out of range")
        count *= n
        if count > _MAX_ELEMENTS:
            raise machine.corrupt("an array has too many elements")
    return shape, count


def _made_dtype(machine: RestrictedMachine, dtype: Any) -> Any:
    np = _np()
    if not isinstance(dtype, np.dtype) or machine.made.get(id(dtype)) is not dtype:
        raise machine.refuse("an array is built from a dtype the stream did not make")
    machine.consumed.add(id(dtype))
    return dtype


_DATETIME_UNITS = frozenset(
    {"Y", "M", "W", "D", "h", "m", "s", "ms", "us", "μs", "ns", "ps", "fs", "as", "generic"}
)


def _check_dtype_args(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    np = _np()
    if not 1 <= len(args) <= 3 or type(args[0]) is not str:
        raise machine.corrupt("numpy.dtype is rebuilt from something that is not a type code")
    descr = args[0]
    if len(descr) > 16 or not descr.isascii() or not descr.isalnum():
        raise machine.refuse(f"numpy.dtype is called with {descr!r}, which is not a type code")
    align = args[1] if len(args) > 1 else False
    if type(align) is not bool:
        raise machine.corrupt("numpy.dtype's align flag is not a bool")
    try:
        dtype = np.dtype(descr, align, True)  # always a fresh copy, never a shared singleton
    except (TypeError, ValueError) as exc:
        raise machine.corrupt(f"unknown numpy type code {descr!r} ({exc})") from None
    if dtype.itemsize > _MAX_ITEMSIZE:
        raise machine.corrupt("a numpy dtype is too large")
    return dtype


def _build_dtype(machine: RestrictedMachine, inst: Any, state: Any) -> None:
    if id(inst) in machine.consumed:
        raise machine.refuse("BUILD changes a dtype after arrays were built from it")
    if type(state) is not tuple or len(state) not in (8, 9):
        raise machine.corrupt("a numpy dtype's state has the wrong form")
    version, byteorder, subarray, names, fields, elsize, alignment, _flags = state[:8]
    metadata = state[8] if len(state) == 9 else None
    if version not in (3, 4) or byteorder not in ("<", ">", "|", "="):
        raise machine.corrupt("a numpy dtype's state has an unknown version or byte order")
    for n in (elsize, alignment):
        if not _exact_int(n) or not -1 <= n <= _MAX_ITEMSIZE:
            raise machine.corrupt("a numpy dtype's item size or alignment is out of range")
    try:
        fresh = _fresh_dtype(machine, inst, byteorder, subarray, names, fields, elsize, metadata)
    except (TypeError, ValueError) as exc:
        raise machine.corrupt(f"a numpy dtype's description is invalid ({exc})") from None
    reduced = fresh.__reduce__()
    if reduced[1][0] != inst.__reduce__()[1][0]:
        raise machine.refuse("a numpy dtype's state describes a different kind of type")
    inst.__setstate__(reduced[2])
    if inst != fresh or inst.flags != fresh.flags or inst.itemsize != fresh.itemsize:
        raise machine.corrupt("a numpy dtype did not rebuild consistently")
    return None


def _fresh_dtype(
    machine: RestrictedMachine,
    inst: Any,
    byteorder: str,
    subarray: Any,
    names: Any,
    fields: Any,
    elsize: int,
    metadata: Any,
) -> Any:
    """Build, with numpy's own constructors, the dtype a validated state describes."""
    np = _np()
    if names is None and fields is None and subarray is None:
        base = np.dtype(inst.str if inst.kind not in "mM" else inst.char)
        if inst.kind in "mM":
            unit = _datetime_unit(machine, metadata)
            base = np.dtype(f"{inst.char}8[{unit}]")
        if byteorder in "<>" and base.byteorder != "|":
            base = base.newbyteorder(byteorder)
        if elsize not in (-1, base.itemsize) and base.kind in "SUV":
            base = np.dtype(
                f"{base.byteorder if base.byteorder in '<>' else ''}"
                f"{base.kind}{elsize // (4 if base.kind == 'U' else 1)}"
            )
        return base
    if subarray is not None:
        if names is not None or fields is not None:
            raise machine.corrupt("a numpy dtype is both a subarray and structured")
        if type(subarray) is not tuple or len(subarray) != 2:
            raise machine.corrupt("a numpy subarray dtype has the wrong form")
        sub_base = _made_dtype(machine, subarray[0])
        shape, count = _shape(machine, subarray[1])
        if count * sub_base.itemsize > _MAX_ITEMSIZE:
            raise machine.corrupt("a numpy subarray dtype is too large")
        return np.dtype((sub_base, shape))
    if type(names) is not tuple or type(fields) is not dict or len(names) > _MAX_FIELDS:
        raise machine.corrupt("a structured numpy dtype has malformed fields")
    if len(set(names)) != len(names) or any(type(n) is not str for n in names):
        raise machine.corrupt("a structured numpy dtype has duplicate or odd field names")
    if not _exact_int(elsize) or elsize < 0:
        raise machine.corrupt("a structured numpy dtype has no item size")
    formats, offsets, titles = [], [], []
    for name in names:
        entry = fields.get(name)
        if type(entry) is not tuple or len(entry) not in (2, 3):
            raise machine.corrupt(f"field {name!r} of a numpy dtype is malformed")
        field_dtype = _made_dtype(machine, entry[0])
        offset = entry[1]
        if not _exact_int(offset) or offset < 0 or offset + field_dtype.itemsize > elsize:
            raise machine.corrupt(f"field {name!r} of a numpy dtype lies outside its item")
        title = entry[2] if len(entry) == 3 else None
        if title is not None and type(title) is not str:
            raise machine.corrupt(f"field {name!r} of a numpy dtype has an odd title")
        formats.append(field_dtype)
        offsets.append(offset)
        titles.append(title)
    expected = set(names) | {t for t in titles if t is not None}
    if set(fields) != expected:
        raise machine.corrupt("a structured numpy dtype's fields and names disagree")
    spec: dict[str, Any] = {
        "names": list(names),
        "formats": formats,
        "offsets": offsets,
        "itemsize": elsize,
    }
    if any(t is not None for t in titles):
        spec["titles"] = titles
    # numpy's constructor computes the flags itself and refuses overlapping object fields
    return np.dtype(spec)


def _datetime_unit(machine: RestrictedMachine, metadata: Any) -> str:
    if not (type(metadata) is tuple and len(metadata) == 2 and type(metadata[1]) is tuple):
        raise machine.corrupt("a numpy datetime dtype has no unit")
    info = metadata[1]
    if len(info) != 4 or type(info[0]) is not bytes or not _exact_int(info[1]):
        raise machine.corrupt("a numpy datetime dtype has a malformed unit")
    unit = info[0].decode("ascii", "replace")
    if unit not in _DATETIME_UNITS or not 1 <= info[1] <= 1 << 31:
        raise machine.corrupt(f"a numpy datetime dtype has an unknown unit {unit!r}")
    return f"{info[1]}{unit}" if info[1] != 1 else unit


def _array_data(machine: RestrictedMachine, dtype: Any, count: int, raw: Any) -> Any:
    np = _np()
    if dtype.hasobject:
        if dtype != np.dtype("O") or type(raw) is not list or len(raw) != count:
            raise machine.corrupt("an object array's items do not match its shape")
        return raw
    if type(raw) not in (bytes, bytearray):
        raise machine.corrupt("an array's data is not bytes")
    if count * dtype.itemsize != len(raw):
        raise machine.corrupt(
            f"an array's data has {len(raw)} bytes where its shape and dtype need "
            f"{count * dtype.itemsize}"
        )
    return raw


def _build_array(machine: RestrictedMachine, inst: Any, state: Any) -> None:
    if type(state) is not tuple or len(state) not in (4, 5):
        raise machine.corrupt("an array's state has the wrong form")
    if len(state) == 4:
        state = (1, *state)
    version, shape, dtype, fortran, raw = state
    if version != 1 or type(fortran) not in (bool, int):
        raise machine.corrupt("an array's state has the wrong form")
    shape, count = _shape(machine, shape)
    dtype = _made_dtype(machine, dtype)
    raw = _array_data(machine, dtype, count, raw)
    inst.__setstate__((1, shape, dtype, bool(fortran), raw))


def _build_masked(machine: RestrictedMachine, inst: Any, state: Any) -> None:
    np = _np()
    if type(state) is not tuple or len(state) != 7:
        raise machine.corrupt("a masked array's state has the wrong form")
    version, shape, dtype, fortran, raw, mask, fill = state
    if version != 1 or type(fortran) not in (bool, int):
        raise machine.corrupt("a masked array's state has the wrong form")
    shape, count = _shape(machine, shape)
    dtype = _made_dtype(machine, dtype)
    raw = _array_data(machine, dtype, count, raw)
    mask_dtype = np.ma.make_mask_descr(dtype)
    if mask is not None and (type(mask) is not bytes or len(mask) != count * mask_dtype.itemsize):
        raise machine.corrupt("a masked array's mask does not match its shape")
    scalars = (int, float, complex, str, bytes, np.generic, np.ndarray)
    if fill is not None and not isinstance(fill, scalars):
        raise machine.corrupt("a masked array's fill value is not a scalar")
    inst.__setstate__((1, shape, dtype, bool(fortran), raw, mask, fill))


def _check_reconstruct(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    np = _np()
    if len(args) != 3 or args[0] is not np.ndarray or args[1] != (0,) or args[2] not in (b"b", "b"):
        raise machine.refuse("numpy's _reconstruct is called with arguments no pickler writes")
    return np.ndarray.__new__(np.ndarray, (0,), "b")


def _check_mareconstruct(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    np = _np()
    if (
        len(args) != 4
        or args[0] is not np.ma.MaskedArray
        or args[1] is not np.ndarray
        or args[2] != (0,)
        or args[3] not in (b"b", "b")
    ):
        raise machine.refuse("numpy's _mareconstruct is called with arguments no pickler writes")
    return func(*args)


def _check_frombuffer(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    """``_frombuffer(buf, dtype, shape, order[, axis_order])`` (protocol 5 arrays)."""
    if len(args) not in (4, 5):
        raise machine.corrupt("numpy's _frombuffer has the wrong arguments")
    buf, dtype, shape, order = args[:4]
    dtype = _made_dtype(machine, dtype)
    shape, count = _shape(machine, shape)
    if order not in ("C", "F", "A", "K") or dtype.hasobject:
        raise machine.corrupt("numpy's _frombuffer has the wrong arguments")
    if (
        len(args) == 5
        and args[4] is not None
        and (type(args[4]) is not tuple or sorted(args[4]) != list(range(len(shape))))
    ):
        raise machine.corrupt("numpy's _frombuffer has an axis order that is no permutation")
    raw = _array_data(machine, dtype, count, buf)
    # numpy's own helper, now on a buffer whose length is exactly what shape and dtype need
    return func(raw, dtype, shape, order, *args[4:])


def _check_scalar(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    np = _np()
    if len(args) != 2:
        raise machine.corrupt("a numpy scalar has the wrong arguments")
    dtype = _made_dtype(machine, args[0])
    if dtype.hasobject or type(args[1]) is not bytes or len(args[1]) != dtype.itemsize:
        raise machine.corrupt("a numpy scalar's bytes do not match its dtype")
    return np.frombuffer(args[1], dtype=dtype, count=1)[0].copy()


# --- builtins and the stdlib ----------------------------------------------------------------
_RECONSTRUCT_BASES = (object, dict, list, set, frozenset, tuple, int, float, str, bytes)


def _check_reconstructor(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    if len(args) != 3:
        raise machine.corrupt("copyreg._reconstructor has the wrong arguments")
    cls, base, state = args
    known = machine.role(cls)
    if (
        known is None
        or not isinstance(cls, type)
        or known[1]
        not in (
            DATA_CLASS,
            CALLED_CLASS,
            TRUSTED,
            REPLACEMENT,
        )
    ):
        raise machine.refuse("copyreg._reconstructor makes something that is not an allowed class")
    if not any(base is b for b in _RECONSTRUCT_BASES) or not issubclass(cls, base):
        raise machine.refuse("copyreg._reconstructor is given a base that is not plain data")
    if base is object:
        if state is not None:
            raise machine.refuse("copyreg._reconstructor passes state to object.__new__")
        return object.__new__(cls)
    if type(state) not in (list, dict, tuple, set, frozenset, int, float, str, bytes):
        raise machine.refuse("copyreg._reconstructor is given state that is not plain data")
    obj = base.__new__(cls, state)
    if base.__init__ is not object.__init__:
        base.__init__(obj, state)
    if base is tuple:  # a tuple subclass (a named tuple) nests like a tuple
        _tuple_of(machine, state, made=obj)
    return obj


def _check_encode(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    # protocols 0-2 write bytes as _codecs.encode(text, "latin1"); nothing else is data
    if not 1 <= len(args) <= 2 or type(args[0]) is not str:
        raise machine.refuse("_codecs.encode is only allowed as (str, 'latin1')")
    encoding = args[1] if len(args) == 2 else "utf-8"
    if encoding not in ("latin1", "latin-1"):
        raise machine.refuse("_codecs.encode is only allowed as (str, 'latin1')")
    return args[0].encode("latin1")


def _check_bytes(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    # bytes() and bytes(text, "latin1") rebuild data; bytes(n) would allocate n zero bytes
    if not args:
        return b""
    if len(args) == 1 and type(args[0]) in (bytes, list, tuple):
        items = args[0]
        if type(items) is not bytes and not all(_exact_int(i) for i in items):
            raise machine.corrupt("builtins.bytes is given items that are not integers")
        return bytes(items)
    if len(args) == 2 and type(args[0]) is str and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin1")
    raise machine.refuse("builtins.bytes is only allowed on data, not a size or an object")


def _plain_items(machine: RestrictedMachine, args: tuple[Any, ...], what: str) -> Any:
    if not args:
        return ()
    if len(args) != 1 or type(args[0]) not in (list, tuple, set, frozenset):
        raise machine.refuse(f"{what} is called with something that is not a plain container")
    return args[0]


def _check_set(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    return set(_plain_items(machine, args, "builtins.set"))


def _check_frozenset(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    return frozenset(_plain_items(machine, args, "builtins.frozenset"))


def _check_ordered_dict(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    items = _plain_items(machine, args, "collections.OrderedDict")
    result: OrderedDict[Any, Any] = OrderedDict()
    for pair in items:
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise machine.corrupt("collections.OrderedDict is given items that are not pairs")
        result[pair[0]] = pair[1]
    return result


def _check_slice(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    if not 1 <= len(args) <= 3 or not all(a is None or _exact_int(a) for a in args):
        raise machine.corrupt("builtins.slice is given something other than integers")
    return slice(*args)


def _check_complex(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    if len(args) > 2 or not all(type(a) in (int, float) for a in args):
        raise machine.corrupt("builtins.complex is given something other than numbers")
    return complex(*args)


# --- numpy random ---------------------------------------------------------------------------
_BIT_GENERATORS = frozenset({"MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64"})


def _bit_generator_class(machine: RestrictedMachine, value: Any) -> Any:
    import numpy.random as npr

    if type(value) is str and value in _BIT_GENERATORS:
        cls = getattr(npr, value)
    else:
        known = machine.role(value)
        if known is None or not isinstance(value, type) or value.__name__ not in _BIT_GENERATORS:
            raise machine.refuse("a random generator names a bit generator that is not allowed")
        cls = value
    return cls


def _check_bit_generator_ctor(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    if len(args) != 1:
        raise machine.corrupt("a bit generator is rebuilt with the wrong arguments")
    cls = _bit_generator_class(machine, args[0])
    return cls()


def _generator_arguments(machine: RestrictedMachine, args: tuple[Any, ...]) -> Any:
    import numpy.random as npr

    if not 1 <= len(args) <= 2:
        raise machine.corrupt("a random generator is rebuilt with the wrong arguments")
    if len(args) == 2:
        ctor = args[1]
        known = machine.role(ctor)
        if known is None or known[0] != ("numpy.random._pickle", "__bit_generator_ctor"):
            raise machine.refuse("a random generator passes a callable that is not its own")
    first = args[0]
    if isinstance(first, npr.BitGenerator):
        if machine.made.get(id(first)) is not first:
            raise machine.refuse("a random generator wraps a bit generator it did not make")
        return first
    return _bit_generator_class(machine, first)()


def _check_randomstate_ctor(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    import numpy.random as npr

    return npr.RandomState(_generator_arguments(machine, args))


def _check_generator_ctor(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    import numpy.random as npr

    return npr.Generator(_generator_arguments(machine, args))


# --- Cython helpers -------------------------------------------------------------------------
def _cython_unpickle(owner: tuple[str, str]) -> Callable[..., Any]:
    """``__pyx_unpickle_X(type, checksum, state)`` calls ``X.__new__(type)``: the type must be
    exactly ``X`` (allowed), the checksum an int, the state a tuple or None."""

    def check(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
        if len(args) != 3 or not _exact_int(args[1]):
            raise machine.corrupt(f"{owner[1]} is rebuilt with the wrong arguments")
        cls, state = args[0], args[2]
        known = machine.role(cls)
        if known is None or known[0] != owner:
            raise machine.refuse(f"a Cython rebuild helper is given a class other than {owner[1]}")
        if state is not None and type(state) is not tuple:
            raise machine.corrupt(f"{owner[1]} is rebuilt from state that is not a tuple")
        return func(*args)

    return check


def _check_new_obj(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    """scikit-learn's ``newObj(cls)`` is ``cls.__new__(cls)``: cls must be an allowed class
    from the same family (a distance metric or a neighbours tree)."""
    if len(args) != 1:
        raise machine.corrupt("newObj is given the wrong arguments")
    cls = args[0]
    known = machine.role(cls)
    func_pair = machine.role(func)
    if (
        known is None
        or func_pair is None
        or not isinstance(cls, type)
        or known[1] != DATA_CLASS
        or known[0][0] != func_pair[0][0]
    ):
        raise machine.refuse("newObj makes something that is not an allowed class of its module")
    made: Any = cls
    return made.__new__(made)


def _check_tree(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    """``Tree(n_features, n_classes, n_outputs)`` copies ``n_outputs`` entries of the
    ``n_classes`` array without bounds checks: both are checked here."""
    np = _np()
    if len(args) != 3:
        raise machine.corrupt("a decision tree is rebuilt with the wrong arguments")
    n_features, n_classes, n_outputs = args
    if not (_exact_int(n_features) or isinstance(n_features, np.integer)) or not (
        _exact_int(n_outputs) or isinstance(n_outputs, np.integer)
    ):
        raise machine.corrupt("a decision tree's sizes are not integers")
    if not 0 <= int(n_features) <= 1 << 31 or not 1 <= int(n_outputs) <= 1 << 20:
        raise machine.corrupt("a decision tree's sizes are out of range")
    if (
        type(n_classes) is not np.ndarray
        or n_classes.ndim != 1
        or n_classes.shape[0] != int(n_outputs)
        or n_classes.dtype.kind not in "iu"
        or (n_classes.size and (n_classes.min() < 1 or n_classes.max() > 1 << 31))
    ):
        raise machine.corrupt("a decision tree's class counts do not match its outputs")
    return func(int(n_features), n_classes.astype(np.intp), int(n_outputs))


def _check_numeric_parameters(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    """Cython loss objects rebuild as ``cls()`` or ``cls(one_number)`` (a power, a delta, a
    quantile, a threshold) and store only that number."""
    import math

    if len(args) > 1 or not all(type(a) in (int, float) and math.isfinite(a) for a in args):
        raise machine.corrupt(f"{func.__qualname__} is rebuilt from something other than a number")
    return func(*args)


# --- torch ----------------------------------------------------------------------------------
def _empty_hooks(machine: RestrictedMachine, hooks: Any) -> None:
    if not isinstance(hooks, dict) or len(hooks):
        raise machine.refuse("a tensor carries backward hooks (callables torch would run)")


def _storage_elements(storage: Any) -> int:
    import warnings

    with warnings.catch_warnings():  # TypedStorage.size() warns that TypedStorage is legacy
        warnings.simplefilter("ignore")
        return int(storage.size())


def _check_rebuild_tensor(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    import torch

    if not 6 <= len(args) <= 7:
        raise machine.corrupt("a tensor is rebuilt with the wrong arguments")
    storage, offset, size, stride, requires_grad, hooks = args[:6]
    if len(args) == 7 and args[6] is not None and not (isinstance(args[6], dict) and not args[6]):
        raise machine.refuse("a tensor is rebuilt with metadata")
    if (
        not isinstance(storage, torch.storage.TypedStorage)
        or machine.persisted.get(id(storage)) is not storage
    ):
        raise machine.refuse("a tensor is rebuilt over a storage the file does not hold")
    shape, count = _shape(machine, size)
    strides, _ = _shape(machine, stride)
    if len(strides) != len(shape) or not _exact_int(offset) or offset < 0:
        raise machine.corrupt("a tensor's strides or offset do not match its shape")
    extent = offset + (sum((n - 1) * s for n, s in zip(shape, strides)) + 1 if count else 0)
    if extent > _storage_elements(storage):
        raise machine.corrupt("a tensor reaches past the end of its storage")
    if type(requires_grad) is not bool:
        raise machine.corrupt("a tensor's requires_grad is not a bool")
    _empty_hooks(machine, hooks)
    return func(storage, offset, shape, strides, requires_grad, OrderedDict())


def _check_rebuild_parameter(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    import torch

    if len(args) not in (3, 4):
        raise machine.corrupt("a parameter is rebuilt with the wrong arguments")
    data: Any = args[0]
    requires_grad, hooks = args[1:3]
    if type(data) is not torch.Tensor or machine.made.get(id(data)) is not args[0]:
        raise machine.refuse("a parameter wraps something that is not a tensor of the file")
    if type(requires_grad) is not bool:
        raise machine.corrupt("a parameter's requires_grad is not a bool")
    _empty_hooks(machine, hooks)
    if (
        len(args) == 4
        and args[3] not in (None, {})
        and not (isinstance(args[3], dict) and not args[3])
    ):
        raise machine.refuse("a parameter is rebuilt with extra attributes")
    return torch.nn.Parameter(data, requires_grad)


_CallCheck = Callable[[RestrictedMachine, Any, tuple[Any, ...]], Any]

_CALL_CHECKS: dict[tuple[str, str], _CallCheck] = {
    ("numpy", "dtype"): _check_dtype_args,
    ("numpy._core.multiarray", "_reconstruct"): _check_reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _check_reconstruct,
    ("numpy._core.multiarray", "scalar"): _check_scalar,
    ("numpy.core.multiarray", "scalar"): _check_scalar,
    ("numpy._core.numeric", "_frombuffer"): _check_frombuffer,
    ("numpy.core.numeric", "_frombuffer"): _check_frombuffer,
    ("numpy.ma.core", "_mareconstruct"): _check_mareconstruct,
    ("numpy.random._pickle", "__bit_generator_ctor"): _check_bit_generator_ctor,
    ("numpy.random._pickle", "__randomstate_ctor"): _check_randomstate_ctor,
    ("numpy.random._pickle", "__generator_ctor"): _check_generator_ctor,
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"): _cython_unpickle(
        ("numpy.random.bit_generator", "SeedSequence")
    ),
    ("copyreg", "_reconstructor"): _check_reconstructor,
    ("_codecs", "encode"): _check_encode,
    ("builtins", "bytes"): _check_bytes,
    ("builtins", "set"): _check_set,
    ("builtins", "frozenset"): _check_frozenset,
    ("builtins", "slice"): _check_slice,
    ("builtins", "complex"): _check_complex,
    ("collections", "OrderedDict"): _check_ordered_dict,
    ("sklearn.tree._tree", "Tree"): _check_tree,
    ("sklearn.tree._tree", "__pyx_unpickle_TreeBuilder"): _cython_unpickle(
        ("sklearn.tree._tree", "TreeBuilder")
    ),
    ("sklearn.tree._tree", "__pyx_unpickle__CCPPruneController"): _cython_unpickle(
        ("sklearn.tree._tree", "_CCPPruneController")
    ),
    ("sklearn._loss._loss", "__pyx_unpickle_CyHalfMultinomialLoss"): _cython_unpickle(
        ("sklearn._loss._loss", "CyHalfMultinomialLoss")
    ),
    ("sklearn.metrics._dist_metrics", "__pyx_unpickle_DistanceMetric"): _cython_unpickle(
        ("sklearn.metrics._dist_metrics", "DistanceMetric")
    ),
    ("sklearn.metrics._dist_metrics", "newObj"): _check_new_obj,
    ("sklearn.neighbors._ball_tree", "newObj"): _check_new_obj,
    ("sklearn.neighbors._kd_tree", "newObj"): _check_new_obj,
    **{
        ("sklearn._loss._loss", name): _check_numeric_parameters
        for name in (
            "CyAbsoluteError",
            "CyExponentialLoss",
            "CyHalfBinomialLoss",
            "CyHalfGammaLoss",
            "CyHalfPoissonLoss",
            "CyHalfSquaredError",
            "CyHalfTweedieLoss",
            "CyHalfTweedieLossIdentity",
            "CyHuberLoss",
            "CyPinballLoss",
        )
    },
    ("sklearn.linear_model._sgd_fast", "Hinge"): _check_numeric_parameters,
    ("torch._utils", "_rebuild_tensor_v2"): _check_rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _check_rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _check_rebuild_parameter,
}

# called classes that picklers also make with NEWOBJ (no arguments)
_NEWOBJ_OK: frozenset[tuple[str, str]] = frozenset({("collections", "OrderedDict")})


def call_checks() -> dict[tuple[str, str], _CallCheck]:
    """The reviewed argument checks, by global (for tests and ``docs/security.md``)."""
    return dict(_CALL_CHECKS)


# --- opcodes --------------------------------------------------------------------------------
def _stop(m: RestrictedMachine) -> None:  # handled by the loop
    raise AssertionError("unreachable")


def _mark(m: RestrictedMachine) -> None:
    m.stack.append(_MARK)


def _pop(m: RestrictedMachine) -> None:
    if not m.stack:
        raise m.corrupt("the stack underflows")
    m.stack.pop()


def _pop_mark(m: RestrictedMachine) -> None:
    m.pop_mark()


def _dup(m: RestrictedMachine) -> None:
    m.stack.append(m.top())


def _proto(m: RestrictedMachine) -> None:
    proto = m.read(1)[0]
    if proto > 5:
        raise m.corrupt(f"unsupported pickle protocol {proto}")
    m.protocol = proto


def _frame(m: RestrictedMachine) -> None:
    if m.frame_end >= 0:
        raise m.corrupt("a frame starts inside another frame")
    length = int.from_bytes(m.read(8), "little")
    if length > len(m.data) - m.pos:
        raise m.corrupt("a frame runs past the end of the stream")
    m.frame_end = m.pos + length


def _push(value: Any) -> Callable[[RestrictedMachine], None]:
    def push(m: RestrictedMachine) -> None:
        m.stack.append(value)

    return push


def _binint(m: RestrictedMachine) -> None:
    m.stack.append(int.from_bytes(m.read(4), "little", signed=True))


def _binint1(m: RestrictedMachine) -> None:
    m.stack.append(m.read(1)[0])


def _binint2(m: RestrictedMachine) -> None:
    m.stack.append(int.from_bytes(m.read(2), "little"))


def _long1(m: RestrictedMachine) -> None:
    n = m.read(1)[0]
    m.stack.append(int.from_bytes(m.read(n), "little", signed=True))


def _long4(m: RestrictedMachine) -> None:
    n = int.from_bytes(m.read(4), "little", signed=True)
    if n > 1 << 20:
        raise m.corrupt("an integer literal is too long")
    m.stack.append(int.from_bytes(m.read(n), "little", signed=True))


def _int_text(m: RestrictedMachine, text: bytes) -> int | bool:
    if text == b"00":
        return False
    if text == b"01":
        return True
    if text.endswith(b"L"):
        text = text[:-1]
    if len(text) > 4300:
        raise m.corrupt("an integer literal is too long")
    try:
        return int(text)
    except ValueError:
        raise m.corrupt("an integer literal is not a number") from None


def _int(m: RestrictedMachine) -> None:
    m.stack.append(_int_text(m, m.readline()))


def _float(m: RestrictedMachine) -> None:
    try:
        m.stack.append(float(m.readline()))
    except ValueError:
        raise m.corrupt("a FLOAT is not a number") from None


def _binfloat(m: RestrictedMachine) -> None:
    m.stack.append(struct.unpack(">d", m.read(8))[0])


def _py2_string(m: RestrictedMachine, raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise m.corrupt("a Python 2 string is not ASCII") from None


def _string(m: RestrictedMachine) -> None:
    text = m.readline()
    if len(text) < 2 or text[:1] not in (b"'", b'"') or text[-1:] != text[:1]:
        raise m.corrupt("a STRING argument is not quoted")
    try:
        raw = codecs.escape_decode(text[1:-1])[0]
    except ValueError:
        raise m.corrupt("a STRING argument has a bad escape") from None
    m.stack.append(_py2_string(m, raw))


def _binstring(m: RestrictedMachine) -> None:
    n = int.from_bytes(m.read(4), "little", signed=True)
    m.stack.append(_py2_string(m, m.read(n)))


def _short_binstring(m: RestrictedMachine) -> None:
    m.stack.append(_py2_string(m, m.read(m.read(1)[0])))


def _bytes_of(width: int) -> Callable[[RestrictedMachine], None]:
    def push(m: RestrictedMachine) -> None:
        n = int.from_bytes(m.read(width), "little")
        m.stack.append(bytes(m.read(n)))

    return push


def _bytearray8(m: RestrictedMachine) -> None:
    n = int.from_bytes(m.read(8), "little")
    start = m.skip(n)  # the copy below is the only one (protocol-5 array data)
    m.stack.append(bytearray(memoryview(m.data)[start : start + n]))


def _unicode_of(width: int) -> Callable[[RestrictedMachine], None]:
    def push(m: RestrictedMachine) -> None:
        n = int.from_bytes(m.read(width), "little")
        try:
            m.stack.append(str(m.read(n), "utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            raise m.corrupt("a string is not valid UTF-8") from None

    return push


def _unicode(m: RestrictedMachine) -> None:
    try:
        m.stack.append(m.readline().decode("raw-unicode-escape"))
    except UnicodeDecodeError:
        raise m.corrupt("a UNICODE argument is not decodable") from None


def _empty_list(m: RestrictedMachine) -> None:
    m.stack.append([])


def _empty_dict(m: RestrictedMachine) -> None:
    m.stack.append({})


def _empty_set(m: RestrictedMachine) -> None:
    m.stack.append(set())


def _list(m: RestrictedMachine) -> None:
    m.stack.append(m.pop_mark())


def _tuple_of(m: RestrictedMachine, items: Any, made: Any = None) -> Any:
    """``tuple(items)`` (or ``made``, a tuple-like object built from them), with its nesting
    depth recorded; refused when tuples nest more than 1000 deep."""
    result = tuple(items) if made is None else made
    deepest = 0
    for item in items:
        if isinstance(item, tuple):
            entry = m.depths.get(id(item))
            depth = entry[0] if entry is not None and entry[1] is item else 1
            if depth > deepest:
                deepest = depth
    if deepest:
        if deepest >= _MAX_NESTING:
            raise m.corrupt(f"values nest more than {_MAX_NESTING} deep")
        m.depths[id(result)] = (deepest + 1, result)
    return result


def _tuple(m: RestrictedMachine) -> None:
    m.stack.append(_tuple_of(m, m.pop_mark()))


def _tuple_n(n: int) -> Callable[[RestrictedMachine], None]:
    def push(m: RestrictedMachine) -> None:
        items = [m.pop() for _ in range(n)]
        items.reverse()
        m.stack.append(_tuple_of(m, items))

    return push


def _frozenset(m: RestrictedMachine) -> None:
    m.stack.append(_hashed(m, frozenset, m.pop_mark()))


def _hashed(m: RestrictedMachine, kind: Any, items: Any) -> Any:
    try:
        return kind(items)
    except TypeError as exc:
        raise m.corrupt(f"an unhashable value is used as a set item or key ({exc})") from None


def _dict(m: RestrictedMachine) -> None:
    items = m.pop_mark()
    if len(items) % 2:
        raise m.corrupt("DICT with an odd number of items")
    target: dict[Any, Any] = {}
    _set_items(m, target, items)
    m.stack.append(target)


def _set_items(m: RestrictedMachine, target: Any, items: list[Any]) -> None:
    if type(target) is not dict and not _plain_dict(m, target):
        raise m.refuse(f"SETITEM on {_describe(target)}, which is not a plain dict")
    try:
        for i in range(0, len(items), 2):
            dict.__setitem__(target, items[i], items[i + 1])
    except TypeError as exc:
        raise m.corrupt(f"an unhashable value is used as a dict key ({exc})") from None


def _plain_dict(m: RestrictedMachine, value: Any) -> bool:
    """An OrderedDict or an allowed dict subclass that keeps dict's own item assignment."""
    kind: Any = type(value)
    if isinstance(value, OrderedDict):
        return bool(kind.__setitem__ is OrderedDict.__setitem__)
    return bool(
        isinstance(value, dict)
        and m.made.get(id(value)) is value
        and kind.__setitem__ is dict.__setitem__
    )


def _setitem(m: RestrictedMachine) -> None:
    value = m.pop()
    key = m.pop()
    target = m.top()
    if isinstance(target, OrderedDict) and type(target).__setitem__ is OrderedDict.__setitem__:
        try:
            target[key] = value
        except TypeError as exc:
            raise m.corrupt(f"an unhashable value is used as a dict key ({exc})") from None
        return
    _set_items(m, target, [key, value])


def _setitems(m: RestrictedMachine) -> None:
    items = m.pop_mark()
    if len(items) % 2:
        raise m.corrupt("SETITEMS with an odd number of items")
    target = m.top()
    if isinstance(target, OrderedDict) and type(target).__setitem__ is OrderedDict.__setitem__:
        try:
            for i in range(0, len(items), 2):
                target[items[i]] = items[i + 1]
        except TypeError as exc:
            raise m.corrupt(f"an unhashable value is used as a dict key ({exc})") from None
        return
    _set_items(m, target, items)


def _append_to(m: RestrictedMachine, value: Any, items: list[Any]) -> None:
    target: Any = value
    kind: Any = type(target)
    if kind is list or (
        isinstance(target, list) and m.made.get(id(target)) is target and kind.extend is list.extend
    ):
        list.extend(target, items)
        return
    raise m.refuse(f"APPEND to {_describe(target)}, which is not a plain list")


def _append(m: RestrictedMachine) -> None:
    value = m.pop()
    _append_to(m, m.top(), [value])


def _appends(m: RestrictedMachine) -> None:
    items = m.pop_mark()
    _append_to(m, m.top(), items)


def _additems(m: RestrictedMachine) -> None:
    items = m.pop_mark()
    target = m.top()
    if type(target) is not set:
        raise m.refuse(f"ADDITEMS to {_describe(target)}, which is not a plain set")
    try:
        target.update(items)
    except TypeError as exc:
        raise m.corrupt(f"an unhashable value is used as a set item ({exc})") from None


def _memo_index(m: RestrictedMachine, index: int) -> int:
    if index < 0 or index > len(m.memo) + _MAX_MEMO_SLACK:
        raise m.corrupt(f"memo index {index} is out of any sensible range")
    return index


def _put_value(m: RestrictedMachine, index: int) -> None:
    m.memo[_memo_index(m, index)] = m.top()


def _get_value(m: RestrictedMachine, index: int) -> None:
    try:
        m.stack.append(m.memo[index])
    except KeyError:
        raise m.corrupt(f"memo slot {index} is read before it is written") from None


def _put(m: RestrictedMachine) -> None:
    _put_value(m, int(_int_text(m, m.readline())))


def _binput(m: RestrictedMachine) -> None:
    _put_value(m, m.read(1)[0])


def _long_binput(m: RestrictedMachine) -> None:
    _put_value(m, int.from_bytes(m.read(4), "little"))


def _memoize(m: RestrictedMachine) -> None:
    _put_value(m, len(m.memo))


def _get(m: RestrictedMachine) -> None:
    _get_value(m, int(_int_text(m, m.readline())))


def _binget(m: RestrictedMachine) -> None:
    _get_value(m, m.read(1)[0])


def _long_binget(m: RestrictedMachine) -> None:
    _get_value(m, int.from_bytes(m.read(4), "little"))


def _name(m: RestrictedMachine, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise m.corrupt("a GLOBAL name is not valid UTF-8") from None


def _global(m: RestrictedMachine) -> None:
    module = _name(m, m.readline())
    name = _name(m, m.readline())
    m.stack.append(m.find_global(module, name))


def _stack_global(m: RestrictedMachine) -> None:
    name = m.pop()
    module = m.pop()
    if type(module) is not str or type(name) is not str:
        raise m.refuse("STACK_GLOBAL on values that are not plain strings")
    m.stack.append(m.find_global(module, name))


def _reduce(m: RestrictedMachine) -> None:
    args = m.pop()
    func = m.pop()
    m.stack.append(m.call(func, args))


def _newobj(m: RestrictedMachine) -> None:
    args = m.pop()
    cls = m.pop()
    if type(args) is not tuple:
        raise m.corrupt("NEWOBJ arguments are not a tuple")
    m.stack.append(m.new(cls, args, {}))


def _newobj_ex(m: RestrictedMachine) -> None:
    kwargs = m.pop()
    args = m.pop()
    cls = m.pop()
    if type(args) is not tuple or type(kwargs) is not dict:
        raise m.corrupt("NEWOBJ_EX arguments are malformed")
    m.stack.append(m.new(cls, args, kwargs))


def _build(m: RestrictedMachine) -> None:
    state = m.pop()
    target = m.top()
    if type(target) is JoblibArray and m.made.get(id(target)) is target:
        m.stack[-1] = _read_joblib_array(m, state)
        return
    m.build(target, state)


def _read_joblib_array(m: RestrictedMachine, state: Any) -> Any:
    """The array whose data joblib wrote right after its wrapper's ``BUILD``: raw bytes
    (after optional alignment padding) or, for arrays of objects, a nested pickle stream."""
    np = _np()
    if type(state) is not dict or state.get("subclass", np.ndarray) is not np.ndarray:
        raise m.corrupt("a joblib array wrapper has no state, or wraps an array subclass")
    shape, count = _shape(m, state.get("shape"))
    order = state.get("order", "C")
    if order not in ("C", "F"):
        raise m.corrupt("a joblib array has an invalid order")
    dtype = _made_dtype(m, state.get("dtype"))
    if m.frame_end >= 0:
        if m.pos != m.frame_end:
            raise m.corrupt("joblib array data starts inside a pickle frame")
        m.frame_end = -1
    if dtype.hasobject:
        inner = RestrictedMachine(
            m.data,
            m.policy,
            protocol=0,
            what=m.what,
            start=m.pos,
            nested=True,
            first_pass=m.first_pass,
        )
        array = inner.run()
        m.pos = inner.pos
        if type(array) is not np.ndarray or array.shape != shape:
            raise m.corrupt("a joblib object array does not match its wrapper")
        return array
    if state.get("numpy_array_alignment_bytes") is not None:
        m.read(m.read(1)[0])
    start = m.skip(count * dtype.itemsize)
    flat = np.frombuffer(memoryview(m.data)[start : m.pos], dtype=dtype, count=count).copy()
    array = flat.reshape(shape[::-1]).transpose() if order == "F" else flat.reshape(shape)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    return array


def _persid(m: RestrictedMachine) -> None:
    pid = _name(m, m.readline())
    _persistent(m, pid)


def _binpersid(m: RestrictedMachine) -> None:
    _persistent(m, m.pop())


def _persistent(m: RestrictedMachine, pid: Any) -> None:
    if m.persistent_load is None:
        raise m.refuse("a persistent id in a format that never contains one")
    value = m.persistent_load(pid)
    m.persisted[id(value)] = value  # the reader's own object: passed on, never BUILT onto
    m.stack.append(value)


_Handler = Callable[[RestrictedMachine], None]
_DISPATCH: list[_Handler | None] = [None] * 256
for _code, _handler in {
    b"(": _mark,
    b".": _stop,
    b"0": _pop,
    b"1": _pop_mark,
    b"2": _dup,
    b"F": _float,
    b"I": _int,
    b"J": _binint,
    b"K": _binint1,
    b"L": _int,
    b"M": _binint2,
    b"N": _push(None),
    b"P": _persid,
    b"Q": _binpersid,
    b"R": _reduce,
    b"S": _string,
    b"T": _binstring,
    b"U": _short_binstring,
    b"V": _unicode,
    b"X": _unicode_of(4),
    b"a": _append,
    b"b": _build,
    b"c": _global,
    b"d": _dict,
    b"}": _empty_dict,
    b"e": _appends,
    b"g": _get,
    b"h": _binget,
    b"j": _long_binget,
    b"l": _list,
    b"]": _empty_list,
    b"p": _put,
    b"q": _binput,
    b"r": _long_binput,
    b"s": _setitem,
    b"t": _tuple,
    b")": _push(()),
    b"u": _setitems,
    b"G": _binfloat,
    b"\x80": _proto,
    b"\x81": _newobj,
    b"\x85": _tuple_n(1),
    b"\x86": _tuple_n(2),
    b"\x87": _tuple_n(3),
    b"\x88": _push(True),
    b"\x89": _push(False),
    b"\x8a": _long1,
    b"\x8b": _long4,
    b"B": _bytes_of(4),
    b"C": _bytes_of(1),
    b"\x8c": _unicode_of(1),
    b"\x8d": _unicode_of(8),
    b"\x8e": _bytes_of(8),
    b"\x8f": _empty_set,
    b"\x90": _additems,
    b"\x91": _frozenset,
    b"\x92": _newobj_ex,
    b"\x93": _stack_global,
    b"\x94": _memoize,
    b"\x95": _frame,
    b"\x96": _bytearray8,
}.items():
    _DISPATCH[_code[0]] = _handler


def run_restricted(
    data: bytes,
    policy: TrustPolicy,
    *,
    protocol: int,
    what: str,
    replacements: dict[tuple[str, str], Any] | None = None,
    persistent_load: Callable[[Any], Any] | None = None,
    joblib: bool = False,
    first_pass: bool = False,
) -> Any:
    """Build ``data`` with a :class:`RestrictedMachine`; errors become persistkit errors.

    ``joblib=True`` also reads joblib's array layout; ``first_pass=True`` raises
    :class:`NeedsAudit` where the audited path must take over (see :class:`NeedsAudit`).
    """
    machine = RestrictedMachine(
        bytes(data),
        policy,
        protocol=protocol,
        what=what,
        replacements=replacements,
        persistent_load=persistent_load,
        joblib=joblib,
        first_pass=first_pass,
    )
    try:
        return machine.run()
    except (PersistkitError, NeedsAudit):
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
