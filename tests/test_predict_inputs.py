"""Input signatures and the file readers behind `persistkit predict` and the upload page."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import persistkit
from persistkit.errors import InputError, ManifestError
from persistkit.inputs import image_layout, read_image, read_input
from persistkit.signature import Signature, TensorSpec, conform, numpy_dtype, oip_datatype


def spec(shape: tuple[int, ...], datatype: str = "FP64") -> TensorSpec:
    return TensorSpec("input-0", datatype, shape)


def png_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# --- signatures --------------------------------------------------------------------------


def test_save_records_named_oip_signature_with_batch_dimension(tmp_path: Path) -> None:
    def double(x: np.ndarray) -> np.ndarray:
        return (x * 2).astype(np.float32)

    example = np.zeros((5, 8, 8), dtype=np.uint8)
    art = persistkit.save(double, tmp_path / "m", example=example, backend="cloudpickle")
    assert art.manifest.signature == {
        "inputs": [{"name": "input-0", "datatype": "UINT8", "shape": [-1, 8, 8]}],
        "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1, 8, 8]}],
    }


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [
        (np.bool_, "BOOL"),
        (np.uint8, "UINT8"),
        (np.int16, "INT16"),
        (np.int64, "INT64"),
        (np.float16, "FP16"),
        (np.float32, "FP32"),
        (np.float64, "FP64"),
        (np.str_, "BYTES"),
        (object, "BYTES"),
    ],
)
def test_numpy_dtypes_map_to_oip_datatypes(dtype: type, datatype: str) -> None:
    assert oip_datatype(np.dtype(dtype)) == datatype


@given(st.sampled_from(["BOOL", "UINT8", "UINT64", "INT8", "INT32", "FP16", "FP32", "FP64"]))
@settings(max_examples=20)
def test_oip_datatypes_round_trip_through_numpy(datatype: str) -> None:
    assert oip_datatype(numpy_dtype(datatype)) == datatype


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "x", "datatype": "FLOAT", "shape": [-1]},
        {"name": "x", "datatype": "FP32", "shape": [-2]},
        {"name": "x", "datatype": "FP32", "shape": "(-1, 3)"},
        {"name": "", "datatype": "FP32", "shape": [-1]},
        {"datatype": "FP32", "shape": [-1]},
    ],
)
def test_malformed_signature_entries_are_refused(entry: dict[str, object]) -> None:
    with pytest.raises(ManifestError):
        Signature.from_manifest({"inputs": [entry], "outputs": []})


def test_missing_signature_reads_as_empty() -> None:
    assert Signature.from_manifest(None).input is None


def test_conform_adds_the_batch_dimension_to_one_item() -> None:
    batch = conform(np.zeros(64), spec((-1, 64)), source="x")
    assert batch.shape == (1, 64)


def test_conform_refuses_a_wrong_item_shape() -> None:
    with pytest.raises(InputError, match=r"shape \(1, 63\).*\(N, 64\)"):
        conform(np.zeros((1, 63)), spec((-1, 64)), source="x")


def test_conform_converts_whole_floats_to_an_integer_input() -> None:
    batch = conform(np.array([[1.0, 2.0]]), spec((-1, 2), "INT32"), source="x")
    assert batch.dtype == np.int32 and batch.tolist() == [[1, 2]]


def test_conform_refuses_fractions_for_an_integer_input() -> None:
    with pytest.raises(InputError, match="INT32"):
        conform(np.array([[1.5, 2.0]]), spec((-1, 2), "INT32"), source="x")


# --- pictures ----------------------------------------------------------------------------


def test_flat_square_signature_reads_pictures_as_grayscale() -> None:
    layout = image_layout(spec((-1, 64)))
    assert (layout.height, layout.width, layout.mode, layout.layout) == (8, 8, "L", "flat")


def test_flat_signature_of_three_squares_reads_pictures_as_rgb() -> None:
    layout = image_layout(spec((-1, 48)))
    assert (layout.height, layout.width, layout.mode) == (4, 4, "RGB")


def test_flat_signature_that_is_no_square_asks_for_a_size() -> None:
    with pytest.raises(InputError, match="--image-size"):
        image_layout(spec((-1, 10)))


def test_picture_pixels_reach_the_model_unchanged_in_the_signature_dtype() -> None:
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    batch = read_image(png_bytes(pixels), spec((-1, 64)))
    assert batch.dtype == np.float64
    assert np.array_equal(batch, pixels.reshape(1, 64).astype(np.float64))


def test_pictures_are_resized_to_the_signature_size() -> None:
    big = np.full((32, 24), 200, dtype=np.uint8)
    batch = read_image(png_bytes(big), spec((-1, 8, 6), "UINT8"))
    assert batch.shape == (1, 8, 6) and np.all(batch == 200)


def test_colour_pictures_become_grayscale_for_a_grayscale_model() -> None:
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    batch = read_image(png_bytes(rgb), spec((-1, 4, 4), "UINT8"))
    assert batch.shape == (1, 4, 4) and len(np.unique(batch)) == 1 and 0 < batch[0, 0, 0] < 255


def test_channels_first_signature_gets_channels_first_rgb() -> None:
    rgb = np.zeros((5, 7, 3), dtype=np.uint8)
    rgb[..., 0] = 10
    rgb[..., 2] = 30
    batch = read_image(png_bytes(rgb), spec((-1, 3, 5, 7), "FP32"))
    assert batch.shape == (1, 3, 5, 7)
    assert batch[0, 0].max() == 10 and batch[0, 1].max() == 0 and batch[0, 2].max() == 30


def test_channels_last_signature_gets_channels_last_rgb() -> None:
    rgb = np.zeros((5, 7, 3), dtype=np.uint8)
    rgb[..., 2] = 30
    batch = read_image(png_bytes(rgb), spec((-1, 5, 7, 3), "UINT8"))
    assert batch.shape == (1, 5, 7, 3) and batch[0, :, :, 2].min() == 30


def test_bytes_that_are_no_picture_raise_input_error() -> None:
    with pytest.raises(InputError, match="not a picture"):
        read_image(b"definitely not a png", spec((-1, 64)))


@pytest.mark.parametrize("shape", [(-1,), (-1, 8, 8)])
def test_a_text_model_refuses_pictures_before_decoding_them(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError, match="takes text"):
        read_image(b"definitely not a png", spec(shape, "BYTES"))


def test_truncated_picture_raises_input_error() -> None:
    data = png_bytes(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(InputError):
        read_image(data[: len(data) // 2], spec((-1, 64, 64)))


# --- data files --------------------------------------------------------------------------


def test_npy_file_of_one_item_becomes_a_batch_of_one(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones(64))
    assert read_input(tmp_path / "x.npy", spec((-1, 64))).shape == (1, 64)


def test_npy_file_holding_python_objects_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="x.npy"):
        read_input(tmp_path / "x.npy", spec((-1, 64)))


def test_csv_rows_are_items_and_a_header_row_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b,c\n1,2,3\n4,5,6\n")
    batch = read_input(tmp_path / "x.csv", spec((-1, 3)))
    assert batch.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_csv_with_ragged_rows_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("1,2,3\n4,5\n")
    with pytest.raises(InputError, match="different lengths"):
        read_input(tmp_path / "x.csv", spec((-1, 3)))


def test_json_list_and_instances_object_read_the_same(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([[1, 2], [3, 4]]))
    (tmp_path / "b.json").write_text(json.dumps({"instances": [[1, 2], [3, 4]]}))
    a = read_input(tmp_path / "a.json", spec((-1, 2)))
    b = read_input(tmp_path / "b.json", spec((-1, 2)))
    assert a.dtype == np.float64 and np.array_equal(a, b)


def test_malformed_json_file_raises_input_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[[1, 2], [3")
    with pytest.raises(InputError, match="not valid JSON"):
        read_input(tmp_path / "x.json", spec((-1, 2)))


def test_unknown_file_type_is_refused_with_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(InputError) as info:
        read_input(tmp_path / "x.txt", spec((-1, 3)))
    assert ".npy" in str(info.value.hint)
