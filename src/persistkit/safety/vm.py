"""The restricted pickle machine: builds an untrusted stream and enforces, in this one place,
what such a stream may *do* — not only which names it may import.

Invariants (each enforced by identity on the real objects, at the opcode that would break it):

1. **Calls.** The callable of ``REDUCE`` is a global resolved from the allow-list in the role
   ``called class`` or ``reconstructor`` (:mod:`persistkit.safety.allowlist`), and every such
   global has a reviewed argument check (:data:`persistkit.safety.vm_checks.CALL_CHECKS`)
   that validates the arguments and makes the call itself. The class of
   ``NEWOBJ``/``NEWOBJ_EX`` is a global resolved in the role ``data class`` or
   ``called class``, called with no arguments.
   ``INST``/``OBJ`` are never executed. A value the stream computed — an instance, whatever a
   call returned — is never called, even when it is callable (``nn.Identity()``, a kernel).
2. **BUILD.** ``BUILD`` applies only to an object this machine made (``NEWOBJ``, a checked
   call, ``copyreg._reconstructor``) — never a type, function, module, builtin or container
   literal — and at most once. Its state is a ``dict`` (or a ``(dict, slots)`` pair) with
   string keys that are neither dunder names nor, for slots, undeclared slots, and that do not
   shadow a method or descriptor of the class. ``__setstate__`` runs only when the class that
   defines it is reviewed in :mod:`persistkit.safety.capabilities`; attributes a class later
   calls hold only what that review allows, and torch modules no hooks
   (:mod:`persistkit.safety.vm_checks`).
3. **numpy.** A dtype's pickled state (flags, field offsets, item size) is never handed to
   numpy as is: the description is validated (bounded sizes, fields inside the item,
   object fields never overlapping), a fresh dtype is built from it by numpy's own
   constructor, and only that dtype's canonical state is applied. Arrays are built only from
   such dtypes, with exact byte counts (object arrays from lists), by numpy's public
   constructors (:mod:`persistkit.safety.vm_numpy`).
4. **Values.** Every value the machine holds is a literal, a container made by a container
   opcode, an allowed global, or an object one of the checked paths above made — so BUILD
   state is plain data and allowed instances by construction.

Globals named in ``trusted=[...]`` get plain pickle semantics (the user vouched for them);
everything else follows the rules above.
"""

from __future__ import annotations

import codecs
import importlib
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from persistkit.errors import FormatError, LibraryRejectedError, PersistkitError
from persistkit.safety.allowlist import CALLED_CLASS, DATA_CLASS, RECONSTRUCTOR, role_of
from persistkit.safety.capabilities import defining_class, reviewed
from persistkit.safety.pickle_audit import ALL_JOBLIB_WRAPPERS, JOBLIB_ARRAY_WRAPPER, mapped_global
from persistkit.safety.vm_base import (
    MAX_MEMO_SLACK,
    MAX_NESTING,
    REPLACEMENT,
    TRUSTED,
    Refusal,
    describe,
    is_dunder,
)
from persistkit.safety.vm_checks import (
    CALL_CHECKS,
    NEWOBJ_OK,
    check_called_attributes,
    check_module_state,
    declared_slots,
    plain_build,
    shadows_behaviour,
)
from persistkit.safety.vm_numpy import (
    build_array,
    build_dtype,
    build_masked,
    made_dtype,
    shape_of,
)

if TYPE_CHECKING:
    from persistkit.safety.policy import TrustPolicy

__all__ = ["JoblibArray", "NeedsAudit", "Refusal", "RestrictedMachine", "run_restricted"]


class NeedsAudit(Exception):
    """The first pass cannot decide alone: the stream names a global that is not allowed
    (the audited path then lists every one of them at once) or uses a layout of joblib < 0.10.
    """


class JoblibArray:
    """Stands where joblib's ``NumpyArrayWrapper`` would be imported; its ``BUILD`` is
    followed by the array's raw bytes, which the machine reads in its place."""

    __slots__ = ()


class _Mark:
    __slots__ = ()


_MARK = _Mark()


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


