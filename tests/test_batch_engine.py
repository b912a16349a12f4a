"""Batch predictions (persistkit.batch, ``persistkit predict --output``) on a real local Dask
cluster of two worker processes: answers, pictures, bad files, pinning, loads, resume."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import persistkit
from persistkit.batch import (
    BatchJob,
    InputFile,
    PartsFolder,
    expand_inputs,
    pin_model,
    predict_many,
    run_batch,
)
from persistkit.cli import main
from persistkit.engines import open_engine
from persistkit.errors import BatchError, EngineError, InputError
from sklearn_helpers import digits_model

pq = pytest.importorskip("pyarrow.parquet")
distributed = pytest.importorskip("distributed")

Digits = tuple[Any, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One persistkit home for the tests and the cluster's workers (they are started once,
    with the environment of that moment): models saved here are the workers' own."""
    return tmp_path_factory.mktemp("batch-home")


@pytest.fixture(autouse=True)
def _use_shared_home(
    isolated_home: Path, shared_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSISTKIT_HOME", str(shared_home))


@pytest.fixture(scope="module")
def cluster(shared_home: Path) -> Iterator[str]:
    """The address of a LocalCluster of two worker processes, one thread each."""
    saved = os.environ.get("PERSISTKIT_HOME")
    os.environ["PERSISTKIT_HOME"] = str(shared_home)
    try:
        local = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": ":0"},
            worker_dashboard_address=None,
        )
    finally:
        if saved is None:
            os.environ.pop("PERSISTKIT_HOME")
        else:
            os.environ["PERSISTKIT_HOME"] = saved
    yield local.scheduler_address
    local.close()


@pytest.fixture(scope="module")
def digits() -> Digits:
    return digits_model()


@pytest.fixture
def store(tmp_path: Path, digits: Digits) -> str:
    model, X, _ = digits
    url = str(tmp_path / "store")
    persistkit.Store(url).save(model, "digits", example=X[:5])
    return url


def npy_folder(folder: Path, X: np.ndarray, files: int, rows: int = 2) -> list[Path]:
    """``files`` .npy files of ``rows`` digits each, every other one in a subfolder."""
    written = []
    for i in range(files):
        path = folder / ("sub" if i % 2 else "") / f"x{i:03d}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, X[i * rows : (i + 1) * rows])
        written.append(path)
    return written


def read_rows(output: Path) -> list[dict[str, Any]]:
    return pq.read_table(output).to_pylist()  # type: ignore[no-any-return]


# --- on the cluster ------------------------------------------------------------------------


def test_npy_rows_answer_as_the_model_does_with_the_input_beside_each(
    cluster: str, store: str, digits: Digits, tmp_path: Path
) -> None:
    model, X, _ = digits
    npy_folder(tmp_path / "in", X, files=9, rows=3)
    output = tmp_path / "answers.parquet"
    report = predict_many(
        "digits",
        tmp_path / "in",
        output=output,
        engine="dask",
        address=cluster,
        store=store,
        partition_size=2,
    )
    rows = read_rows(output)
    assert (report.files, report.rows, report.failed, report.partitions) == (9, 27, 0, 5)
    assert len({(r["input"], r["item"]) for r in rows}) == 27
    for row in rows:
        i = int(Path(row["input"]).stem[1:]) * 3 + row["item"]
        probabilities = model.predict_proba(X[i : i + 1])[0]
        assert row["label"] == model.predict(X[i : i + 1])[0]
        assert row["scores"] == pytest.approx(probabilities.tolist())
        assert row["score"] == pytest.approx(probabilities.max())
        assert row["error"] is None
    labels = pq.read_schema(output).metadata[b"persistkit.labels"]
    assert json.loads(labels) == list(range(10))
    assert not PartsFolder(output).path.exists()  # merged, then removed


