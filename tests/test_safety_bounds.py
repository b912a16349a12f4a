"""Classes 6 and 7 of the safety issue: validators bound every number before computing with it,
cap nesting, and accept exactly what the reference parsers accept — and `scan` agrees with
`load` in each case.

* safetensors: huge / zero-mixed / too many dimensions are refused at once (a header of huge
  dimensions with one zero used to take minutes); the JSON header is compared with the
  reference ``safetensors`` library on generated headers (a differential test).
* manifests: nesting is capped (no ``RecursionError``), file sizes are bounded.
* plain ``.npy`` / ``.npz`` files of numbers load as data; object arrays go through the audit.
"""

from __future__ import annotations

import json
import math
import random
import struct
from contextlib import nullcontext as _no_warning
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import persistkit
from persistkit.errors import FormatError, ManifestError, PersistkitError
from persistkit.manifest import Manifest
from persistkit.safety import audit_file, read_safetensors_header

safetensors = pytest.importorskip("safetensors")

# --- safetensors: helpers -------------------------------------------------------------------

JSON_WS = [" ", "\t", "\n", "\r", "  \n\t\r "]
# characters Python's str.isspace() (or a BOM-aware reader) might take for whitespace, but JSON
# (and the reference library) does not
NOT_JSON_WS = ["\x0b", "\x0c", "\xa0", "\u2028", "\u3000", "\ufeff", "\x00", "\x1c"]


def write_safetensors(
    path: Path, header: bytes, data: bytes = b"", length: int | None = None
) -> Path:
    """A safetensors file from raw header bytes (the 8-byte length is computed unless given)."""
    size = len(header) if length is None else length
    path.write_bytes(struct.pack("<Q", size) + header + data)
    return path


def tensor_json(shape: str, begin: int = 0, end: int = 0, dtype: str = "F32") -> bytes:
    """A one-tensor header with ``shape`` written verbatim (so "-0" or 10**30 survive)."""
    entry = f'{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{begin},{end}]}}'
    return ('{"t":' + entry + "}").encode()


def reference_accepts(path: Path) -> bool:
    """The reference library's verdict on the header: ``safe_open`` validates it (JSON, dtypes,
    offsets, sizes, coverage of the file) before any tensor is read."""
    try:
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            handle.keys()
    except Exception:
        return False
    return True


def persistkit_accepts(path: Path) -> bool:
    try:
        read_safetensors_header(path)
    except FormatError:
        return False
    return True


def scan_accepts(path: Path) -> bool:
    result = audit_file(path)
    return result.format == "safetensors" and result.clean


# --- safetensors: bounds (class 6) ----------------------------------------------------------

HUGE = 10**4000  # 4 001 digits: under Python's int-parsing limit, far over any size


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "shape",
    [
        # computing the product of these took minutes (arbitrary-precision multiplication)
        "[" + ",".join([str(HUGE)] * 1000) + ",0]",
        "[" + ",".join([str(HUGE - 1)] * 500) + ",0," + ",".join([str(HUGE)] * 500) + "]",
        # larger than a u64: the reference refuses them, persistkit used to accept
        f"[{10**30},{10**30},0]",
        f"[{2**64},0]",
        # partial product overflows a u64 before the zero: the reference refuses
        f"[{2**62},4,0]",
        f"[{2**32},{2**32},0]",
        # larger than any framework can index
        f"[{2**63},0]",
        f"[0,{2**64 - 1}]",
        # more dimensions than numpy can build
        "[" + ",".join(["1"] * 65) + ",0]",
        "[" + ",".join(["1"] * 100_000) + ",0]",
        # -0 is a float to the reference, not a size
        "[-0]",
        "[3,-0]",
    ],
    ids=[
        "1000-huge-dims-then-0",
        "huge-dims-around-a-0",
        "1e30-1e30-0",
        "2^64-0",
        "2^62-4-0",
        "2^32-2^32-0",
        "2^63-0",
        "0-then-u64-max",
        "65-dims",
        "100k-dims",
        "minus-zero",
        "3-minus-zero",
    ],
)
def test_absurd_empty_shapes_are_refused_at_once_as_the_reference_does(
    tmp_path: Path, shape: str
) -> None:
    path = write_safetensors(tmp_path / "x.safetensors", tensor_json(shape))
    with pytest.raises(FormatError, match="not a valid safetensors file"):
        read_safetensors_header(path)
    assert not scan_accepts(path)
    with pytest.raises(FormatError):
        persistkit.load(path)


