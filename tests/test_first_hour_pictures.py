"""The first hour, item 6: a picture that does not match the model's input is changed, and the
user is told what was done; ``--fit crop|pad|stretch`` decides how the aspect ratio is met.

A new user fed a 20x12 RGBA picture to a model of 8x8 grayscale digits: it was squashed and
converted without a word.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import persistkit
from persistkit.cli import main
from persistkit.errors import InputError
from persistkit.inputs import read_image
from persistkit.signature import Signature
from serve_helpers import Digits, digits, train_digits_model, write_png


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


@pytest.fixture
def model(data: Digits) -> Any:
    model = train_digits_model(data)
    persistkit.save(model, "digits", example=data.rows[:5])
    return model


def _digits_spec(data: Digits) -> Any:
    return Signature.from_manifest(persistkit.inspect("digits").signature).input


def _rgba_picture(path: Path) -> Path:
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, size=(12, 20, 4), dtype=np.uint8)  # 20 wide, 12 high
    return write_png(picture, path)


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_changed_picture_gets_one_line_on_stderr(model: Any, tmp_path: Path) -> None:
    png = _rgba_picture(tmp_path / "one.png")
    result = run("predict", "digits", str(png))
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "note: one.png: 20x12 RGBA -> 8x8 grayscale (stretched, alpha dropped)"
    ]
    assert result.stdout.startswith(f"{png}: ")


def test_json_output_carries_the_warnings(model: Any, tmp_path: Path) -> None:
    png = _rgba_picture(tmp_path / "one.png")
    result = run("predict", "digits", str(png), "--json", "--fit", "crop")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["warnings"] == [
        "one.png: 20x12 RGBA -> 8x8 grayscale (center-cropped, alpha dropped)"
    ]
    assert len(answer["predictions"]) == 1


def test_a_picture_that_fits_is_given_as_it_is_without_a_word(
    model: Any, data: Digits, tmp_path: Path
) -> None:
    png = write_png(data.pictures[3], tmp_path / "three.png")
    result = run("predict", "digits", str(png), "--json")
    assert result.stderr == ""
    assert "warnings" not in json.loads(result.stdout)


def test_crop_keeps_the_center_at_the_target_aspect(model: Any, data: Digits) -> None:
    digit = data.pictures[5]
    wide = np.concatenate([np.full((8, 8), 255, np.uint8), digit, np.zeros((8, 8), np.uint8)], 1)
    changes: list[str] = []
    batch = read_image(
        _png_bytes(wide), _digits_spec(data), fit="crop", source="wide.png", changes=changes
    )
    assert batch.reshape(8, 8).tolist() == digit.astype(batch.dtype).tolist()
    assert changes == ["wide.png: 24x8 L -> 8x8 grayscale (center-cropped)"]


def test_pad_fits_the_whole_picture_inside_and_pads_with_black(model: Any, data: Digits) -> None:
    half = np.full((4, 8), 200, np.uint8)  # 8 wide, 4 high
    changes: list[str] = []
    batch = read_image(_png_bytes(half), _digits_spec(data), fit="pad", changes=changes)
    pixels = batch.reshape(8, 8)
    assert (pixels[2:6] == 200).all()
    assert (pixels[:2] == 0).all() and (pixels[6:] == 0).all()
    assert changes == ["the picture: 8x4 L -> 8x8 grayscale (padded with black)"]


def test_same_aspect_is_only_resized(model: Any, data: Digits) -> None:
    changes: list[str] = []
    read_image(_png_bytes(np.zeros((16, 16), np.uint8)), _digits_spec(data), changes=changes)
    assert changes == ["the picture: 16x16 L -> 8x8 grayscale (resized)"]


def test_colour_to_grayscale_is_reported_even_at_the_right_size(model: Any, data: Digits) -> None:
    changes: list[str] = []
    read_image(_png_bytes(np.zeros((8, 8, 3), np.uint8)), _digits_spec(data), changes=changes)
    assert changes == ["the picture: 8x8 RGB -> 8x8 grayscale"]


def test_unknown_fit_is_an_error(model: Any, data: Digits) -> None:
    with pytest.raises(InputError, match="unknown fit"):
        read_image(_png_bytes(np.zeros((8, 8), np.uint8)), _digits_spec(data), fit="zoom")


def test_cli_refuses_an_unknown_fit(model: Any, tmp_path: Path) -> None:
    png = _rgba_picture(tmp_path / "one.png")
    result = CliRunner().invoke(main, ["predict", "digits", str(png), "--fit", "zoom"])
    assert result.exit_code == 2
    assert "'zoom' is not one of" in result.output


def _png_bytes(picture: np.ndarray) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(picture).save(out, format="PNG")
    return out.getvalue()