def test_a_bad_file_gets_an_error_row_and_the_run_goes_on(
    cluster: str, store: str, digits: Digits, tmp_path: Path
) -> None:
    _, X, _ = digits
    npy_folder(tmp_path / "in", X, files=4)
    (tmp_path / "in" / "broken.npy").write_bytes(b"not an array")
    np.save(tmp_path / "in" / "narrow.npy", X[:2, :10])  # 10 features, the model takes 64
    output = tmp_path / "answers.parquet"
    report = predict_many(
        "digits", tmp_path / "in", output=output, address=cluster, store=store, partition_size=3
    )
    rows = read_rows(output)
    errors = {Path(r["input"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"broken.npy", "narrow.npy"} and report.failed == 2
    assert "InputError" in errors["narrow.npy"]
    assert sum(1 for r in rows if r["error"] is None) == 8


def test_pictures_answer_into_a_csv_table(cluster: str, digits: Digits, tmp_path: Path) -> None:
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    _, X, y = digits
    pixels = X * 15  # 0-240: the 0-255 values a picture reader gives the model
    model = LogisticRegression(max_iter=300).fit(pixels[:300], y[:300])
    url = str(tmp_path / "store")
    persistkit.Store(url).save(model, "pictures", example=pixels[:3])
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(pixels[i].reshape(8, 8).astype(np.uint8)).save(folder / f"{i}.png")
    (folder / "torn.png").write_bytes(b"\x89PNG not really")
    output = tmp_path / "answers.csv"
    report = predict_many(
        "pictures", folder, output=output, address=cluster, store=url, partition_size=4
    )
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert report.rows == 7 and report.failed == 1
    answers = {r["input"]: r for r in rows}
    for i in range(6):
        row = answers[str(folder / f"{i}.png")]
        assert int(row["label"]) == model.predict(pixels[i : i + 1])[0]
        assert json.loads(row["scores"]) == pytest.approx(model.predict_proba(pixels[i : i + 1])[0])
    assert "not a picture" in answers[str(folder / "torn.png")]["error"]


def test_each_worker_process_loads_the_model_once(
    cluster: str, store: str, digits: Digits, tmp_path: Path
) -> None:
    _, X, _ = digits
    npy_folder(tmp_path / "in", X, files=12, rows=1)
    first, again = (
        predict_many(
            "digits", tmp_path / "in", output=tmp_path / name, address=cluster, store=store,
            partition_size=1,
        )
        for name in ("a.parquet", "b.parquet")
    )  # fmt: skip
    assert first.computed == 12 and 1 <= first.workers <= 2
    assert first.model_loads == first.workers  # once per process, not once per partition
    assert again.model_loads == 0  # the workers kept it


def test_the_version_is_pinned_when_the_run_starts_even_if_the_alias_moves(
    cluster: str, digits: Digits, tmp_path: Path
) -> None:
    from sklearn.dummy import DummyClassifier

    model, X, y = digits
    store = persistkit.Store(str(tmp_path / "store"))
    store.save(model, "digits", example=X[:5])
    store.alias("digits:1", "prod")
    npy_folder(tmp_path / "in", X, files=4)
    pin, _ = pin_model("digits@prod", store.url, remote=True)
    constant = DummyClassifier(strategy="constant", constant=7).fit(X, y)
    store.save(constant, "digits", example=X[:5])
    store.alias("digits:2", "prod")  # moved after the run resolved its model
    files = expand_inputs([tmp_path / "in"])
    with open_engine("dask", address=cluster) as engine:
        run_batch(BatchJob(pin), files, tmp_path / "out.parquet", engine, partition_size=2)
    rows = read_rows(tmp_path / "out.parquet")
    positions = [int(Path(r["input"]).stem[1:]) * 2 + r["item"] for r in rows]
    assert [r["label"] for r in rows] == model.predict(X[positions]).tolist()
    assert pq.read_schema(tmp_path / "out.parquet").metadata[b"persistkit.model"] == b"digits:1"


def test_trust_reaches_the_workers_and_a_model_without_labels_gives_its_raw_outputs(
    cluster: str, digits: Digits, tmp_path: Path
) -> None:
    import pickle

    from persistkit.errors import UntrustedArtifactError
    from sklearn_helpers import double

    _, X, _ = digits
    model_file = tmp_path / "double.pkl"  # a bare pickle of a function: code, so not trusted
    model_file.write_bytes(pickle.dumps(double))
    npy_folder(tmp_path / "in", X, files=3)
    output = tmp_path / "out.parquet"
    options: dict[str, Any] = {"output": output, "address": cluster, "partition_size": 2}
    with pytest.raises(UntrustedArtifactError):
        predict_many(str(model_file), tmp_path / "in", **options)
    predict_many(str(model_file), tmp_path / "in", trusted=["sklearn_helpers.double"], **options)
    table = pq.read_table(output)
    assert table.column_names == ["input", "item", "outputs", "error"]
    for row in table.to_pylist():
        i = int(Path(row["input"]).stem[1:]) * 2 + row["item"]
        assert row["outputs"] == (X[i] * 2).tolist()


class CountingEngine:
    """A real engine that notes which partitions it was asked to compute."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.name, self.slots = engine, engine.name, engine.slots
        self.computed: list[int] = []

    def map_unordered(self, function: Callable[..., Any], tasks: Any, *, window: int) -> Any:
        tasks = list(tasks)
        self.computed += [index for _, index, _ in tasks]
        return self.engine.map_unordered(function, tasks, window=window)

    def describe(self) -> str:
        return str(self.engine.describe())


FILES = 120


def test_a_run_killed_mid_way_resumes_without_recomputing_finished_partitions(
    cluster: str, store: str, digits: Digits, tmp_path: Path
) -> None:
    _, X, _ = digits
    npy_folder(tmp_path / "in", X, files=FILES, rows=1)
    output = tmp_path / "answers.parquet"
    command = [
        str(Path(sys.executable).parent / "persistkit"), "predict", "digits", str(tmp_path / "in"),
        "--store", store, "--engine", "dask", "--workers", "2", "--output", str(output),
        "--partition-size", "1",
    ]  # fmt: skip
    parts = PartsFolder(output)
    driver = subprocess.Popen(command, start_new_session=True, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and driver.poll() is None:
            if parts.path.is_dir() and len(parts.finished()) >= 3:
                break
            time.sleep(0.01)
        os.kill(driver.pid, signal.SIGKILL)  # the driver only: its workers notice and exit
        driver.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever it started, if any is left
            os.killpg(driver.pid, signal.SIGKILL)
    finished = parts.finished()
    assert 3 <= len(finished) < FILES and not output.exists(), driver.stderr.read()  # type: ignore[union-attr]
    torn = parts.path / f".tmp-1-part-{FILES - 1:05d}.parquet"  # as a write cut short leaves
    torn.write_bytes(b"PAR1 cut")
    pin, _ = pin_model("digits", store, remote=True)
    files = expand_inputs([tmp_path / "in"])
    with open_engine("dask", address=cluster) as engine:
        counting = CountingEngine(engine)
        report = run_batch(BatchJob(pin), files, output, counting, partition_size=1, resume=True)  # type: ignore[arg-type]
    assert sorted(counting.computed) == sorted(set(range(FILES)) - finished)
    assert (report.resumed, report.computed) == (len(finished), FILES - len(finished))
    inputs = [r["input"] for r in read_rows(output)]
    assert sorted(inputs) == sorted(f.shown for f in files) and len(set(inputs)) == FILES


def test_without_an_address_a_local_cluster_is_started_and_closed(
    store: str, digits: Digits, tmp_path: Path
) -> None:
    import psutil

    _, X, _ = digits
    npy_folder(tmp_path / "in", X, files=3)

    def workers() -> set[int]:  # multiprocessing's resource tracker stays: it is not one
        found = set()
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):  # it may end while we look
                if "spawn_main" in " ".join(child.cmdline()):
                    found.add(child.pid)
        return found

    before = workers()
    result = CliRunner().invoke(
        main,
        ["predict", "digits", str(tmp_path / "in"), "--store", store, "--engine", "dask",
         "--workers", "1", "--output", str(tmp_path / "out.parquet"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["rows"], report["workers"], report["model_loads"]) == (6, 1, 1)
    assert "local cluster" in report["engine"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = workers() - before
        if not left:
            break
        time.sleep(0.1)
    assert not left  # its worker process is gone


# --- without a cluster ---------------------------------------------------------------------


def test_parts_of_another_run_are_not_mixed_in(store: str, digits: Digits, tmp_path: Path) -> None:
    _, X, _ = digits
    npy_folder(tmp_path / "in", X, files=4)
    output = tmp_path / "answers.parquet"
    PartsFolder(output).open({"format": "persistkit-batch/1", "partition_size": 7}, resume=False)
    with pytest.raises(BatchError, match="another run") as caught:
        predict_many("digits", tmp_path / "in", output=output, engine="local", store=store)
    assert "remove" in str(caught.value.hint)


def test_a_model_file_replaced_after_the_run_started_is_refused(
    digits: Digits, tmp_path: Path
) -> None:
    import joblib

    model, X, _ = digits
    model_file = tmp_path / "model.joblib"
    joblib.dump(model, model_file)
    np.save(tmp_path / "x.npy", X[:2])
    pin, _ = pin_model(str(model_file))
    joblib.dump(model, model_file)  # replaced (same content, another file)
    os.utime(model_file, ns=(time.time_ns(), time.time_ns() + 10**9))
    with open_engine("local") as engine, pytest.raises(BatchError, match="changed"):
        run_batch(BatchJob(pin), expand_inputs([tmp_path / "x.npy"]), tmp_path / "o.csv", engine)


def test_an_output_inside_the_input_folder_is_not_read_as_an_input(
    store: str, digits: Digits, tmp_path: Path
) -> None:
    _, X, _ = digits
    npy_folder(tmp_path / "in", X, files=3)
    output = tmp_path / "in" / "answers.csv"
    PartsFolder(output).path.mkdir()  # as a run cut short leaves it, manifest.json to come
    reports = [
        predict_many("digits", tmp_path / "in", output=output, engine="local", store=store)
        for _ in range(2)
    ]
    assert [r.files for r in reports] == [3, 3] and reports[1].failed == 0


def test_resume_without_an_earlier_run_is_refused(store: str, tmp_path: Path) -> None:
    (tmp_path / "x.npy").write_bytes(b"")
    with pytest.raises(BatchError, match="no run to resume"):
        predict_many(
            "digits",
            tmp_path / "x.npy",
            output=tmp_path / "o.csv",
            engine="local",
            store=store,
            resume=True,
        )


def test_an_unknown_engine_names_the_ones_there_are(store: str, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 64)))
    with pytest.raises(EngineError, match="unknown engine 'ray'") as caught:
        predict_many(
            "digits", tmp_path / "x.npy", output=tmp_path / "o.csv", engine="ray", store=store
        )
    assert "dask" in str(caught.value.hint)


def test_a_memory_store_is_refused_for_worker_processes(digits: Digits, tmp_path: Path) -> None:
    model, X, _ = digits
    store = persistkit.Store("memory://batch-test")
    store.save(model, "digits", example=X[:5])
    np.save(tmp_path / "x.npy", X[:2])
    with pytest.raises(BatchError, match="memory://"):
        predict_many("digits", tmp_path / "x.npy", output=tmp_path / "o.csv", store=store)
    report = predict_many(
        "digits", tmp_path / "x.npy", output=tmp_path / "o.csv", store=store, engine="local"
    )
    assert report.rows == 2  # this process sees it


def test_dask_engine_without_dask_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    with pytest.raises(EngineError, match="not installed") as caught:
        open_engine("dask")
    assert caught.value.hint == 'pip install "persistkit[batch]"'


def test_cli_writes_the_table_and_prints_the_report(
    store: str, digits: Digits, tmp_path: Path
) -> None:
    _, X, _ = digits
    npy_folder(tmp_path / "in", X, files=3)
    output = tmp_path / "answers.csv"
    result = CliRunner().invoke(
        main,
        ["predict", "digits", str(tmp_path / "in"), "--store", store, "--output", str(output),
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["rows"], report["files"], report["failed"]) == (6, 3, 0)
    assert output.read_text().splitlines()[0].split(",")[:3] == ['"input"', '"item"', '"label"']


def test_cli_batch_options_need_an_output(store: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["predict", "digits", str(tmp_path), "--engine", "dask"])
    assert result.exit_code == 2 and "needs --output" in result.output


def test_cli_refuses_an_engine_it_does_not_have(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["predict", "digits", str(tmp_path), "--engine", "ray", "--output", "o.csv"]
    )
    assert result.exit_code == 2 and "'ray' is not one of 'local', 'dask'" in result.output


def test_progress_counts_partitions_on_a_terminal() -> None:
    import io

    from persistkit.progress import CountProgress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    with CountProgress("predict", 4, unit="partitions", stream=screen) as bar:
        for _ in range(4):
            bar.update(1)
    assert f"predict [{'#' * 24}] 4/4 partitions" in screen.getvalue()
    assert screen.getvalue().endswith("/s\n")


def test_folders_globs_and_lists_expand_to_each_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    for name in ["a/1.npy", "a/deep/2.png", "a/notes.txt", "a/.3.npy", "a/.hidden/4.npy"]:
        (tmp_path / name).write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text("# inputs\na/1.npy\n\na/deep/*.png\n")
    monkeypatch.chdir(tmp_path)
    found = expand_inputs(["a", str(tmp_path / "a" / "**" / "*.npy"), f"@{listing}"])
    assert [f.shown for f in found] == ["a/1.npy", "a/deep/2.png"]
    assert found[0] == InputFile("a/1.npy", str(tmp_path / "a" / "1.npy"))
    with pytest.raises(InputError, match="does not exist"):
        expand_inputs(["missing.npy"])
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs(["a/*.csv"])


def test_plain_predict_imports_no_batch_machinery() -> None:
    code = (
        "import sys, persistkit.cli; "
        "print(sorted(m for m in ('dask', 'distributed', 'pyarrow', 'persistkit.batch') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
