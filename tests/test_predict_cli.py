"""`persistkit predict REF INPUT...`: pictures and data files in, predictions out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import persistkit
from persistkit.cli import main
from serve_helpers import Digits, digits, train_digits_model, write_png


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


@pytest.fixture
def model(data: Digits) -> Any:
    model = train_digits_model(data)
    persistkit.save(model, "digits", example=data.rows[:5])
    return model


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_digit_picture_gets_exactly_the_models_answer_on_its_pixels(
    model: Any, data: Digits, tmp_path: Path
) -> None:
    answers = []
    for index in range(20):
        png = write_png(data.pictures[index], tmp_path / f"{index}.png")
        result = run("predict", "digits", str(png), "--json")
        assert result.exit_code == 0, result.output
        answers.append(json.loads(result.output)["predictions"][0])
    assert answers == model.predict(data.rows[:20]).tolist()


def test_json_output_holds_one_prediction_per_item(
    model: Any, data: Digits, tmp_path: Path
) -> None:
    np.save(tmp_path / "batch.npy", data.rows[30:33])
    png = write_png(data.pictures[40], tmp_path / "one.png")
    result = run("predict", "digits", str(tmp_path / "batch.npy"), str(png), "--json")
    expected = model.predict(data.rows[[30, 31, 32, 40]]).tolist()
    assert json.loads(result.output) == {"predictions": expected}


def test_people_get_one_line_per_item_named_after_its_file(
    model: Any, data: Digits, tmp_path: Path
) -> None:
    png = write_png(data.pictures[7], tmp_path / "seven.png")
    (tmp_path / "rows.csv").write_text(
        "\n".join(",".join(str(v) for v in row) for row in data.rows[:2])
    )
    result = run("predict", "digits", str(png), str(tmp_path / "rows.csv"))
    first, second = model.predict(data.rows[:2])
    assert result.output.splitlines() == [
        f"{png}: {model.predict(data.rows[7:8])[0]}",
        f"{tmp_path / 'rows.csv'}[0]: {first}",
        f"{tmp_path / 'rows.csv'}[1]: {second}",
    ]


def test_method_option_picks_predict_proba(model: Any, data: Digits, tmp_path: Path) -> None:
    png = write_png(data.pictures[3], tmp_path / "three.png")
    result = run("predict", "digits", str(png), "--method", "predict_proba", "--json")
    assert json.loads(result.output)["predictions"] == model.predict_proba(data.rows[3:4]).tolist()


def test_store_option_and_version_ref_pick_the_model(data: Digits, tmp_path: Path) -> None:
    store = persistkit.Store(tmp_path / "elsewhere")
    store.save(lambda x: np.zeros(len(x), dtype=np.int64), "digits", example=data.rows[:2])
    store.save(lambda x: np.ones(len(x), dtype=np.int64), "digits", example=data.rows[:2])
    png = write_png(data.pictures[0], tmp_path / "zero.png")
    store_args = ["--store", str(tmp_path / "elsewhere"), "--trust", "--json"]
    first = run("predict", "digits:1", str(png), *store_args)
    latest = run("predict", "digits", str(png), *store_args)
    assert json.loads(first.output)["predictions"] == [0]
    assert json.loads(latest.output)["predictions"] == [1]


def test_a_file_that_does_not_fit_the_signature_fails_with_one_line(
    model: Any, tmp_path: Path
) -> None:
    np.save(tmp_path / "wrong.npy", np.zeros((2, 10)))
    result = CliRunner().invoke(main, ["predict", "digits", str(tmp_path / "wrong.npy")])
    assert result.exit_code == 1
    assert "wrong.npy has shape (2, 10)" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_file_that_is_no_picture_fails_cleanly(model: Any, tmp_path: Path) -> None:
    (tmp_path / "fake.png").write_bytes(b"GIF89a but not really")
    result = CliRunner().invoke(main, ["predict", "digits", str(tmp_path / "fake.png")])
    assert result.exit_code == 1
    assert "fake.png is not a picture" in result.output


def test_an_unknown_model_fails_cleanly(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 64)))
    result = CliRunner().invoke(main, ["predict", "nosuchmodel", str(tmp_path / "x.npy")])
    assert result.exit_code == 1
    assert "nosuchmodel" in result.output


def test_predict_without_inputs_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["predict", "digits"])
    assert result.exit_code == 2


def test_a_bad_image_size_is_a_usage_error(model: Any, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["predict", "digits", "x.png", "--image-size", "8by8"])
    assert result.exit_code == 2
