"""`persistkit bench` and `persistkit.bench()`: every installed backend measured on the user's
model, as a table, as JSON of a fixed shape, and as a chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import persistkit
from persistkit.bench import BenchReport, example_from_signature
from persistkit.cli import main
from persistkit.errors import InputError
from sklearn_helpers import digits_model

PICKLE_FAMILY = {"pickle", "joblib", "cloudpickle", "dill"}
REQUIRED_KEYS = {
    "backend",
    "save_s",
    "load_s",
    "size_bytes",
    "peak_load_mb",
    "predict_ms",
    "identical",
}


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return digits_model()


@pytest.fixture(scope="module")  # ~10 s to make: the tests only read it
def quick_report(digits) -> BenchReport:  # type: ignore[no-untyped-def]
    model, _X, _y = digits
    return persistkit.bench(model, repeat=2, measure_memory=False)


def test_bench_measures_every_installed_backend_that_can_save_the_model(
    quick_report: BenchReport,
) -> None:
    installed = {b.name for b in persistkit.backends() if b.available}
    measured = {r.backend for r in quick_report.results if r.error is None}
    assert PICKLE_FAMILY & installed <= measured


def test_every_measured_backend_reports_times_size_and_identical_predictions(
    quick_report: BenchReport,
) -> None:
    for result in quick_report.measured:
        assert result.save and result.save.low <= result.save.median <= result.save.high
        assert result.load and result.load.median > 0
        assert result.size_bytes and result.size_bytes > 0
        assert result.predict and result.predict.median > 0
        assert result.identical is True


def test_without_an_example_one_is_generated_from_the_input_width(
    quick_report: BenchReport,
) -> None:
    assert quick_report.example.startswith("generated")


def test_backends_argument_limits_the_backends_tried(digits) -> None:  # type: ignore[no-untyped-def]
    model, _X, _y = digits
    report = persistkit.bench(model, backends=["pickle"], repeat=1, measure_memory=False)
    assert [r.backend for r in report.results] == ["pickle"]


def test_an_unknown_backend_is_an_input_error_naming_it(digits) -> None:  # type: ignore[no-untyped-def]
    model, _X, _y = digits
    with pytest.raises(InputError, match="nosuchformat"):
        persistkit.bench(model, backends=["nosuchformat"], measure_memory=False)


def test_a_backend_that_cannot_save_the_model_is_reported_not_fatal() -> None:
    model = lambda x: x  # noqa: E731  plain pickle cannot store a lambda
    report = persistkit.bench(
        model, backends=["pickle", "cloudpickle"], repeat=1, measure_memory=False
    )
    by_name = {r.backend: r for r in report.results}
    assert by_name["pickle"].error
    assert by_name["cloudpickle"].error is None


def test_a_backend_that_crashes_is_reported_and_the_others_still_run(
    digits, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import persistkit_dill

    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("dill plugin bug")

    monkeypatch.setattr(persistkit_dill.plugin, "save", crash)
    report = persistkit.bench(
        digits[0], backends=["dill", "pickle"], repeat=1, measure_memory=False
    )
    by_name = {r.backend: r for r in report.results}
    assert "dill plugin bug" in (by_name["dill"].error or "")
    assert by_name["pickle"].error is None


def test_repeat_below_one_is_refused(digits) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="repeat"):
        persistkit.bench(digits[0], repeat=0)


def test_bench_of_a_stored_ref_uses_the_stored_example(digits) -> None:  # type: ignore[no-untyped-def]
    model, X, _y = digits
    persistkit.save(model, "digits", example=X[:3])
    report = persistkit.bench("digits", backends=["pickle"], repeat=1, measure_memory=False)
    assert report.model == "digits:1"
    assert report.example == "stored with the model"
    assert report.results[0].identical is True


def test_the_peak_memory_of_a_load_is_measured_in_a_fresh_process(digits) -> None:  # type: ignore[no-untyped-def]
    report = persistkit.bench(digits[0], backends=["pickle"], repeat=1)
    peak = report.results[0].peak_load_mb
    assert peak is not None and peak >= 0


def test_progress_callback_hears_about_every_step(digits) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    persistkit.bench(
        digits[0],
        backends=["pickle", "joblib"],
        repeat=2,
        measure_memory=False,
        progress=lines.append,
    )
    assert sum("pickle" in line for line in lines) == 2
    assert sum("joblib" in line for line in lines) == 2


def test_bench_is_callable_after_its_module_is_imported_by_name(digits) -> None:  # type: ignore[no-untyped-def]
    import persistkit.bench as module

    report = persistkit.bench(digits[0], backends=["pickle"], repeat=1, measure_memory=False)
    assert isinstance(report, module.BenchReport)


def test_table_marks_the_best_backends(quick_report: BenchReport) -> None:
    table = quick_report.table()
    assert "*" in table
    for result in quick_report.results:
        assert result.backend in table


def test_an_example_is_generated_from_a_stored_signature() -> None:
    signature = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 3]}]}
    example = example_from_signature(signature)
    assert example.shape == (4, 3) and str(example.dtype) == "float32"


@pytest.mark.torch
def test_bench_measures_a_torch_model_with_torch_and_safetensors() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from torch_models import MLP

    report = persistkit.bench(
        MLP([8, 16, 3]), backends=["torch", "safetensors"], repeat=1, measure_memory=False
    )
    assert [r.backend for r in report.results] == ["torch", "safetensors"]
    assert all(r.error is None and r.identical is True for r in report.results), report.table()
    assert report.example.startswith("generated")


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def stored_digits(digits) -> str:  # type: ignore[no-untyped-def]
    model, X, _y = digits
    persistkit.save(model, "digits", example=X[:3])
    return "digits"


def test_cli_json_has_the_documented_shape(stored_digits: str) -> None:
    result = CliRunner().invoke(
        main,
        [
            "bench",
            stored_digits,
            "--backends",
            "pickle,joblib",
            "--repeat",
            "1",
            "--json",
            "--no-memory",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"model", "results"}
    assert data["model"] == "digits:1"
    assert [r["backend"] for r in data["results"]] == ["pickle", "joblib"]
    for row in data["results"]:
        assert set(row) >= REQUIRED_KEYS
        assert row["identical"] is True
        assert isinstance(row["size_bytes"], int)


def test_cli_prints_a_table_for_people(stored_digits: str) -> None:
    result = CliRunner().invoke(
        main, ["bench", stored_digits, "--backends", "pickle", "--repeat", "1", "--no-memory"]
    )
    assert result.exit_code == 0, result.output
    assert "backend" in result.output and "pickle" in result.output


def test_cli_plot_writes_a_png(stored_digits: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.png"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            stored_digits,
            "--backends",
            "pickle,joblib",
            "--repeat",
            "1",
            "--no-memory",
            "--plot",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_unknown_ref_is_one_error_line_and_exit_1() -> None:
    result = CliRunner().invoke(main, ["bench", "nosuchmodel", "--no-memory"])
    assert result.exit_code == 1
    assert "nosuchmodel" in result.output


def test_cli_repeat_zero_is_a_usage_error(stored_digits: str) -> None:
    result = CliRunner().invoke(main, ["bench", stored_digits, "--repeat", "0"])
    assert result.exit_code == 2
