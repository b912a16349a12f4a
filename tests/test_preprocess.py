"""Picture preprocessing as data: Hugging Face image-processor keys, applied by one pipeline
(convert, resize, center crop, rescale, normalize, layout) checked against numpy by hand."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from persistkit.errors import InputError, ManifestError
from persistkit.inputs import read_image
from persistkit.preprocess import DEFAULT_RESCALE, center_crop, checked_spec, resized_size
from persistkit.signature import TensorSpec


def png(picture: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def blocky_picture() -> np.ndarray:
    """8 wide, 6 high, RGB, built of 2x2 blocks whose values are v, v+2, v+2, v+4: a box
    filter halving it gives exactly v+2 per block, no rounding."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 250, size=(3, 4, 3)).astype(np.uint8)
    picture = np.repeat(np.repeat(base, 2, axis=0), 2, axis=1).astype(np.int64)
    picture[0::2, 1::2] += 2
    picture[1::2, 0::2] += 2
    picture[1::2, 1::2] += 4
    return picture.astype(np.uint8)


def test_pipeline_matches_numpy_by_hand_on_a_small_picture() -> None:
    picture = blocky_picture()
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    spec = checked_spec(
        {
            "size": {"shortest_edge": 3},  # 8x6 -> 4x3 (int(3 * 8 / 6) = 4)
            "resample": "box",
            "crop_size": {"height": 2, "width": 2},
            "do_rescale": True,
            "image_mean": mean,
            "image_std": std,
            "data_format": "channels_first",
        }
    )
    changes: list[str] = []
    batch = read_image(
        png(picture),
        TensorSpec("input-0", "FP32", (-1, 3, 2, 2)),
        preprocess=spec,
        source="small.png",
        changes=changes,
    )
    halved = picture.reshape(3, 2, 4, 2, 3).astype(np.float64).mean(axis=(1, 3))  # box filter
    middle = halved[0:2, 1:3]  # top = (3 - 2) // 2 = 0, left = (4 - 2) // 2 = 1
    expected = ((middle / 255 - mean) / std).transpose(2, 0, 1)[np.newaxis]
    assert batch.dtype == np.float32 and batch.shape == (1, 3, 2, 2)
    assert np.allclose(batch, expected, atol=1e-6)
    assert changes == []  # resize and crop are the spec's own steps, not news


@pytest.mark.parametrize(
    ("width", "height", "size", "expected"),
    [
        (640, 480, {"shortest_edge": 224}, (298, 224)),  # int(224 * 640 / 480) = 298
        (480, 640, {"shortest_edge": 224}, (224, 298)),
        (300, 300, {"shortest_edge": 224}, (224, 224)),
        (640, 480, {"height": 224, "width": 200}, (200, 224)),
    ],
)
def test_shortest_edge_keeps_the_aspect_ratio_as_hugging_face_does(
    width: int, height: int, size: dict[str, int], expected: tuple[int, int]
) -> None:
    assert resized_size(width, height, size) == expected


def test_resizing_is_bilinear_unless_the_spec_says_otherwise() -> None:
    from PIL import Image

    picture = np.random.default_rng(1).integers(0, 256, size=(10, 14, 3), dtype=np.uint8)
    spec = checked_spec({"size": {"height": 4, "width": 5}, "data_format": "channels_last"})
    assert spec is not None
    batch = read_image(png(picture), None, preprocess=spec)
    bilinear = np.asarray(Image.fromarray(picture).resize((5, 4), Image.Resampling.BILINEAR))
    # without a signature the picture comes as one item (no batch dimension)
    assert np.array_equal(batch, bilinear)  # no rescale or normalize: 0-255 values stay
    bicubic = read_image(png(picture), None, preprocess=checked_spec({**spec, "resample": 3}))
    assert not np.array_equal(bicubic, bilinear)


def test_center_crop_pads_a_smaller_picture_with_zeros_in_the_middle() -> None:
    pixels = np.full((2, 2, 1), 7, dtype=np.uint8)
    cropped = center_crop(pixels, {"height": 4, "width": 4})
    assert cropped[:, :, 0].tolist() == [[0, 0, 0, 0], [0, 7, 7, 0], [0, 7, 7, 0], [0, 0, 0, 0]]
    odd = center_crop(np.arange(25).reshape(5, 5, 1), {"height": 2, "width": 2})
    assert odd[:, :, 0].tolist() == [[6, 7], [11, 12]]  # offsets rounded down, like HF