def _generated_absurd_shapes(seed: int, count: int) -> list[list[int]]:
    """Shapes mixing huge, u64-edge and zero dimensions, in random order."""
    rng = random.Random(seed)
    pool = [2**31, 2**32, 2**32 + 1, 2**40, 2**62, 2**63, 2**63 + 1, 2**64 - 1, 2**64, 10**30]
    shapes = []
    for _ in range(count):
        dims = [rng.choice(pool) for _ in range(rng.randint(2, 64))]
        dims.insert(rng.randrange(len(dims) + 1), 0)
        shapes.append(dims)
    return shapes


@pytest.mark.timeout(10)
def test_generated_huge_dimensions_with_a_zero_get_the_reference_verdict(tmp_path: Path) -> None:
    # below 2**63 a dimension is one numpy and torch can index; among those, the reference
    # refuses exactly the shapes whose running product overflows a u64 before the zero
    readable = [[0, 768], [2**40, 0], [0, 2**62, 3], [4294967297, 4294967295, 0], [2**63 - 1, 0]]
    mismatches = []
    for index, dims in enumerate(readable + _generated_absurd_shapes(seed=6, count=150)):
        path = write_safetensors(tmp_path / f"g{index}.safetensors", tensor_json(str(dims)))
        reference = reference_accepts(path) and max(dims) < 2**63
        if not persistkit_accepts(path) == scan_accepts(path) == reference:
            mismatches.append(dims)
    assert mismatches == []
    for dims in readable:  # empty tensors the reference reads keep their shape
        path = write_safetensors(tmp_path / "e.safetensors", tensor_json(str(dims)))
        assert read_safetensors_header(path).tensors[0].shape == tuple(dims)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("dims", [[2**62] * 64, [2**63 - 1] * 64, [2**31] * 3, [10**6] * 20])
def test_huge_shapes_without_a_zero_are_refused_against_the_file_size(
    tmp_path: Path, dims: list[int]
) -> None:
    # no zero: the count is multiplied out only until it passes the bytes the file holds
    path = write_safetensors(tmp_path / "x.safetensors", tensor_json(str(dims), 0, 16), b"\0" * 16)
    with pytest.raises(FormatError, match="needs more than the 16 bytes"):
        read_safetensors_header(path)
    assert not scan_accepts(path)


def test_header_length_fields_the_reference_refuses_are_refused(tmp_path: Path) -> None:
    # a guard: these were refused before the bounds work too, and must stay refused
    for length in (0, 1, 100_000_001, 2**32, 2**63, 2**64 - 1):
        path = write_safetensors(tmp_path / "l.safetensors", b"{}" + b" " * 6, length=length)
        assert not reference_accepts(path)
        with pytest.raises(FormatError):
            read_safetensors_header(path)
        assert not scan_accepts(path)


# --- safetensors: the JSON header against the reference (class 7) ---------------------------

BODY = '{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}'


def _with_whitespace(where: str, ws: str) -> bytes:
    if where == "leading":
        return (ws + BODY).encode()
    if where == "trailing":
        return (BODY + ws).encode()
    return BODY.replace(":{", ":" + ws + "{", 1).replace(",", ws + "," + ws).encode()


