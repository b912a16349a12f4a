"""numpy under the restricted machine: dtypes and arrays are rebuilt only from validated
descriptions (invariant 4 in ``docs/security.md``).

A dtype's pickled flags, field offsets and item size are never handed to numpy as they are:
the description is validated (bounded sizes, fields inside the item, object fields never
overlapping), a fresh dtype is built by numpy's own constructor, and only its canonical state
is applied, to a copy that is never one of numpy's shared descriptors. Arrays are built only
from dtypes the machine made, with exact byte counts (object arrays from lists).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from persistkit.safety.vm_base import MAX_DIMS, MAX_ELEMENTS, MAX_FIELDS, MAX_ITEMSIZE, exact_int

if TYPE_CHECKING:
    from persistkit.safety.vm import RestrictedMachine


def _np() -> Any:
    import numpy

    return numpy


def shape_of(machine: RestrictedMachine, shape: Any) -> tuple[tuple[int, ...], int]:
    """A validated shape and its element count (bounded before any multiplication)."""
    if type(shape) is not tuple or len(shape) > MAX_DIMS:
        raise machine.corrupt("an array shape is not a short tuple")
    count = 1
    for n in shape:
        if not exact_int(n) or n < 0 or n > MAX_ELEMENTS:
            raise machine.corrupt(f"an array dimension {n!r} is out of range")
        count *= n
        if count > MAX_ELEMENTS:
            raise machine.corrupt("an array has too many elements")
    return shape, count


def made_dtype(machine: RestrictedMachine, dtype: Any) -> Any:
    np = _np()
    if not isinstance(dtype, np.dtype) or machine.made.get(id(dtype)) is not dtype:
        raise machine.refuse("an array is built from a dtype the stream did not make")
    machine.consumed.add(id(dtype))
    return dtype


_DATETIME_UNITS = frozenset(
    {"Y", "M", "W", "D", "h", "m", "s", "ms", "us", "μs", "ns", "ps", "fs", "as", "generic"}
)


def check_dtype_args(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
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
    if dtype.itemsize > MAX_ITEMSIZE:
        raise machine.corrupt("a numpy dtype is too large")
    return dtype


def build_dtype(machine: RestrictedMachine, inst: Any, state: Any) -> None:
    if id(inst) in machine.consumed:
        raise machine.refuse("BUILD changes a dtype after arrays were built from it")
    if type(state) is not tuple or len(state) not in (8, 9):
        raise machine.corrupt("a numpy dtype's state has the wrong form")
    version, byteorder, subarray, names, fields, elsize, alignment, _flags = state[:8]
    metadata = state[8] if len(state) == 9 else None
    if version not in (3, 4) or byteorder not in ("<", ">", "|", "="):
        raise machine.corrupt("a numpy dtype's state has an unknown version or byte order")
    for n in (elsize, alignment):
        if not exact_int(n) or not -1 <= n <= MAX_ITEMSIZE:
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
        sub_base = made_dtype(machine, subarray[0])
        shape, count = shape_of(machine, subarray[1])
        if count * sub_base.itemsize > MAX_ITEMSIZE:
            raise machine.corrupt("a numpy subarray dtype is too large")
        return np.dtype((sub_base, shape))
    if type(names) is not tuple or type(fields) is not dict or len(names) > MAX_FIELDS:
        raise machine.corrupt("a structured numpy dtype has malformed fields")
    if len(set(names)) != len(names) or any(type(n) is not str for n in names):
        raise machine.corrupt("a structured numpy dtype has duplicate or odd field names")
    if not exact_int(elsize) or elsize < 0:
        raise machine.corrupt("a structured numpy dtype has no item size")
    formats, offsets, titles = [], [], []
    for name in names:
        entry = fields.get(name)
        if type(entry) is not tuple or len(entry) not in (2, 3):
            raise machine.corrupt(f"field {name!r} of a numpy dtype is malformed")
        field_dtype = made_dtype(machine, entry[0])
        offset = entry[1]
        if not exact_int(offset) or offset < 0 or offset + field_dtype.itemsize > elsize:
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
    if len(info) != 4 or type(info[0]) is not bytes or not exact_int(info[1]):
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


def build_array(machine: RestrictedMachine, inst: Any, state: Any) -> None:
    if type(state) is not tuple or len(state) not in (4, 5):
        raise machine.corrupt("an array's state has the wrong form")
    if len(state) == 4:
        state = (1, *state)
    version, shape, dtype, fortran, raw = state
    if version != 1 or type(fortran) not in (bool, int):
        raise machine.corrupt("an array's state has the wrong form")
    shape, count = shape_of(machine, shape)
    dtype = made_dtype(machine, dtype)
    raw = _array_data(machine, dtype, count, raw)
    inst.__setstate__((1, shape, dtype, bool(fortran), raw))


def build_masked(machine: RestrictedMachine, inst: Any, state: Any) -> None:
    np = _np()
    if type(state) is not tuple or len(state) != 7:
        raise machine.corrupt("a masked array's state has the wrong form")
    version, shape, dtype, fortran, raw, mask, fill = state
    if version != 1 or type(fortran) not in (bool, int):
        raise machine.corrupt("a masked array's state has the wrong form")
    shape, count = shape_of(machine, shape)
    dtype = made_dtype(machine, dtype)
    raw = _array_data(machine, dtype, count, raw)
    mask_dtype = np.ma.make_mask_descr(dtype)
    if mask is not None and (type(mask) is not bytes or len(mask) != count * mask_dtype.itemsize):
        raise machine.corrupt("a masked array's mask does not match its shape")
    scalars = (int, float, complex, str, bytes, np.generic, np.ndarray)
    if fill is not None and not isinstance(fill, scalars):
        raise machine.corrupt("a masked array's fill value is not a scalar")
    inst.__setstate__((1, shape, dtype, bool(fortran), raw, mask, fill))


def check_reconstruct(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    np = _np()
    if len(args) != 3 or args[0] is not np.ndarray or args[1] != (0,) or args[2] not in (b"b", "b"):
        raise machine.refuse("numpy's _reconstruct is called with arguments no pickler writes")
    return np.ndarray.__new__(np.ndarray, (0,), "b")


def check_mareconstruct(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
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


def check_frombuffer(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    """``_frombuffer(buf, dtype, shape, order[, axis_order])`` (protocol 5 arrays)."""
    if len(args) not in (4, 5):
        raise machine.corrupt("numpy's _frombuffer has the wrong arguments")
    buf, dtype, shape, order = args[:4]
    dtype = made_dtype(machine, dtype)
    shape, count = shape_of(machine, shape)
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


def check_scalar(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    np = _np()
    if len(args) != 2:
        raise machine.corrupt("a numpy scalar has the wrong arguments")
    dtype = made_dtype(machine, args[0])
    if dtype.hasobject or type(args[1]) is not bytes or len(args[1]) != dtype.itemsize:
        raise machine.corrupt("a numpy scalar's bytes do not match its dtype")
    return np.frombuffer(args[1], dtype=dtype, count=1)[0].copy()