def test_grayscale_conversion_and_a_flat_signature() -> None:
    picture = np.random.default_rng(2).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    spec = checked_spec({"do_convert_grayscale": True, "do_rescale": True})
    batch = read_image(png(picture), TensorSpec("x", "FP64", (-1, 16)), preprocess=spec)
    from PIL import Image

    gray = np.asarray(Image.fromarray(picture).convert("L"), dtype=np.float64)
    assert np.allclose(batch, (gray / 255).reshape(1, 16))


def test_without_resize_the_picture_is_fitted_to_the_signature_size() -> None:
    picture = np.full((10, 10), 255, dtype=np.uint8)
    spec = checked_spec({"do_rescale": False, "image_mean": 0.5, "image_std": 0.5})
    batch = read_image(png(picture), TensorSpec("x", "FP32", (-1, 4, 4)), preprocess=spec)
    assert batch.shape == (1, 4, 4) and np.allclose(batch, (255 - 0.5) / 0.5)


def test_normalizing_three_channels_of_a_grayscale_picture_is_refused() -> None:
    spec = checked_spec({"do_rescale": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    with pytest.raises(InputError, match="1 colour channel"):
        read_image(
            png(np.zeros((4, 4), np.uint8)), TensorSpec("x", "FP32", (-1, 4, 4)), preprocess=spec
        )


# --- the record ----------------------------------------------------------------------------


def test_do_rescale_without_a_factor_records_hugging_faces_one_over_255() -> None:
    assert checked_spec({"do_rescale": True}) == {
        "do_rescale": True,
        "rescale_factor": DEFAULT_RESCALE,
    }


def test_resample_is_recorded_as_pillows_number() -> None:
    assert checked_spec({"resample": "bicubic"}) == {"resample": 3}
    assert checked_spec({"resample": 2}) == {"resample": 2}
    with pytest.raises(InputError, match="resample"):
        checked_spec({"resample": "sharpest"})


def test_normalizing_without_saying_whether_to_rescale_is_refused_at_save() -> None:
    with pytest.raises(InputError, match="does not say whether pixels are rescaled") as info:
        checked_spec({"image_mean": [0.5], "image_std": [0.5]})
    assert "do_rescale" in (info.value.hint or "")
    # a manifest is read as written (it was checked when it was saved)
    assert checked_spec({"image_mean": [0.5], "image_std": [0.5]}, manifest=True)


@pytest.mark.parametrize(
    "spec",
    [
        {"do_magic": True},
        {"size": {"shortest_edge": 0}},
        {"image_mean": [0.5], "do_rescale": True},  # normalize needs image_std too
        {"do_resize": True},
        "resize please",
    ],
)
def test_bad_specs_are_refused_with_the_reason(spec: Any) -> None:
    with pytest.raises(InputError):
        checked_spec(spec)
    with pytest.raises(ManifestError):
        checked_spec(spec, manifest=True)


# --- the same numbers as Hugging Face, where transformers is installed --------------------


@pytest.mark.parametrize("processor", ["ViTImageProcessor", "ConvNextImageProcessor"])
def test_same_pixels_as_transformers_image_processors(processor: str) -> None:
    """Tolerance 1e-5 on normalized values: both resize with Pillow's bilinear filter on the
    same uint8 picture, so only float rounding differs (float32 vs float64 arithmetic)."""
    transformers = pytest.importorskip("transformers")
    picture = np.random.default_rng(3).integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    settings: dict[str, Any] = {
        "do_resize": True,
        "size": {"shortest_edge": 24}
        if processor == "ConvNextImageProcessor"
        else {"height": 24, "width": 24},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }
    hf_extra: dict[str, Any] = {}
    ours_extra: dict[str, Any] = {"data_format": "channels_first"}
    if processor == "ConvNextImageProcessor":
        # below 384, ConvNext resizes the shortest edge to size / crop_pct, then crops the
        # middle size x size: crop_pct 1.0 is our shortest_edge resize plus a center crop
        hf_extra["crop_pct"] = 1.0
        ours_extra["crop_size"] = {"height": 24, "width": 24}
    hf = getattr(transformers, processor)(**settings, **hf_extra)
    expected = hf(picture, return_tensors="np")["pixel_values"]
    ours = read_image(png(picture), None, preprocess=checked_spec({**settings, **ours_extra}))
    assert ours[np.newaxis].shape == expected.shape
    assert np.allclose(ours[np.newaxis], expected, atol=1e-5)