def test_whitespace_gets_the_reference_verdict(tmp_path: Path) -> None:
    # the four JSON whitespace characters before, inside and after the object; nothing else,
    # not even what str.isspace() calls whitespace, nor a byte-order mark
    cases = [
        (where, ws) for where in ("leading", "trailing", "inner") for ws in JSON_WS + NOT_JSON_WS
    ]
    for index, (where, ws) in enumerate(cases):
        path = write_safetensors(
            tmp_path / f"w{index}.safetensors", _with_whitespace(where, ws), b"\0" * 12
        )
        expected = ws in JSON_WS
        label = f"{ws!r} {where}"
        assert reference_accepts(path) is expected, label
        assert persistkit_accepts(path) is expected, label
        assert scan_accepts(path) is expected, label
        if expected:
            np.testing.assert_array_equal(persistkit.load(path)["t"], np.zeros(3, np.float32))
        else:
            with pytest.raises(FormatError):
                persistkit.load(path)


PYTHON_ONLY_JSON = [
    b'{"\\ud800":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}',  # unpaired surrogate
    b'{"__metadata__":{"k":"\\udfff"}}',
    b'{"t":{"dtype":"F32","shape":[0],"data_offsets":[-0,0]}}',
    b'{"t":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}',
    b'{"__metadata__":{"k":NaN}}',
    b'{"t":{"dtype":"F32","shape":[Infinity],"data_offsets":[0,0]}}',
    b'{"t":{"dtype":"F32","shape":[0],"data_offsets":[0,18446744073709551616]}}',
    b"{" * 200_000,
    b'{"t":' + b"[" * 200_000 + b"]" * 200_000 + b"}",
]


def test_json_python_reads_but_the_reference_refuses_is_refused(tmp_path: Path) -> None:
    for index, header in enumerate(PYTHON_ONLY_JSON):
        path = write_safetensors(tmp_path / f"j{index}.safetensors", header)
        assert not reference_accepts(path), header[:60]
        assert not persistkit_accepts(path), header[:60]
        assert not scan_accepts(path), header[:60]


def test_deliberate_strictness_beyond_the_reference(tmp_path: Path) -> None:
    # the reference silently picks one of two duplicate keys, ignores unknown keys and builds
    # torch tensors of 100 dimensions; persistkit refuses all three (documented in the module)
    for header in (
        b'{"t":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
        b'"t":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}',
        b'{"t":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"x":1}}',
        tensor_json("[" + ",".join(["1"] * 100) + "]", 0, 4),
    ):
        data = b"\0" * 4 if b"[0,4]" in header else b""
        path = write_safetensors(tmp_path / "d.safetensors", header, data)
        assert reference_accepts(path)
        assert not persistkit_accepts(path)
        assert not scan_accepts(path)


@dataclass
class GeneratedFile:
    header: bytes
    data: bytes


_DIMS = ["0", "1", "2", "3", "7", "-1", "-0", "2.0", "1e1", "true", '"3"', "null", str(2**64)]
_DTYPES = ["F32", "F16", "U8", "BOOL", "F64", "I64", "F4", "X9"]


def _generated_file(rng: random.Random) -> GeneratedFile:
    """A header built by hand from random parts: JSON and non-JSON whitespace, good and bad
    dimensions, offsets that are right or wrong, optional metadata, extra or missing data."""

    def ws() -> str:
        roll = rng.random()
        if roll < 0.6:
            return ""
        return rng.choice(JSON_WS) if roll < 0.9 else rng.choice(NOT_JSON_WS)

    parts, position = [], 0
    for index in range(rng.randint(0, 3)):
        dtype = rng.choice(_DTYPES)
        dims = [
            rng.choice(_DIMS[:5]) if rng.random() < 0.85 else rng.choice(_DIMS)
            for _ in range(rng.randint(0, 3))
        ]
        try:
            count = math.prod(int(d) for d in dims)
            nbytes = count * {"F32": 4, "F16": 2, "F64": 8, "I64": 8, "F4": 1}.get(dtype, 1)
        except ValueError:
            nbytes = 4
        if rng.random() < 0.1:
            nbytes += rng.choice([-1, 1])
        nbytes = nbytes if 0 <= nbytes <= 1024 else 4  # out of range: wrong on purpose
        shape = "[" + ws() + ("," + ws()).join(dims) + ws() + "]"
        parts.append(
            f'"t{index}"{ws()}:{ws()}{{"dtype":{ws()}"{dtype}","shape":{shape},'
            f'"data_offsets":[{position},{ws()}{position + nbytes}]}}'
        )
        position += nbytes
    if rng.random() < 0.3:
        value = rng.choice(['"pt"', "1", "NaN", '"\\ud800"', '"ok"'])
        parts.append(f'"__metadata__":{ws()}{{"format":{value}}}')
    body = ws() + "{" + ws() + ("," + ws()).join(parts) + ws() + "}" + ws()
    data_size = position + (rng.choice([-1, 1]) if rng.random() < 0.05 else 0)
    return GeneratedFile(body.encode("utf-8", "surrogatepass"), b"\0" * max(data_size, 0))