class RestrictedMachine:
    """Runs one pickle stream under ``policy`` (see the module docstring for the rules).

    ``replacements`` maps ``(module, name)`` to an object of ours handed out instead of
    importing it (readers use placeholders for a format's helper classes); a replacement that
    is a class is made like a data class and its own ``__setstate__`` runs. ``persistent_load``
    receives persistent ids (torch storages, joblib arrays).
    """

    def __init__(
        self,
        data: bytes | bytearray,
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
        return bytes(memoryview(self.data)[pos:end])  # bytes even from a bytearray stream

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
        line = bytes(memoryview(data)[self.pos : nl])
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
        module, name = mapped_global(module, name, self.protocol)
        pair = (module, name)
        if self.joblib and pair in ALL_JOBLIB_WRAPPERS:
            if pair != JOBLIB_ARRAY_WRAPPER:  # joblib < 0.10 layouts: the audited reader's job
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

    def nest_tuple(self, items: Any, made: Any = None) -> Any:
        """``tuple(items)`` (or ``made``, a tuple-like object built from them), with its
        nesting depth recorded; refused when tuples nest more than 1000 deep."""
        result = tuple(items) if made is None else made
        deepest = 0
        for item in items:
            if isinstance(item, tuple):
                entry = self.depths.get(id(item))
                depth = entry[0] if entry is not None and entry[1] is item else 1
                if depth > deepest:
                    deepest = depth
        if deepest:
            if deepest >= MAX_NESTING:
                raise self.corrupt(f"values nest more than {MAX_NESTING} deep")
            self.depths[id(result)] = (deepest + 1, result)
        return result

    # -- calls -------------------------------------------------------------------------------
    def call(self, func: Any, args: Any) -> Any:
        known = self.role(func)
        if known is None:
            raise self.refuse(
                f"the stream calls a value it computed ({describe(func)}) instead of an "
                "allowed global"
            )
        pair, role = known
        if type(args) is not tuple:
            raise self.corrupt("REDUCE arguments are not a tuple")
        if role == TRUSTED:
            return self.make(func(*args))
        if role not in (CALLED_CLASS, RECONSTRUCTOR):
            raise self.refuse(f"the stream calls {pair[0]}.{pair[1]}, a {role}")
        check = CALL_CHECKS.get(pair)
        if check is None:
            raise self.refuse(f"the stream calls {pair[0]}.{pair[1]}, which has no argument check")
        return self.make(check(self, func, args))

    def new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        known = self.role(cls)
        if known is None or not isinstance(cls, type):
            raise self.refuse(f"NEWOBJ on a value that is not an allowed class ({describe(cls)})")
        pair, role = known
        if role == TRUSTED:
            return self.make(cls.__new__(cls, *args, **kwargs))
        if role not in (DATA_CLASS, CALLED_CLASS, REPLACEMENT):
            raise self.refuse(f"NEWOBJ on {pair[0]}.{pair[1]}, a {role}")
        if args != () or kwargs:
            raise self.refuse(f"NEWOBJ passes arguments to {pair[0]}.{pair[1]}.__new__")
        if role == CALLED_CLASS and pair not in NEWOBJ_OK:
            raise self.refuse(f"NEWOBJ on {pair[0]}.{pair[1]}, which is only rebuilt by a call")
        made: Any = cls
        return self.make(made.__new__(made))

    # -- BUILD -------------------------------------------------------------------------------
    def build(self, target: Any, state: Any) -> None:
        inst: Any = target
        key = id(inst)
        if self.made.get(key) is not target:
            raise self.refuse(f"BUILD on {describe(inst)}, which the stream did not make")
        if key in self.built:
            raise self.refuse(f"a second BUILD on the same {describe(inst)}")
        self.built.add(key)
        import numpy as np

        cls = type(inst)
        if isinstance(inst, np.dtype):
            return build_dtype(self, inst, state)
        if cls is np.ndarray:
            return build_array(self, inst, state)
        if cls is np.ma.MaskedArray:
            return build_masked(self, inst, state)
        owner = defining_class(cls, "__setstate__")
        known = self.role(cls)
        role = known[1] if known is not None else None
        if role == TRUSTED:
            plain_build(inst, state)
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
            check_module_state(self, inst, state)
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
                raise self.refuse(f"BUILD sets attributes on a {describe(inst)} without __dict__")
            for k, v in dict_state.items():
                attrs[sys.intern(k)] = v
        if slot_state is not None:
            if type(slot_state) is not dict:
                raise self.refuse("BUILD with slot state that is not a dict")
            slots = declared_slots(cls)
            for k in slot_state:
                if type(k) is not str or k not in slots or is_dunder(k):
                    raise self.refuse(f"BUILD sets {k!r}, which is not a declared slot")
            check_called_attributes(self, cls, slot_state)
            for k, v in slot_state.items():
                setattr(inst, k, v)
        return None

    def check_dict_state(self, cls: type, state: dict[Any, Any]) -> None:
        for k in state:
            if type(k) is not str:
                raise self.refuse("BUILD state has a key that is not a string")
            if is_dunder(k):
                raise self.refuse(f"BUILD state sets {k!r}")
            if shadows_behaviour(cls, k):
                raise self.refuse(
                    f"BUILD state replaces {cls.__qualname__}.{k}, which is a method or "
                    "descriptor of the class"
                )
        check_called_attributes(self, cls, state)


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


def _tuple(m: RestrictedMachine) -> None:
    m.stack.append(m.nest_tuple(m.pop_mark()))


def _tuple_n(n: int) -> Callable[[RestrictedMachine], None]:
    def push(m: RestrictedMachine) -> None:
        items = [m.pop() for _ in range(n)]
        items.reverse()
        m.stack.append(m.nest_tuple(items))

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
        raise m.refuse(f"SETITEM on {describe(target)}, which is not a plain dict")
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
    raise m.refuse(f"APPEND to {describe(target)}, which is not a plain list")


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
        raise m.refuse(f"ADDITEMS to {describe(target)}, which is not a plain set")
    try:
        target.update(items)
    except TypeError as exc:
        raise m.corrupt(f"an unhashable value is used as a set item ({exc})") from None


def _memo_index(m: RestrictedMachine, index: int) -> int:
    if index < 0 or index > len(m.memo) + MAX_MEMO_SLACK:
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
    import numpy as np

    if type(state) is not dict or state.get("subclass", np.ndarray) is not np.ndarray:
        raise m.corrupt("a joblib array wrapper has no state, or wraps an array subclass")
    shape, count = shape_of(m, state.get("shape"))
    order = state.get("order", "C")
    if order not in ("C", "F"):
        raise m.corrupt("a joblib array has an invalid order")
    dtype = made_dtype(m, state.get("dtype"))
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
    flat = np.frombuffer(memoryview(m.data)[start : m.pos], dtype=dtype, count=count)
    if not (flat.flags.writeable and flat.flags.aligned):
        # read-only bytes (a decompressed or in-memory stream) or a misaligned region: copy.
        # Otherwise a view of the file's own buffer: each region is read once, regions never
        # overlap, and nothing else holds that buffer writable, so no array aliases another
        flat = flat.copy()
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
    data: bytes | bytearray,
    policy: TrustPolicy,
    *,
    protocol: int,
    what: str,
    replacements: dict[tuple[str, str], Any] | None = None,
    persistent_load: Callable[[Any], Any] | None = None,
    joblib: bool = False,
    first_pass: bool = False,
    owned: bool = False,
) -> Any:
    """Build ``data`` with a :class:`RestrictedMachine`; errors become persistkit errors.

    ``joblib=True`` also reads joblib's array layout; ``first_pass=True`` raises
    :class:`NeedsAudit` where the audited path must take over (see :class:`NeedsAudit`).
    ``owned=True``: ``data`` is a ``bytearray`` only this call holds, so it is read in place
    (and joblib arrays become views of it); anything else is first copied to ``bytes``, so
    no one can change the stream while the machine reads it.
    """
    machine = RestrictedMachine(
        data if owned and type(data) is bytearray else bytes(data),
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
        raise LibraryRejectedError(
            f"the {what} is corrupted: rebuilding it failed ({type(exc).__name__}: {exc})",
            hint="the file is damaged, or was written by incompatible library versions",
        ) from None
