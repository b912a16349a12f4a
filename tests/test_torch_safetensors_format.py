"""The strict safetensors header validator (persistkit.safety.read_safetensors_header).

These tests need only numpy and safetensors (no torch): files are written with
``safetensors.numpy`` or assembled by hand.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistkit.errors import FormatError
from persistkit.safety import read_safetensors_header

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def write_raw(path: Path, header: Any, data: bytes, *, raw_header: bytes | None = None) -> Path:
    body = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + data)
    return path


def f32(name: str, shape: list[int], begin: int) -> dict[str, Any]:
    n = int(np.prod(shape)) * 4
    return {name: {"dtype": "F32", "shape": shape, "data_offsets": [begin, begin + n]}}


def test_a_file_written_by_safetensors_is_accepted_with_its_tensors_and_metadata(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ok.safetensors"
    arrays = {"w": np.ones((2, 3), np.float32), "b": np.arange(4, dtype=np.int64)}
    safetensors_numpy.save_file(arrays, str(path), metadata={"format": "np"})
    header = read_safetensors_header(path)
    entries = {t.name: t for t in header.tensors}
    assert set(entries) == {"w", "b"}
    assert (entries["w"].dtype, entries["w"].shape, entries["w"].nbytes) == ("F32", (2, 3), 24)
    assert (entries["b"].dtype, entries["b"].shape, entries["b"].nbytes) == ("I64", (4,), 32)
    assert header.metadata == {"format": "np"}
    assert header.file_size == path.stat().st_size
    assert header.data_start + 24 + 32 == header.file_size


def test_every_truncation_of_a_valid_file_is_refused(tmp_path: Path) -> None:
    full = tmp_path / "full.safetensors"
    safetensors_numpy.save_file({"a": np.ones(5, np.float32)}, str(full))
    data = full.read_bytes()
    cut = tmp_path / "cut.safetensors"
    for length in range(len(data)):
        cut.write_bytes(data[:length])
        with pytest.raises(FormatError):
            read_safetensors_header(cut)


def test_trailing_bytes_after_the_last_tensor_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    safetensors_numpy.save_file({"a": np.ones(2, np.float32)}, str(path))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(FormatError, match="trailing"):
        read_safetensors_header(path)


def test_a_header_length_over_the_limit_is_refused_before_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "big.safetensors"
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(FormatError, match="over the"):
        read_safetensors_header(path)


def test_a_header_longer_than_the_file_is_refused_as_truncated(tmp_path: Path) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(FormatError, match="truncated"):
        read_safetensors_header(path)


def test_a_gap_between_tensors_is_refused(tmp_path: Path) -> None:
    header = {**f32("a", [1], 0), **f32("b", [1], 8)}
    with pytest.raises(FormatError, match="gap"):
        read_safetensors_header(write_raw(tmp_path / "g.safetensors", header, b"\0" * 12))


def test_overlapping_tensors_are_refused(tmp_path: Path) -> None:
    header = {**f32("a", [2], 0), **f32("b", [2], 4)}
    with pytest.raises(FormatError, match="overlaps"):
        read_safetensors_header(write_raw(tmp_path / "o.safetensors", header, b"\0" * 12))


def test_offsets_that_disagree_with_dtype_and_shape_are_refused(tmp_path: Path) -> None:
    header = {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}
    with pytest.raises(FormatError, match="needs 12 bytes"):
        read_safetensors_header(write_raw(tmp_path / "s.safetensors", header, b"\0" * 8))


def test_data_past_the_end_of_the_file_is_refused_as_truncated(tmp_path: Path) -> None:
    header = f32("a", [4], 0)
    with pytest.raises(FormatError, match="truncated"):
        read_safetensors_header(write_raw(tmp_path / "t.safetensors", header, b"\0" * 8))


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]},
        {"dtype": "F32", "shape": [1], "data_offsets": [0]},
        {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1},
        {"dtype": "F32", "shape": [1]},
        "not an object",
    ],
    ids=[
        "unknown-dtype",
        "negative-dim",
        "bool-dim",
        "shape-not-list",
        "reversed-offsets",
        "one-offset",
        "extra-key",
        "missing-offsets",
        "entry-not-object",
    ],
)
def test_malformed_tensor_entries_are_refused(tmp_path: Path, entry: Any) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"a": entry}, b"\0" * 4)
    with pytest.raises(FormatError):
        read_safetensors_header(path)


@pytest.mark.parametrize(
    "raw",
    [b"[]", b"not json", b'{"a": 1', b'{"__metadata__": {"k": 1}}', b"\xff\xfe{}"],
    ids=["array", "garbage", "unterminated", "metadata-not-strings", "not-utf8"],
)
def test_headers_that_are_not_a_json_object_of_the_right_shape_are_refused(
    tmp_path: Path, raw: bytes
) -> None:
    path = write_raw(tmp_path / "h.safetensors", None, b"", raw_header=raw)
    with pytest.raises(FormatError):
        read_safetensors_header(path)


def test_a_header_nested_too_deeply_for_the_json_parser_is_refused(tmp_path: Path) -> None:
    raw = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = write_raw(tmp_path / "n.safetensors", None, b"", raw_header=raw)
    with pytest.raises(FormatError, match="not valid JSON"):
        read_safetensors_header(path)


def test_duplicate_tensor_names_in_the_header_are_refused(tmp_path: Path) -> None:
    raw = (
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},'
        b' "a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}'
    )
    path = write_raw(tmp_path / "d.safetensors", None, b"\0\0", raw_header=raw)
    with pytest.raises(FormatError, match="duplicate"):
        read_safetensors_header(path)


def test_empty_tensors_and_an_empty_file_body_are_accepted(tmp_path: Path) -> None:
    header = {"e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]}}
    parsed = read_safetensors_header(write_raw(tmp_path / "e.safetensors", header, b""))
    assert parsed.names == ["e"]


def test_a_missing_file_is_a_format_error_not_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="cannot read"):
        read_safetensors_header(tmp_path / "absent.safetensors")


_DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8, np.bool_]


@st.composite
def array_dicts(draw: st.DrawFn) -> dict[str, np.ndarray]:
    names = draw(st.lists(st.text("abcxyz._", min_size=1, max_size=6), max_size=4, unique=True))
    out = {}
    for name in names:
        dtype = draw(st.sampled_from(_DTYPES))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        out[name] = np.zeros(shape, dtype=dtype)
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(arrays=array_dicts())
def test_any_file_safetensors_writes_is_accepted_and_described_exactly(
    tmp_path: Path, arrays: dict[str, np.ndarray]
) -> None:
    path = tmp_path / "p.safetensors"
    safetensors_numpy.save_file(arrays, str(path))
    header = read_safetensors_header(path)
    assert {t.name: t.shape for t in header.tensors} == {k: v.shape for k, v in arrays.items()}
    assert {t.name: t.nbytes for t in header.tensors} == {k: v.nbytes for k, v in arrays.items()}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_whatever_the_validator_accepts_after_a_byte_flip_the_library_loads(
    tmp_path: Path, position: int, value: int
) -> None:
    path = tmp_path / "flip.safetensors"
    safetensors_numpy.save_file(
        {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.arange(3)}, str(path)
    )
    data = bytearray(path.read_bytes())
    data[position % len(data)] = value
    path.write_bytes(bytes(data))
    try:
        header = read_safetensors_header(path)
    except FormatError:
        return
    loaded = safetensors_numpy.load_file(str(path))
    assert {k: v.shape for k, v in loaded.items()} == {t.name: t.shape for t in header.tensors}