def test_generated_headers_get_the_reference_verdict_from_validator_scan_and_load(
    tmp_path: Path,
) -> None:
    rng = random.Random(7)
    mismatches, accepted = [], 0
    for index in range(400):
        generated = _generated_file(rng)
        path = write_safetensors(
            tmp_path / f"h{index}.safetensors", generated.header, generated.data
        )
        verdicts = (reference_accepts(path), persistkit_accepts(path), scan_accepts(path))
        if len(set(verdicts)) != 1:
            mismatches.append((generated.header, verdicts))
        accepted += verdicts[0]
    assert mismatches == []
    assert 50 < accepted < 350  # the generator exercises both verdicts


def test_load_agrees_with_the_reference_on_leading_whitespace_headers(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "m.safetensors"
    save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(path))
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + length]
    padded = write_safetensors(
        tmp_path / "p.safetensors", b"\n\t  " + header + b"\r\n", raw[8 + length :]
    )
    assert reference_accepts(padded)
    loaded = persistkit.load(padded)
    np.testing.assert_array_equal(loaded["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert scan_accepts(padded)
    # without the suffix the format is recognised from the bytes, whitespace and all
    bare = padded.rename(tmp_path / "weights.bin")
    np.testing.assert_array_equal(persistkit.load(bare)["w"], loaded["w"])


# --- manifests: nesting and numbers (class 6) -----------------------------------------------


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    persistkit.save({"w": [1.0, 2.0]}, tmp_path / "art", backend="pickle")
    return tmp_path / "art"


def _nest(depth: int, opener: str) -> str:
    closer = {"[": "]", "{": "}"}[opener]
    inner = '"x": 1' if opener == "{" else "1"
    return opener + (('"k": {' if opener == "{" else "[") * (depth - 1)) + inner + (closer * depth)


def _manifest_with(artifact: Path, field: str, nested: str) -> str:
    """The artifact's manifest text with ``nested`` (raw JSON) as the value of key "deep" in
    ``metadata`` / ``backend.options`` / ``model``, or at the top level."""
    manifest = json.loads((artifact / "persistkit.json").read_text())
    where = {"metadata": manifest["metadata"], "model": manifest["model"], "top": manifest}
    where["options"] = manifest["backend"]["options"]
    where[field]["deep"] = "NESTED-HERE"
    return json.dumps(manifest).replace('"NESTED-HERE"', nested)


@pytest.mark.parametrize("field", ["metadata", "options", "model", "top"])
def test_manifest_nesting_is_capped_with_a_clear_error(artifact: Path, field: str) -> None:
    # below the cap a nested manifest loads; at any depth above it the error names the
    # nesting (it used to be accepted up to the recursion limit, then a raw RecursionError)
    for depth, opener in [(3, "{"), (60, "["), (60, "{")]:
        text = _manifest_with(artifact, field, _nest(depth, opener))
        assert Manifest.from_json(text) is not None
    # brackets inside strings (escaped quotes included) are text, not nesting
    brackets = json.dumps("[{" * 10_000 + '\\"' + "[" * 100)
    text = _manifest_with(artifact, field, brackets)
    assert Manifest.from_json(text) is not None
    for depth, opener in [(65, "["), (200, "{"), (999, "["), (5_000, "{"), (100_000, "[")]:
        text = _manifest_with(artifact, field, _nest(depth, opener))
        with pytest.raises(ManifestError, match="nested .* levels deep"):
            Manifest.from_json(text)
        with pytest.raises(ManifestError, match="nested .* levels deep"):
            Manifest.from_json(text.encode())


def test_a_deeply_nested_manifest_is_refused_by_load_and_scan(artifact: Path) -> None:
    from click.testing import CliRunner

    from persistkit.cli import main

    manifest = artifact / "persistkit.json"
    manifest.write_text(_manifest_with(artifact, "metadata", _nest(100_000, "[")))
    with pytest.raises(ManifestError, match="nested 100002 levels deep"):
        persistkit.load(artifact)
    result = CliRunner().invoke(main, ["scan", str(artifact)])
    assert result.exit_code == 1
    assert "nested 100002 levels deep" in result.output
    assert not isinstance(result.exception, RecursionError)


@pytest.mark.parametrize("size", [2**63, 2**64, 10**30, 10**4000])
def test_absurd_file_sizes_in_a_manifest_are_refused(artifact: Path, size: int) -> None:
    text = (artifact / "persistkit.json").read_text()
    entry = json.loads(text)["files"][0]
    edited = text.replace(f'"size": {entry["size"]}', f'"size": {size}', 1)
    assert edited != text
    with pytest.raises(ManifestError, match="invalid size|not valid JSON"):
        Manifest.from_json(edited)


# --- plain .npy / .npz files are data (class 7), bounded (class 6) ---------------------------

NUMERIC_ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.asfortranarray(np.arange(24, dtype=np.int64).reshape(2, 3, 4)),
    np.array(2.5),
    np.zeros((0, 7), dtype=np.uint16),
    np.array([True, False, True]),
    np.array([1 + 2j, 3 - 4j], dtype=np.complex128),
    np.array(["2024-01-02"], dtype="datetime64[D]"),
    np.zeros(3, dtype=[("x", "<f4"), ("y", "<i8")]),
    np.arange(5, dtype=">i4"),
    np.array([b"ab", b"c"]),
]


def _verdicts(path: Path, **load_options: object) -> tuple[object, bool]:
    """What load returns (or the error it raises) and whether scan calls the file clean."""
    try:
        loaded: object = persistkit.load(path, **load_options)
    except PersistkitError as exc:
        loaded = exc
    return loaded, audit_file(path).clean


def test_npy_files_of_numbers_load_as_data_and_scan_clean(tmp_path: Path) -> None:
    for index, array in enumerate(NUMERIC_ARRAYS):
        path = tmp_path / f"a{index}.npy"
        np.save(path, array, allow_pickle=False)
        loaded, clean = _verdicts(path)
        assert isinstance(loaded, np.ndarray), (array.dtype, loaded)
        assert loaded.dtype == array.dtype and loaded.shape == array.shape
        np.testing.assert_array_equal(loaded, array)
        loaded[...] = loaded  # writable, as numpy.load gives it
        assert clean
        assert audit_file(path).format == "npy"


@pytest.mark.parametrize("writer", [np.savez, np.savez_compressed])
def test_npz_files_of_numbers_load_as_a_dict_and_scan_clean(tmp_path: Path, writer: object) -> None:
    arrays = {f"k{index}": array for index, array in enumerate(NUMERIC_ARRAYS)}
    path = tmp_path / "many.npz"
    writer(path, **arrays)  # type: ignore[operator]
    loaded, clean = _verdicts(path)
    assert isinstance(loaded, dict) and sorted(loaded) == sorted(arrays)
    for name, array in arrays.items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].dtype == array.dtype
    assert clean
    assert audit_file(path).format == "npz"
    # the same archive without the suffix is recognised by its content
    bare = tmp_path / "archive"
    bare.write_bytes(path.read_bytes())
    assert sorted(persistkit.load(bare)) == sorted(arrays)


