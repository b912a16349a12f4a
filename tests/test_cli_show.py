"""`persistkit show` for people: the manifest's fields line up in one column."""

from __future__ import annotations

from click.testing import CliRunner

import persistkit
from persistkit.cli import main
from sklearn_helpers import tiny_forest


def test_show_aligns_the_signature_with_the_other_fields() -> None:
    model, X = tiny_forest()
    persistkit.save(model, "forest", example=X[:2])
    result = CliRunner().invoke(main, ["show", "forest"])
    assert result.exit_code == 0, result.output
    lines = {line.split(":")[0]: line for line in result.output.splitlines()}
    column = lines["backend"].index("joblib")
    assert lines["input"].index("input-0") == column
    assert lines["output"].index("output-0") == column


def test_show_says_what_the_answers_are_and_how_pictures_are_read() -> None:
    model, X = tiny_forest()
    persistkit.save(
        model,
        "forest",
        example=X[:2],
        preprocess={"do_resize": True, "size": {"height": 8, "width": 8}},
    )
    result = CliRunner().invoke(main, ["show", "forest"])
    assert result.exit_code == 0, result.output
    assert "answers:    labels of 0, 1" in result.output  # the classifier's classes_
    assert "preprocess: do_resize=True, size={'height': 8, 'width': 8}" in result.output
    assert "checked:" not in result.output  # joblib stores the object; nothing was converted


def test_show_reports_a_conversion_check(tmp_path: object) -> None:
    import pytest

    pytest.importorskip("onnxruntime")
    model, X = tiny_forest()
    persistkit.save(model, "forest", example=X[:4], backend="onnx")
    result = CliRunner().invoke(main, ["show", "forest"])
    assert "checked:    4 example items, identical" in result.output
