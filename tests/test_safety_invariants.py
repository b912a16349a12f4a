"""Attacks on the restricted machine's invariants (``persistkit.safety.vm``), written from the
classes of bypass they close, over *every* allowed global that fits a class, not one example:

1. computed callables: nothing but an allowed global in a callable role is ever called;
2. BUILD only onto instances the machine made, once, with plain state that neither sets
   dunder names, undeclared slots, nor hides a method;
4. numpy dtypes and arrays are rebuilt only from validated descriptions.

Streams are assembled by hand (no pickler writes these); each must be refused with a
persistkit error, and no global state (numpy's shared dtypes, library classes) may change.
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Any

import numpy as np
import pytest

from persistkit.errors import FormatError, PersistkitError, UntrustedArtifactError
from persistkit.safety import TrustPolicy
from persistkit.safety.allowlist import (
    ALLOWED,
    CALLED_CLASS,
    CONSTANT,
    DATA_CLASS,
    PURE_FUNCTION,
    RECONSTRUCTOR,
)
from persistkit.safety.vm import resolve_global
from persistkit.safety.vm_checks import call_checks


# --- a tiny assembler ------------------------------------------------------------------------
def g(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def i(n: int) -> bytes:
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    body = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(body)]) + body  # LONG1


def raw(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def dct(**items: bytes) -> bytes:
    return b"(" + b"".join(s(k) + v for k, v in items.items()) + b"d"


EMPTY = b")"
NONE = b"N"
TRUE = b"\x88"
FALSE = b"\x89"
REDUCE = b"R"
BUILD = b"b"
NEWOBJ = b"\x81"


def put(n: int) -> bytes:
    return b"q" + bytes([n])


def get(n: int) -> bytes:
    return b"h" + bytes([n])


def stream(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def load(data: bytes) -> Any:
    return TrustPolicy().unpickle(io.BytesIO(data))


def resolve(pair: tuple[str, str]) -> Any:
    with warnings.catch_warnings():  # numpy.core's names warn that they moved
        warnings.simplefilter("ignore")
        return resolve_global(*pair)


def pairs(*roles: str) -> list[tuple[str, str]]:
    return sorted(pair for pair, role in ALLOWED.items() if role in roles)


def newobj(pair: tuple[str, str]) -> bytes:
    return g(*pair) + EMPTY + NEWOBJ


def refused(data: bytes, match: str | None = None) -> PersistkitError:
    with pytest.raises(PersistkitError, match=match) as info:
        load(data)
    return info.value


# --- 1. computed callables -------------------------------------------------------------------
def _callable_instances() -> list[tuple[str, str]]:
    """Allowed data classes whose instances are callable (kernels, losses, modules, ...)."""
    found = []
    for pair in pairs(DATA_CLASS):
        cls = resolve(pair)
        if not isinstance(cls, type) or not any("__call__" in vars(k) for k in cls.__mro__[:-1]):
            continue
        try:
            cls.__new__(cls)  # abstract classes cannot be made at all
        except TypeError:
            continue
        found.append(pair)
    return found


CALLABLE_INSTANCES = _callable_instances()


def test_the_allow_list_has_callable_instances_to_attack() -> None:
    # the attack below is only meaningful while such classes exist on the list
    assert len(CALLABLE_INSTANCES) > 20


@pytest.mark.parametrize("pair", CALLABLE_INSTANCES, ids=".".join)
def test_an_instance_the_stream_made_is_never_called(pair: tuple[str, str]) -> None:
    data = stream(newobj(pair) + tup(s("x")) + REDUCE)
    error = refused(data)
    assert isinstance(error, UntrustedArtifactError)
    assert "computed" in error.message or "NEWOBJ" in error.message


@pytest.mark.parametrize("pair", CALLABLE_INSTANCES[:10], ids=".".join)
def test_a_made_instance_fetched_back_from_the_memo_is_never_called(
    pair: tuple[str, str],
) -> None:
    data = stream(newobj(pair) + put(1) + b"0" + get(1) + tup(s("x")) + REDUCE)
    assert isinstance(refused(data), UntrustedArtifactError)


@pytest.mark.parametrize(
    "pair", [p for p in pairs(CALLED_CLASS, RECONSTRUCTOR) if p in call_checks()], ids=".".join
)
def test_the_result_of_a_call_is_never_called(pair: tuple[str, str]) -> None:
    # whatever a checked call returns (even a global, if a helper returned its argument) is
    # called only if it *is* an allowed callable global: here the result of a call is called
    data = stream(g(*pair) + tup(s("x")) + REDUCE + tup() + REDUCE)
    refused(data)


@pytest.mark.parametrize(
    "pair", pairs(DATA_CLASS)[::7] + pairs(PURE_FUNCTION, CONSTANT), ids=".".join
)
def test_globals_outside_the_callable_roles_are_never_called(pair: tuple[str, str]) -> None:
    error = refused(stream(g(*pair) + tup(i(1)) + REDUCE))
    assert isinstance(error, UntrustedArtifactError)


def test_every_callable_role_global_has_an_argument_check() -> None:
    missing = [p for p in pairs(CALLED_CLASS, RECONSTRUCTOR) if p not in call_checks()]
    assert missing == []


@pytest.mark.parametrize("pair", pairs(DATA_CLASS)[::9], ids=".".join)
def test_newobj_never_passes_arguments_to_a_data_class(pair: tuple[str, str]) -> None:
    error = refused(stream(g(*pair) + tup(i(10**6)) + NEWOBJ))
    assert isinstance(error, UntrustedArtifactError)


@pytest.mark.parametrize(
    "target",
    [
        g("numpy", "mean"),
        g("torch", "float32"),
        g("builtins", "set") + EMPTY + REDUCE,
        newobj(("sklearn.linear_model._base", "LinearRegression")),
    ],
    ids=["pure-function", "constant", "call-result", "instance"],
)
def test_newobj_needs_an_allowed_class_itself(target: bytes) -> None:
    pytest.importorskip("torch")
    assert isinstance(refused(stream(target + EMPTY + NEWOBJ)), UntrustedArtifactError)


@pytest.mark.parametrize("opcode", [b"i", b"o"], ids=["INST", "OBJ"])
def test_old_style_call_opcodes_are_never_executed(opcode: bytes) -> None:
    body = b"(" + g("builtins", "set") + b"o" if opcode == b"o" else b"(ibuiltins\nset\n"
    assert isinstance(refused(stream(body)), UntrustedArtifactError)


# --- 2. BUILD ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pair",
    pairs(DATA_CLASS)[::11] + pairs(PURE_FUNCTION, RECONSTRUCTOR, CALLED_CLASS),
    ids=".".join,
)
def test_build_never_touches_a_global_itself(pair: tuple[str, str]) -> None:
    before = dict(vars(resolve(pair))) if isinstance(resolve(pair), type) else None
    data = stream(g(*pair) + dct(predict=i(1)) + BUILD)
    assert isinstance(refused(data), UntrustedArtifactError)
    if before is not None:
        assert "predict" not in vars(resolve(pair)) or before.get("predict") is not None


@pytest.mark.parametrize(
    "target",
    [b"]", b"}", EMPTY, tup(i(1)), s("text"), i(5), raw(b"x")],
    ids=["list", "dict", "empty-tuple", "tuple", "str", "int", "bytes"],
)
def test_build_never_touches_a_literal(target: bytes) -> None:
    assert isinstance(refused(stream(target + dct(a=i(1)) + BUILD)), UntrustedArtifactError)


ESTIMATOR = ("sklearn.linear_model._base", "LinearRegression")


@pytest.mark.parametrize(
    "key", ["__class__", "__dict__", "__setstate__", "__reduce_ex__", "__getattr__"]
)
def test_build_state_never_sets_dunder_names(key: str) -> None:
    data = stream(newobj(ESTIMATOR) + b"(" + s(key) + i(1) + b"d" + BUILD)
    assert isinstance(refused(data, match=key.replace("_", ".")), UntrustedArtifactError)


@pytest.mark.parametrize("name", ["predict", "fit", "get_params", "coef_", "_more_tags"])
def test_build_state_never_hides_a_method_or_descriptor(name: str) -> None:
    from sklearn.linear_model import LinearRegression

    attr = getattr(LinearRegression, name, None)
    data = stream(newobj(ESTIMATOR) + b"(" + s(name) + i(1) + b"d" + BUILD)
    if attr is None:  # a plain fitted attribute: allowed
        assert load(data).__dict__[name] == 1
    else:
        assert isinstance(refused(data), UntrustedArtifactError)


def test_slot_state_sets_only_declared_slots() -> None:
    # (dict_state, slot_state) with __class__ would turn the object into another class
    pair = ("sklearn.gaussian_process.kernels", "RBF")
    for key in ("__class__", "undeclared"):
        data = stream(newobj(pair) + tup(NONE, b"(" + s(key) + i(1) + b"d") + BUILD)
        assert isinstance(refused(data), UntrustedArtifactError)


def test_build_runs_at_most_once_per_object() -> None:
    data = stream(newobj(ESTIMATOR) + dct(a=i(1)) + BUILD + dct(b=i(2)) + BUILD)
    assert isinstance(refused(data, match="second BUILD"), UntrustedArtifactError)


def test_build_state_must_be_a_plain_dict() -> None:
    data = stream(newobj(ESTIMATOR) + g("builtins", "set") + EMPTY + REDUCE + BUILD)
    refused(data)


@pytest.mark.parametrize(
    "table", ["_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_state_dict_hooks"]
)
def test_torch_module_hook_tables_must_be_empty(table: str) -> None:
    pytest.importorskip("torch")
    module = ("torch.nn.modules.linear", "Identity")
    hooks = g("collections", "OrderedDict") + EMPTY + REDUCE + i(0) + g("numpy", "mean") + b"s"
    data = stream(newobj(module) + b"(" + s(table) + hooks + b"d" + BUILD)
    assert isinstance(refused(data, match="hooks"), UntrustedArtifactError)


def test_setstate_of_an_unreviewed_owner_never_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from persistkit.safety import capabilities

    reviewed = dict(capabilities.REVIEWED)
    reviewed.pop(("sklearn.base.BaseEstimator", "__setstate__"))
    monkeypatch.setattr(capabilities, "REVIEWED", reviewed)
    data = stream(newobj(ESTIMATOR) + dct(coef_=i(1)) + BUILD)
    assert isinstance(refused(data, match="not reviewed"), UntrustedArtifactError)


# --- 4. numpy ---------------------------------------------------------------------------------
def dtype(code: str, copy: bytes = TRUE) -> bytes:
    return g("numpy", "dtype") + tup(s(code), FALSE, copy) + REDUCE


def dtype_state(
    byteorder: str = "|",
    subarray: bytes = NONE,
    names: bytes = NONE,
    fields: bytes = NONE,
    elsize: int = -1,
    align: int = -1,
    flags: int = 0,
) -> bytes:
    return tup(i(3), s(byteorder), subarray, names, fields, i(elsize), i(align), i(flags))


def structured(fields: list[tuple[str, str, int]], elsize: int, flags: int = 0) -> bytes:
    names = tup(*(s(n) for n, _, _ in fields))
    body = b"(" + b"".join(s(n) + tup(dtype(c), i(off)) for n, c, off in fields) + b"d"
    return dtype(f"V{elsize}") + dtype_state(names=names, fields=body, elsize=elsize, flags=flags)


@pytest.mark.parametrize(
    "description",
    [
        # an object field overlapping raw bytes: the bytes would become a pointer
        [("a", "i8", 0), ("b", "O", 0)],
        [("a", "O", 0), ("b", "i8", 4)],
        # fields outside the item
        [("a", "f8", 12)],
        [("a", "f8", -8)],
    ],
    ids=["object-over-int", "int-into-object", "past-the-end", "negative-offset"],
)
def test_structured_dtypes_are_validated_before_numpy_sees_them(
    description: list[tuple[str, str, int]],
) -> None:
    data = stream(structured(description, 16) + BUILD)
    assert isinstance(refused(data), FormatError | UntrustedArtifactError)


@pytest.mark.parametrize("flags", [1, 63, 0x7FFFFFFF])
def test_dtype_flags_are_recomputed_not_trusted(flags: int) -> None:
    # numbers only, but the state claims it holds objects (flag 1: items are references)
    loaded = load(stream(structured([("a", "i8", 0), ("b", "i8", 8)], 16, flags) + BUILD))
    assert not loaded.hasobject
    assert loaded == np.dtype([("a", "i8"), ("b", "i8")])


def test_a_shared_numpy_dtype_is_never_changed() -> None:
    before = np.dtype("f8")
    # copy=False would hand out numpy's own float64 descriptor; BUILD would flip its byte order
    loaded = load(stream(dtype("f8", copy=FALSE) + dtype_state(byteorder=">") + BUILD))
    assert np.dtype("f8") is before and np.dtype("f8").byteorder == "="
    assert loaded == np.dtype(">f8")


@pytest.mark.parametrize("elsize", [2**31 + 8, 2**62])
def test_dtype_sizes_are_bounded(elsize: int) -> None:
    data = stream(dtype("V8") + dtype_state(elsize=elsize) + BUILD)
    assert isinstance(refused(data), FormatError)


def test_a_dtype_cannot_change_after_an_array_was_built_from_it() -> None:
    array = (
        g("numpy.core.multiarray", "_reconstruct")
        + tup(g("numpy", "ndarray"), tup(i(0)), raw(b"b"))
        + REDUCE
        + tup(i(1), tup(i(2)), dtype("i8") + put(9), FALSE, raw(bytes(16)))
        + BUILD
    )
    data = stream(b"(" + array + get(9) + structured([("a", "O", 0)], 8) + b"0" + BUILD + b"l")
    refused(data)


def ndarray(shape: bytes, dtype_code: str, data: bytes) -> bytes:
    return (
        g("numpy.core.multiarray", "_reconstruct")
        + tup(g("numpy", "ndarray"), tup(i(0)), raw(b"b"))
        + REDUCE
        + tup(i(1), shape, dtype(dtype_code), FALSE, data)
        + BUILD
    )


@pytest.mark.parametrize(
    ("shape", "code", "data"),
    [
        (tup(i(4)), "f8", raw(bytes(8))),  # too few bytes
        (tup(i(1)), "f8", raw(bytes(800))),  # too many
        (tup(i(-1)), "f8", raw(b"")),  # negative
        (tup(i(2**30), i(2**30), i(2**30)), "f8", raw(b"")),  # enormous
        (tup(i(1)), "O", raw(bytes(8))),  # raw bytes as object pointers
        (tup(i(2)), "O", b"]"),  # object items that do not match the shape
    ],
    ids=["short", "long", "negative", "huge", "pointer-bytes", "object-count"],
)
def test_arrays_are_built_only_from_exact_data(shape: bytes, code: str, data: bytes) -> None:
    refused(stream(ndarray(shape, code, data)))


def test_an_array_needs_a_dtype_the_stream_made() -> None:
    data = stream(
        g("numpy.core.multiarray", "_reconstruct")
        + tup(g("numpy", "ndarray"), tup(i(0)), raw(b"b"))
        + REDUCE
        + tup(i(1), tup(i(1)), g("numpy", "float64"), FALSE, raw(bytes(8)))
        + BUILD
    )
    assert isinstance(refused(data), UntrustedArtifactError)


@pytest.mark.parametrize(
    "call",
    [
        g("numpy._core.numeric", "_frombuffer")
        + tup(raw(bytes(8)), dtype("O"), tup(i(1)), s("C"))
        + REDUCE,
        g("numpy._core.multiarray", "scalar") + tup(dtype("O"), g("builtins", "set")) + REDUCE,
        g("numpy._core.multiarray", "_reconstruct")
        + tup(g("numpy.ma", "MaskedArray"), tup(i(5)), raw(b"b"))
        + REDUCE,
    ],
    ids=["frombuffer-object", "scalar-object", "reconstruct-other-class"],
)
def test_numpy_rebuilders_refuse_what_no_pickler_writes(call: bytes) -> None:
    refused(stream(call))


def test_legitimate_numpy_values_still_load_exactly() -> None:
    import pickle

    values = [
        np.arange(12.0).reshape(3, 4),
        np.asfortranarray(np.arange(6).reshape(2, 3)),
        np.array(["a", None, 3], dtype=object),
        np.zeros(3, dtype=[("a", "<i8"), ("b", ">f4"), ("c", "U3")]),
        np.zeros(2, dtype={"names": ["x"], "formats": ["f8"], "offsets": [8], "itemsize": 24}),
        np.zeros((2,), dtype=("f4", (2, 3))),
        np.array(["2020-01-01"], dtype="M8[D]"),
        np.ma.masked_array([1.0, 2.0], mask=[0, 1]),
        np.float32(1.5),
        np.random.default_rng(3),
    ]
    for protocol in (0, 2, 4, 5):
        for value in values:
            loaded = load(pickle.dumps(value, protocol=protocol))
            assert type(loaded) is type(value)
            if isinstance(value, np.ndarray):
                assert loaded.dtype == value.dtype
                if value.dtype.hasobject:
                    assert loaded.tolist() == value.tolist()
                else:
                    assert loaded.tobytes() == value.tobytes()


def test_build_never_touches_what_a_reader_handed_out(tmp_path: Any) -> None:
    # a torch storage comes from the reader's persistent_load; BUILD on it would replace its
    # bytes (``_untyped_storage``) under a tensor the file rebuilds next
    import zipfile

    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(2)}, tmp_path / "m.pt")
    storage = (
        b"(" + s("storage") + g("torch", "FloatStorage") + s("0") + s("cpu") + i(2) + b"tQ"
    )
    stream_ = stream(storage + dct(_untyped_storage=raw(bytes(8))) + BUILD)
    with zipfile.ZipFile(tmp_path / "m.pt") as zin, zipfile.ZipFile(tmp_path / "x.pt", "w") as out:
        for info in zin.infolist():
            data = stream_ if info.filename.endswith("data.pkl") else zin.read(info.filename)
            out.writestr(info.filename, data)
    with pytest.raises(UntrustedArtifactError, match="did not make"):
        TrustPolicy().load_torch(tmp_path / "x.pt")