def test_object_arrays_are_refused_with_the_globals_they_need_by_load_and_scan(
    tmp_path: Path,
) -> None:
    from hostile.corpus import Evil
    from persistkit.errors import UntrustedArtifactError

    marker = tmp_path / "ran"
    evil = np.array([Evil(str(marker)), 1], dtype=object)
    np.save(tmp_path / "evil.npy", evil, allow_pickle=True)
    np.savez(tmp_path / "evil.npz", fine=np.arange(3), evil=evil)
    for name in ("evil.npy", "evil.npz"):
        loaded, clean = _verdicts(tmp_path / name)
        assert isinstance(loaded, UntrustedArtifactError), loaded
        assert "posix.system" in loaded.globals_needed
        assert not clean
        assert audit_file(tmp_path / name).untrusted == ["posix.system"]
    assert not marker.exists()


def test_object_arrays_of_plain_values_get_the_same_verdict_from_load_and_scan(
    tmp_path: Path,
) -> None:
    plain = np.array([1, "two", None, 3.5], dtype=object)
    np.save(tmp_path / "plain.npy", plain, allow_pickle=True)
    np.savez(tmp_path / "plain.npz", p=plain, n=np.arange(2))
    for name in ("plain.npy", "plain.npz"):
        loaded, clean = _verdicts(tmp_path / name)
        assert not isinstance(loaded, PersistkitError), loaded
        got = loaded if name.endswith(".npy") else loaded["p"]  # type: ignore[index]
        assert list(got) == list(plain)
        assert clean
    trusted = persistkit.load(tmp_path / "plain.npy", trusted=True)
    assert list(trusted) == list(plain)


