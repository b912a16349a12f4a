"""`persistkit predict REF INPUT...`: pictures and data files in, predictions out."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import persistkit
from persistkit.cli import main
from persistkit.errors import PersistkitWarning
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
    # a classifier is saved with its classes as labels: each answer is the label it
    # predicts, scored by predict_proba on exactly those pixels
    assert [a["label"] for a in answers] == model.predict(data.rows[:20]).tolist()
    probabilities = model.predict_proba(data.rows[:20])
    for answer, row in zip(answers, probabilities):
        assert answer["score"] == row[answer["label"]]
        assert answer["scores"] == {str(c): p for c, p in enumerate(row.tolist())}


def test_json_output_holds_one_prediction_per_item(
    model: Any, data: Digits, tmp_path: Path
) -> None:
    np.save(tmp_path / "batch.npy", data.rows[30:33])
    png = write_png(data.pictures[40], tmp_path / "one.png")
    result = run("predict", "digits", str(tmp_path / "batch.npy"), str(png), "--json")
    expected = model.predict(data.rows[[30, 31, 32, 40]]).tolist()
    predictions = json.loads(result.output)["predictions"]
    assert [p["label"] for p in predictions] == expected
    raw = run("predict", "digits", str(tmp_path / "batch.npy"), str(png), "--json", "--raw")
    assert json.loads(raw.output) == {"predictions": expected}


def test_people_get_one_line_per_item_named_after_its_file(
    model: Any, data: Digits, tmp_path: Path
) -> None:
    png = write_png(data.pictures[7], tmp_path / "seven.png")
    (tmp_path / "rows.csv").write_text(
        "\n".join(",".join(str(v) for v in row) for row in data.rows[:2])
    )
    result = run("predict", "digits", str(png), str(tmp_path / "rows.csv"))
    rows = data.rows[[7, 0, 1]]
    labels, probabilities = model.predict(rows), model.predict_proba(rows)
    seven, first, second = (
        f"{label} ({probabilities[i][label]:.2f})" for i, label in enumerate(labels)
    )
    assert result.output.splitlines() == [
        f"{png}: {seven}",
        f"{tmp_path / 'rows.csv'}[0]: {first}",
        f"{tmp_path / 'rows.csv'}[1]: {second}",
    ]
    raw = run("predict", "digits", str(png), str(tmp_path / "rows.csv"), "--raw")
    assert raw.output.splitlines() == [
        f"{png}: {labels[0]}",
        f"{tmp_path / 'rows.csv'}[0]: {labels[1]}",
        f"{tmp_path / 'rows.csv'}[1]: {labels[2]}",
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


# --- answers and preprocessing -------------------------------------------------------------


def _drop_outputs_record(artifact: Path) -> None:
    """Make ``artifact`` look as if saved (and sealed) before outputs records existed."""
    from persistkit.manifest import Manifest
    from persistkit.safety import seal

    path = artifact / "persistkit.json"
    data = json.loads(path.read_text())
    del data["outputs"]
    manifest = Manifest.from_dict(data)
    manifest.seal = seal(manifest)
    path.write_text(manifest.to_json())


def test_an_old_manifest_without_outputs_prints_raw_numbers_as_before(
    data: Digits, tmp_path: Path
) -> None:
    model = train_digits_model(data)
    persistkit.save(model, tmp_path / "old", example=data.rows[:5])
    _drop_outputs_record(tmp_path / "old")
    png = write_png(data.pictures[7], tmp_path / "seven.png")
    result = run("predict", str(tmp_path / "old"), str(png))
    assert result.output == f"{png}: {model.predict(data.rows[7:8])[0]}\n"
    as_json = run("predict", str(tmp_path / "old"), str(png), "--json")
    assert json.loads(as_json.output) == {"predictions": model.predict(data.rows[7:8]).tolist()}


def test_an_iris_classifier_answers_its_class_and_probability(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    model = LogisticRegression(max_iter=1000).fit(iris.data, iris.target_names[iris.target])
    persistkit.save(model, "iris", example=iris.data[:5])
    np.save(tmp_path / "flowers.npy", iris.data[[0, 120]])
    result = run("predict", "iris", str(tmp_path / "flowers.npy"))
    p = model.predict_proba(iris.data[[0, 120]])
    assert result.output.splitlines() == [
        f"{tmp_path / 'flowers.npy'}[0]: setosa ({p[0, 0]:.2f})",
        f"{tmp_path / 'flowers.npy'}[1]: virginica ({p[1, 2]:.2f})",
    ]
    first = json.loads(run("predict", "iris", str(tmp_path / "flowers.npy"), "--json").output)
    assert first["predictions"][0] == {
        "label": "setosa",
        "score": p[0, 0],  # full floats in JSON
        "scores": dict(zip(["setosa", "versicolor", "virginica"], p[0].tolist())),
    }


def test_a_picture_model_answers_the_same_from_python_and_the_cli(tmp_path: Path) -> None:
    from serve_helpers import (
        COLOURS,
        channel_means,
        expected_picture_input,
        framed_picture,
        save_picture_model,
    )

    saved = save_picture_model(tmp_path / "colours")
    png = write_png(framed_picture(), tmp_path / "photo.png")
    logits = channel_means(expected_picture_input(framed_picture()))[0].astype(np.float64)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert COLOURS[int(np.argmax(logits))] == "red"  # the crop cut the blue bands off
    assert channel_means(expected_picture_input(framed_picture())).shape == (1, 3)

    with warnings.catch_warnings():
        # resize and crop are the model's own declared steps: nothing to warn about
        warnings.simplefilter("error", PersistkitWarning)
        raw = persistkit.predict(saved, str(png))
        [answer] = persistkit.answer(saved, png)
    assert np.array_equal(raw, channel_means(expected_picture_input(framed_picture())))
    assert answer.label == "red"
    assert answer.score == pytest.approx(probabilities[0], rel=1e-6)

    cli = run("predict", str(tmp_path / "colours"), str(png))
    assert cli.stdout == f"{png}: {answer}\n"
    assert cli.stdout.endswith(f"red ({probabilities[0]:.2f})\n")
    cli_json = json.loads(run("predict", str(tmp_path / "colours"), str(png), "--json").stdout)
    assert cli_json["predictions"] == [answer.to_dict()]
    assert "warnings" not in cli_json
    rgba = tmp_path / "photo-alpha.png"
    from PIL import Image

    Image.open(png).convert("RGBA").save(rgba)  # what the spec does not say is still told
    cli_json = json.loads(run("predict", str(tmp_path / "colours"), str(rgba), "--json").stdout)
    assert cli_json["warnings"] == ["photo-alpha.png: 24x16 RGBA -> 8x8 RGB (alpha dropped)"]


def test_outputs_that_do_not_fit_the_labels_fail_with_one_line(
    data: Digits, tmp_path: Path
) -> None:
    persistkit.save(
        lambda x: np.zeros((len(x), 3)),
        tmp_path / "m",
        example=data.rows[:2],
        labels=["a", "b", "c"],
    )
    path = tmp_path / "m" / "persistkit.json"
    manifest = json.loads(path.read_text())
    manifest["outputs"]["labels"] = ["a", "b", "c", "d"]
    path.write_text(json.dumps(manifest))
    np.save(tmp_path / "x.npy", data.rows[:1])
    result = CliRunner().invoke(
        main, ["predict", str(tmp_path / "m"), str(tmp_path / "x.npy"), "--trust"]
    )
    assert result.exit_code == 1
    assert "4 labels" in result.output and "shape (1, 3)" in result.output
    assert len(result.output.strip().splitlines()) <= 2  # the error and its hint
    raw = run("predict", str(tmp_path / "m"), str(tmp_path / "x.npy"), "--trust", "--raw")
    assert raw.output == f"{tmp_path / 'x.npy'}: 0 0 0\n"
