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