def _npy_bytes(header: str, data: bytes = b"") -> bytes:
    """A version 1.0 .npy file with the header dict written verbatim."""
    text = header + " " * ((64 - (len(header) + 11) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode() + data


HOSTILE_NPY = {
    "terabytes-claimed": _npy_bytes(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }", b"\0" * 64
    ),
    "huge-dims-with-data": _npy_bytes(
        f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({2**62}, {2**62}), }}", b"\0" * 8
    ),
    "65-dims": _npy_bytes(
        "{'descr': '<u1', 'fortran_order': False, 'shape': (%s), }" % ("1," * 65), b"\0"
    ),
    "truncated": _npy_bytes(
        "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }", b"\0" * 12
    ),
    "trailing-bytes": _npy_bytes(
        "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", b"\0" * 12
    ),
    "negative-dim": _npy_bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (-1,), }"),
    "zero-size-elements": _npy_bytes(
        "{'descr': '|V0', 'fortran_order': False, 'shape': (1000000000000,), }"
    ),
    "object-count-beyond-bytes": _npy_bytes(
        "{'descr': '|O', 'fortran_order': False, 'shape': (1000000000000,), }", b"N."
    ),
}


@pytest.mark.timeout(20)
def test_hostile_npy_headers_are_refused_before_allocating_by_load_and_scan(
    tmp_path: Path,
) -> None:
    # refused from the header, in time (a terabyte array is never allocated)
    for name, content in HOSTILE_NPY.items():
        path = tmp_path / f"{name}.npy"
        path.write_bytes(content)
        loaded, clean = _verdicts(path)
        assert isinstance(loaded, FormatError), (name, loaded)
        assert "not a valid numpy array file" in loaded.message, name
        assert not clean, name
        # the same array inside an .npz
        archive = tmp_path / f"{name}.npz"
        import zipfile

        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("x.npy", content)
        loaded, clean = _verdicts(archive)
        assert isinstance(loaded, FormatError), (name, loaded)
        assert not clean, name


def test_npz_archives_that_are_not_plain_arrays_are_refused_by_load_and_scan(
    tmp_path: Path,
) -> None:
    import zipfile

    good = _npy_bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", b"\0" * 4)
    cases = {
        "other-member": [("x.npy", good), ("notes.txt", b"hi")],
        "duplicate-member": [("x.npy", good), ("x.npy", good)],
    }
    for name, members in cases.items():
        path = tmp_path / f"{name}.npz"
        warns = pytest.warns(UserWarning) if name.startswith("duplicate") else _no_warning()
        with warns, zipfile.ZipFile(path, "w") as zf:
            for member, content in members:
                zf.writestr(member, content)
        loaded, clean = _verdicts(path)
        assert isinstance(loaded, FormatError), (name, loaded)
        assert not clean, name
