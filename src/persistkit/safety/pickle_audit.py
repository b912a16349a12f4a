"""Validate a whole pickle stream and list what it would import, without running any of it.

The auditor is a small simulation of the pickle machine: it decodes every opcode, checks every
length against the bytes that are really there, keeps a stack and a memo of *descriptions* of
values (strings and small literals stay literal, everything else is opaque), and so knows the
exact ``(module, qualname)`` behind every ``GLOBAL`` and ``STACK_GLOBAL`` - also when the names
were stored in the memo and fetched back with ``BINGET``. A stream that underflows its stack,
reads a memo slot nobody wrote, straddles a frame, uses an opcode outside the safe subset, or
has anything after ``STOP`` is refused before a single object is built.

It also understands joblib's layout, where the raw bytes of a numpy array follow the ``BUILD``
of a ``NumpyArrayWrapper`` *outside* the pickle opcodes (or a whole nested pickle stream for
object arrays), and records where each such segment lies.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

from persistkit.errors import FormatError, UntrustedArtifactError
from persistkit.safety.allowlist import NEVER_CALLED
from persistkit.safety.vm_base import MAX_MEMO_SLACK, MAX_NESTING

# Opcodes persistkit never executes for untrusted input: extension registry lookups (they
# resolve names through copyreg's global tables), INST/OBJ (old-style "import and call" that
# no Python 3 pickler writes) and out-of-band buffers (we never pass any).
_REFUSED_OPCODES = {
    0x82: "EXT1",
    0x83: "EXT2",
    0x84: "EXT4",
    ord("i"): "INST",
    ord("o"): "OBJ",
    0x97: "NEXT_BUFFER",
    0x98: "READONLY_BUFFER",
}
_PERSISTENT_OPCODES = {ord("P"): "PERSID", ord("Q"): "BINPERSID"}

JOBLIB_ARRAY_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
JOBLIB_OLD_ARRAY_WRAPPER = ("joblib.numpy_pickle", "NDArrayWrapper")
JOBLIB_ZIP_ARRAY_WRAPPER = ("joblib.numpy_pickle", "ZNDArrayWrapper")
# the wrappers whose arrays the readers rebuild (each is replaced by a placeholder class)
JOBLIB_WRAPPERS = frozenset({JOBLIB_ARRAY_WRAPPER, JOBLIB_OLD_ARRAY_WRAPPER})
# every wrapper joblib has written (the zip one only by joblib < 0.10)
ALL_JOBLIB_WRAPPERS = JOBLIB_WRAPPERS | {JOBLIB_ZIP_ARRAY_WRAPPER}
_RECONSTRUCTOR = ("copyreg", "_reconstructor")
_SIMPLE_DTYPE = re.compile(r"[a-zA-Z?][0-9]{0,3}")


@dataclass(frozen=True)
class ArraySegment:
    """Where the data of one joblib array lies, as the auditor computed it from the stream.

    ``kind`` is ``"inline"`` (raw bytes at ``offset``), ``"nested"`` (a plain pickle stream at
    ``offset``..``end`` for arrays of Python objects) or ``"companion"`` (an ``.npy`` file
    named ``filename`` beside the joblib file, written by joblib < 0.10).
    """

    kind: str
    offset: int
    end: int
    shape: tuple[int, ...] = ()
    itemsize: int = 0
    order: str = "C"
    filename: str = ""


@dataclass
class PickleAudit:
    """What auditing a stream found: globals in order of first use, protocol, layout."""

    globals: list[tuple[str, str]] = field(default_factory=list)
    protocol: int = 0
    opcodes: int = 0
    end: int = 0
    frames: list[tuple[int, int]] = field(default_factory=list)
    arrays: list[ArraySegment] = field(default_factory=list)
    build_ends: list[int] = field(default_factory=list)
    persistent_ids: int = 0

    @property
    def names(self) -> list[str]:
        return [f"{module}.{name}" for module, name in self.globals]


class _Opaque:
    """A value the auditor does not model; hashable by identity like most real objects."""

    __slots__ = ()


class _Global:
    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name


class _Tuple(tuple):
    """A tuple of descriptions that holds tuples or objects: it knows how deep it nests."""

    depth: int


class _Object:
    """The result of calling (REDUCE, NEWOBJ) something: we keep what made it, for joblib."""

    __slots__ = ("args", "depth", "made_by", "state")

    def __init__(self, made_by: Any, args: Any) -> None:
        self.made_by = made_by
        self.args = args
        self.state: Any = None
        # what it was built from nests inside it (a namedtuple, a slice)
        self.depth = 1 + _nesting(args)


def _nesting(value: Any) -> int:
    """How deep tuples and built objects nest in ``value`` (0 for anything else)."""
    kind = type(value)
    if kind is _Tuple or kind is _Object:
        return value.depth
    return 1 if kind is tuple else 0


def mapped_global(module: str, name: str, protocol: int) -> tuple[str, str]:
    """The name the unpickler really resolves (Python 2 names are mapped for protocol < 3)."""
    if protocol < 3:
        import _compat_pickle

        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        if module in _compat_pickle.IMPORT_MAPPING:
            return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


def audit_pickle(
    data: bytes | bytearray | memoryview,
    *,
    start: int = 0,
    joblib: bool = False,
    persistent: bool = False,
    trailing_ok: bool = False,
    what: str = "pickle stream",
) -> PickleAudit:
    """Validate the pickle stream that starts at ``data[start]`` and describe it.

    Raises :class:`FormatError` for anything corrupted or truncated and
    :class:`UntrustedArtifactError` for opcodes outside the safe subset. Unless
    ``trailing_ok``, the stream must end exactly at the end of ``data``. ``joblib=True``
    accepts (and locates) joblib's raw array data; ``persistent=True`` accepts persistent ids
    (torch zip files use them for tensor storage).
    """
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    audit = PickleAudit()
    _Walker(view, audit, joblib=joblib, persistent=persistent, what=what).walk(start)
    if not trailing_ok and audit.end != len(view):
        raise FormatError(
            f"the {what} has {len(view) - audit.end} bytes after its STOP opcode",
            hint="the file was corrupted or tampered with; it is refused",
        )
    return audit


def scan_globals(data: bytes) -> list[str]:
    """Every ``module.qualname`` a plain pickle stream would import, without running it.

    Raises :class:`FormatError` when the stream is corrupted or truncated.
    """
    audit = audit_pickle(data, persistent=True)
    return audit.names


class _Walker:
    def __init__(
        self, data: Any, audit: PickleAudit, *, joblib: bool, persistent: bool, what: str
    ) -> None:
        self.data = data
        self.size = len(data)
        self.audit = audit
        self.joblib = joblib
        self.persistent = persistent
        self.what = what
        self.seen: set[tuple[str, str]] = set()

    # -- errors ------------------------------------------------------------------------------
    def corrupt(self, why: str, pos: int) -> FormatError:
        return FormatError(
            f"the {self.what} is corrupted or truncated: {why} (at byte {pos})",
            hint="the file is damaged or is not what it claims to be; it is refused",
        )

    # -- reading -----------------------------------------------------------------------------
    def take(self, pos: int, n: int) -> int:
        """Check that ``n`` bytes exist at ``pos`` and return the position after them."""
        if n < 0 or pos + n > self.size:
            raise self.corrupt(
                f"a length of {n} bytes runs past the end ({self.size - pos} bytes left)", pos
            )
        return pos + n

    def uint(self, pos: int, n: int) -> int:
        end = self.take(pos, n)
        return int.from_bytes(self.data[pos:end], "little")

    def line(self, pos: int) -> tuple[bytes, int]:
        nl = _find_newline(self.data, pos, self.size)
        if nl < 0:
            raise self.corrupt("a text argument has no terminating newline", pos)
        return bytes(self.data[pos:nl]), nl + 1

    # -- the machine's stack and memo ----------------------------------------------------------
    def pop(self) -> Any:
        if not self.stack or (self.marks and self.marks[-1] == len(self.stack)):
            raise self.corrupt("the stack underflows", self.at)
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise self.corrupt("an opcode needs a MARK that is not there", self.at)
        mark = self.marks.pop()
        items = self.stack[mark:]
        del self.stack[mark:]
        return items

    def put(self, index: int) -> None:
        if not self.stack or (self.marks and self.marks[-1] == len(self.stack)):
            raise self.corrupt("memoizing an empty stack", self.at)
        if index < 0 or index > len(self.memo) + MAX_MEMO_SLACK:
            raise self.corrupt(f"memo index {index} is out of any sensible range", self.at)
        self.memo[index] = self.stack[-1]

    def get(self, index: int) -> None:
        if index not in self.memo:
            raise self.corrupt(f"memo slot {index} is read before it is written", self.at)
        self.stack.append(self.memo[index])

    def walk(self, pos: int) -> None:
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.at = pos
        frame_end = -1
        audit = self.audit
        data = self.data
        stack = self.stack
        while True:
            self.at = at = pos
            if pos >= self.size:
                raise self.corrupt("the stream ends before its STOP opcode", pos)
            if frame_end >= 0 and pos == frame_end:
                frame_end = -1
            code = data[pos]
            pos += 1
            audit.opcodes += 1
            if code in _REFUSED_OPCODES:
                raise UntrustedArtifactError(
                    f"the {self.what} uses the {_REFUSED_OPCODES[code]} opcode, which "
                    "persistkit never executes for untrusted files",
                    hint="if you trust its source, pass trusted=True (that runs this file's code)",
                )
            if code in _PERSISTENT_OPCODES and not self.persistent:
                raise UntrustedArtifactError(
                    f"the {self.what} uses persistent ids ({_PERSISTENT_OPCODES[code]}), "
                    "which this format never contains",
                    hint="if you trust its source, pass trusted=True (that runs this file's code)",
                )
            pos = self.step(code, pos, at)
            if code == 0x95:  # FRAME
                if frame_end >= 0:
                    raise self.corrupt("a frame starts inside another frame", at)
                length = self.uint(at + 1, 8)
                frame_end = self.take(pos, length)
                audit.frames.append((at, pos))
            elif frame_end >= 0 and pos > frame_end:
                raise self.corrupt("an opcode straddles the end of its frame", at)
            if code == 0x2E:  # STOP
                if self.marks or len(stack) != 1:
                    raise self.corrupt("STOP with an unbalanced stack", at)
                if frame_end >= 0 and pos != frame_end:
                    raise self.corrupt("STOP inside an unfinished frame", at)
                audit.end = pos
                return
            if code == 0x62 and self.joblib:  # BUILD
                after = self.after_build(stack[-1], pos, frame_end)
                if after != pos and frame_end >= 0:
                    frame_end = -1
                pos = after

    def step(self, code: int, pos: int, at: int) -> int:
        # Each branch decodes one opcode's argument (checking its length) and applies its
        # stack effect to the descriptions on the stack.
        data = self.data
        stack = self.stack
        # the opcodes that dominate real model pickles come first (memo traffic, small ints);
        # they have no branch below
        if code == 0x68:  # BINGET
            end = self.take(pos, 1)
            self.get(data[pos])
            return end
        if code == 0x94:  # MEMOIZE
            self.put(len(self.memo))
            return pos
        if code == 0x4B:  # BININT1
            end = self.take(pos, 1)
            stack.append(data[pos])
            return end
        marks = self.marks
        pop, pop_mark, put, get = self.pop, self.pop_mark, self.put, self.get
        push = stack.append
        c = chr(code)
        if c == "(":
            marks.append(len(stack))
        elif c == "0":  # POP
            if marks and marks[-1] == len(stack):
                marks.pop()
            else:
                pop()
        elif c == "1":
            pop_mark()
        elif c == "2":
            if not stack:
                raise self.corrupt("DUP on an empty stack", at)
            push(stack[-1])
        elif c == ".":
            pass
        elif code == 0x80:  # PROTO
            proto = self.uint(pos, 1)
            if proto > 5:
                raise self.corrupt(f"unsupported pickle protocol {proto}", at)
            self.audit.protocol = proto
            pos += 1
        elif code == 0x95:  # FRAME: checked by the caller
            pos = self.take(pos, 8)
        elif c == "N":
            push(None)
        elif code == 0x88:
            push(True)
        elif code == 0x89:
            push(False)
        elif c == "J":
            end = self.take(pos, 4)
            push(int.from_bytes(data[pos:end], "little", signed=True))
            pos = end
        elif c == "M":
            push(self.uint(pos, 2))
            pos += 2
        elif code == 0x8A:  # LONG1
            n = self.uint(pos, 1)
            end = self.take(pos + 1, n)
            push(int.from_bytes(data[pos + 1 : end], "little", signed=True))
            pos = end
        elif code == 0x8B:  # LONG4
            n = int.from_bytes(data[pos : self.take(pos, 4)], "little", signed=True)
            end = self.take(pos + 4, n)
            push(_Opaque())  # big ints are never names or shapes
            pos = end
        elif c in "IL":
            text, pos = self.line(pos)
            push(self.parse_int(text, c, at))
        elif c == "F":
            text, pos = self.line(pos)
            try:
                push(float(text))
            except ValueError:
                raise self.corrupt("a FLOAT is not a number", at) from None
        elif c == "G":
            end = self.take(pos, 8)
            push(struct.unpack(">d", data[pos:end])[0])
            pos = end
        elif c in "SV":
            text, pos = self.line(pos)
            push(self.parse_text(text, c, at))
        elif c in "TUBC" or code in (0x8E, 0x96):  # byte strings: skip, never copied
            width = {"T": 4, "U": 1, "B": 4, "C": 1}.get(c, 8)
            n = int.from_bytes(data[pos : self.take(pos, width)], "little", signed=(c == "T"))
            pos = self.take(pos + width, n)
            push(_Opaque())
        elif c == "X" or code in (0x8C, 0x8D):  # unicode with a length
            width = 4 if c == "X" else (1 if code == 0x8C else 8)
            n = self.uint(pos, width)
            end = self.take(pos + width, n)
            try:
                push(str(data[pos + width : end], "utf-8", "surrogatepass"))
            except UnicodeDecodeError:
                raise self.corrupt("a string is not valid UTF-8", at) from None
            pos = end
        elif c == "]" or c == ")" or c == "}" or code == 0x8F:
            push([] if c == "]" else () if c == ")" else {} if c == "}" else _Opaque())
        elif c == "l":
            push(pop_mark())
        elif c == "t":
            push(self.tuple_of(pop_mark(), at))
        elif code in (0x85, 0x86, 0x87):
            n = code - 0x84
            items = [pop() for _ in range(n)][::-1]
            push(self.tuple_of(items, at))
        elif c == "d":
            items = pop_mark()
            if len(items) % 2:
                raise self.corrupt("DICT with an odd number of items", at)
            target: dict[Any, Any] = {}
            self.set_items(target, items)
            push(target)
        elif c == "a":
            value = pop()
            self.append_to(self.top(), [value], at)
        elif c == "e":
            items = pop_mark()
            self.append_to(self.top(), items, at)
        elif c == "s":
            value = pop()
            key = pop()
            self.set_into(self.top(), [key, value], at)
        elif c == "u":
            items = pop_mark()
            if len(items) % 2:
                raise self.corrupt("SETITEMS with an odd number of items", at)
            self.set_into(self.top(), items, at)
        elif code == 0x90:  # ADDITEMS
            pop_mark()
            if not isinstance(self.top(), (_Object, _Opaque)):  # never a class's own add()
                raise self.corrupt("ADDITEMS to something that is not a set", at)
        elif code == 0x91:  # FROZENSET
            pop_mark()
            push(_Opaque())
        elif c == "g":
            text, pos = self.line(pos)
            get(self.parse_int(text, "I", at))
        elif c == "j":
            get(self.uint(pos, 4))
            pos += 4
        elif c == "p":
            text, pos = self.line(pos)
            put(self.parse_int(text, "I", at))
        elif c == "q":
            put(self.uint(pos, 1))
            pos += 1
        elif c == "r":
            put(self.uint(pos, 4))
            pos += 4
        elif c == "c":
            module, pos = self.line(pos)
            name, pos = self.line(pos)
            push(self.record_global(self.decode_name(module, at), self.decode_name(name, at)))
        elif code == 0x93:  # STACK_GLOBAL
            name = pop()
            module = pop()
            if not isinstance(module, str) or not isinstance(name, str):
                raise UntrustedArtifactError(
                    f"the {self.what} computes the name of something to import at load "
                    "time (STACK_GLOBAL on values that are not plain strings)",
                    hint="if you trust its source, pass trusted=True (that runs this file's code)",
                )
            push(self.record_global(module, name))
        elif c == "R":
            args = pop()
            func = pop()
            push(self.made(func, args, at))
        elif code == 0x81:  # NEWOBJ
            args = pop()
            cls = pop()
            push(self.made(cls, args, at))
        elif code == 0x92:  # NEWOBJ_EX
            pop()
            args = pop()
            cls = pop()
            push(self.made(cls, args, at))
        elif c == "b":
            state = pop()
            target = self.top()
            if isinstance(target, _Global):
                # BUILD on a class or function itself sets attributes on it: a payload of
                # allowed names could rewrite library code for the whole process
                raise UntrustedArtifactError(
                    f"the {self.what} uses BUILD to set attributes on "
                    f"{target.module}.{target.name} itself, which no pickler writes",
                    hint="the file was crafted by hand; if you trust its source, pass trusted=True",
                )
            if isinstance(target, _Object):
                target.state = state
        elif c == "P":
            _text, pos = self.line(pos)
            self.audit.persistent_ids += 1
            push(_Opaque())
        elif c == "Q":
            pop()
            self.audit.persistent_ids += 1
            push(_Opaque())
        else:
            raise self.corrupt(f"unknown opcode 0x{code:02x}", at)
        return pos

    # -- helpers -----------------------------------------------------------------------------
    def parse_int(self, text: bytes, kind: str, at: int) -> Any:
        if kind == "I" and text in (b"00", b"01"):
            return text == b"01"
        try:
            return int(text[:-1] if kind == "L" and text.endswith(b"L") else text)
        except ValueError:
            raise self.corrupt("an integer argument is not a number", at) from None

    def parse_text(self, text: bytes, kind: str, at: int) -> Any:
        if kind == "V":
            try:
                return text.decode("raw-unicode-escape")
            except UnicodeDecodeError:
                raise self.corrupt("a UNICODE argument is not decodable", at) from None
        if len(text) < 2 or text[:1] not in (b"'", b'"') or text[-1:] != text[:1]:
            raise self.corrupt("a STRING argument is not quoted", at)
        return _Opaque()

    def decode_name(self, raw: bytes, at: int) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.corrupt("a GLOBAL name is not valid UTF-8", at) from None

    def tuple_of(self, items: list[Any], at: int) -> tuple[Any, ...]:
        """The description of a tuple of ``items``; refused when it nests too deeply."""
        inner = 0
        for item in items:
            kind = type(item)
            if kind is _Tuple or kind is _Object or kind is tuple:
                inner = max(inner, _nesting(item))
        if not inner:
            return tuple(items)
        if inner >= MAX_NESTING:
            raise self.corrupt(f"values nest more than {MAX_NESTING} deep", at)
        nested = _Tuple(items)
        nested.depth = inner + 1
        return nested

    def made(self, func: Any, args: Any, at: int) -> _Object:
        obj = _made(func, args)
        if obj.depth > MAX_NESTING:
            raise self.corrupt(f"values nest more than {MAX_NESTING} deep", at)
        return obj

    def record_global(self, module: str, name: str) -> _Global:
        pair = mapped_global(module, name, self.audit.protocol)
        if pair not in self.seen:
            self.seen.add(pair)
            self.audit.globals.append(pair)
        return _Global(*pair)

    def top(self) -> Any:
        """The value an APPEND/SETITEM-like opcode mutates (it stays on the stack)."""
        if not self.stack or (self.marks and self.marks[-1] == len(self.stack)):
            raise self.corrupt("the stack underflows", self.at)
        return self.stack[-1]

    def append_to(self, target: Any, items: list[Any], at: int) -> None:
        if isinstance(target, list):
            target.extend(items)
        elif not isinstance(target, (_Object, _Opaque)):
            raise self.corrupt("APPEND to something that is not a list", at)

    def set_into(self, target: Any, items: list[Any], at: int) -> None:
        if isinstance(target, dict):
            self.set_items(target, items)
        elif not isinstance(target, (_Object, _Opaque)):
            raise self.corrupt("SETITEM on something that is not a dict", at)

    def set_items(self, target: dict[Any, Any], items: list[Any]) -> None:
        for i in range(0, len(items), 2):
            key = items[i]
            try:
                target[key] = items[i + 1]
            except TypeError:  # an unhashable key: the real unpickler fails too, later
                target[_Opaque()] = items[i + 1]

    # -- joblib ------------------------------------------------------------------------------
    def after_build(self, obj: Any, pos: int, frame_end: int) -> int:
        """After a joblib array wrapper's BUILD, skip (and record) its array data."""
        if not isinstance(obj, _Object) or not isinstance(obj.made_by, _Global):
            return pos
        pair = (obj.made_by.module, obj.made_by.name)
        if pair not in ALL_JOBLIB_WRAPPERS:
            return pos
        if pair == JOBLIB_ZIP_ARRAY_WRAPPER:
            raise FormatError(
                "this joblib file was written by joblib < 0.10 with compression "
                "(ZNDArrayWrapper); persistkit cannot read that layout safely",
                hint="re-save the model with a current joblib from a trusted environment",
            )
        state = obj.state
        if not isinstance(state, dict):
            raise self.corrupt("a joblib array wrapper has no state", pos)
        self.audit.build_ends.append(pos)
        if pair == JOBLIB_OLD_ARRAY_WRAPPER:
            filename = state.get("filename")
            if not isinstance(filename, str):
                raise self.corrupt("an old joblib array wrapper names no file", pos)
            self.audit.arrays.append(ArraySegment("companion", pos, pos, filename=filename))
            return pos
        if frame_end >= 0 and pos != frame_end:
            raise self.corrupt("joblib array data starts inside a pickle frame", pos)
        shape = state.get("shape")
        order = state.get("order", "C")
        if not (
            isinstance(shape, tuple)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
            and order in ("C", "F")
        ):
            raise self.corrupt("a joblib array has an invalid shape or order", pos)
        itemsize, hasobject = self.dtype_layout(state.get("dtype"), pos)
        if hasobject:
            nested = PickleAudit(protocol=0)
            walker = _Walker(self.data, nested, joblib=False, persistent=False, what=self.what)
            walker.walk(pos)
            for pair_ in nested.globals:
                if pair_ not in self.seen:
                    self.seen.add(pair_)
                    self.audit.globals.append(pair_)
            self.audit.opcodes += nested.opcodes
            self.audit.arrays.append(ArraySegment("nested", pos, nested.end, shape, 0, order))
            return nested.end
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = self.uint(pos, 1)
            pos = self.take(pos + 1, padding)
        count = 1
        for n in shape:
            count *= n
        end = self.take(pos, count * itemsize)
        self.audit.arrays.append(ArraySegment("inline", pos, end, shape, itemsize, order))
        return end

    def dtype_layout(self, dtype: Any, pos: int) -> tuple[int, bool]:
        """Item size and whether it holds objects, from a pickled ``numpy.dtype`` call."""
        if not (
            isinstance(dtype, _Object)
            and isinstance(dtype.made_by, _Global)
            and dtype.made_by.name == "dtype"
            and dtype.made_by.module == "numpy"
            and isinstance(dtype.args, tuple)
            and dtype.args
            and isinstance(dtype.args[0], str)
        ):
            raise self.corrupt("a joblib array's dtype is not a numpy dtype", pos)
        descr = dtype.args[0]
        state = dtype.state if isinstance(dtype.state, tuple) else ()
        flags = state[7] if len(state) > 7 and isinstance(state[7], int) else 0
        hasobject = descr.startswith("O") or bool(flags & 1)
        if len(state) > 5 and isinstance(state[5], int) and state[5] > 0:
            return state[5], hasobject
        if not _SIMPLE_DTYPE.fullmatch(descr):
            raise self.corrupt(f"unsupported joblib array dtype {descr!r}", pos)
        import numpy as np

        try:
            return np.dtype(descr).itemsize, hasobject
        except TypeError:
            raise self.corrupt(f"unsupported joblib array dtype {descr!r}", pos) from None


def _made(func: Any, args: Any) -> _Object:
    if isinstance(func, _Global) and (func.module, func.name) in NEVER_CALLED:
        raise UntrustedArtifactError(
            f"the pickle stream calls {func.module}.{func.name} directly, which no pickler "
            "writes (arrays are rebuilt through numpy's own helpers)",
            hint="the file was crafted by hand; if you trust its source, pass trusted=True",
        )
    # copyreg._reconstructor(cls, base, state) makes an instance of cls (protocols 0 and 1)
    if (
        isinstance(func, _Global)
        and (func.module, func.name) == _RECONSTRUCTOR
        and isinstance(args, tuple)
        and args
    ):
        return _Object(args[0], args)
    return _Object(func, args)


def _find_newline(data: Any, pos: int, size: int) -> int:
    if isinstance(data, bytes):
        return data.find(b"\n", pos)
    chunk = bytes(data[pos:size])
    found = chunk.find(b"\n")
    return -1 if found < 0 else pos + found
