"""The first hour, item 8: the smaller surprises a new user met.

The demo's silent minute of ``pip install``; "is a 8"; ``--json`` indented in a pipe;
``bench --plot --no-memory`` drawing an empty memory panel; ``serve`` on a busy port failing
only after loading every model; ``Ctrl+C`` during ``save``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import persistkit
from persistkit.cli import main

ROOT = Path(__file__).resolve().parent.parent


# --- the demo -------------------------------------------------------------------------------


def test_demo_says_what_it_installs_before_the_silent_pip_run(tmp_path: Path) -> None:
    """Run scripts/demo.sh in a copy whose .venv python is a stub that records the pip call
    and stops the demo right after it."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "demo.sh", tmp_path / "scripts" / "demo.sh")
    stub = tmp_path / ".venv" / "bin" / "python"
    stub.parent.mkdir(parents=True)
    stub.write_text('#!/bin/sh\nif [ "$2" = pip ]; then echo "PIP RAN"; exit 0; fi\nexit 3\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    done = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "demo.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert "PIP RAN" in lines, done.stdout + done.stderr
    before = lines[: lines.index("PIP RAN")]
    assert any("installing persistkit" in line and "pip install" in line for line in before)


def _quickstart() -> Any:
    spec = importlib.util.spec_from_file_location("quickstart", ROOT / "examples/quickstart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("answer", "said"), [("8", "an 8"), ("3", "a 3"), ("0", "a 0"), ("18", "an 18")]
)
def test_quickstart_says_an_8(answer: str, said: str) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("PIL")
    assert _quickstart().with_article(answer) == said


# --- --json ---------------------------------------------------------------------------------


def test_json_is_one_compact_line_when_stdout_is_not_a_terminal(tmp_path: Path) -> None:
    persistkit.save(lambda x: np.zeros(len(x), dtype=np.int64), "zeros")
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    result = CliRunner().invoke(
        main, ["predict", "zeros", str(tmp_path / "x.npy"), "--json", "--trust"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == '{"predictions": [0, 0]}\n'  # exactly the README's line


def test_json_is_indented_at_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from persistkit.cli.options import print_json

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    print_json({"predictions": [0]})
    assert capsys.readouterr().out == '{\n  "predictions": [\n    0\n  ]\n}\n'


# --- bench --plot --no-memory ---------------------------------------------------------------


def test_bench_plot_without_memory_has_no_memory_panel(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    persistkit.save(lambda x: np.zeros(len(x)), "zeros", example=np.zeros((2, 3)))
    out = tmp_path / "bench.png"
    result = CliRunner().invoke(
        main,
        [
            *("bench", "zeros", "--backends", "cloudpickle", "--repeat", "1", "--no-memory"),
            *("--trust", "--plot", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as chart:
        assert chart.width == 3 * 400  # save, load, size: 4 inches each at 100 dpi


def test_bench_panels_include_memory_only_when_measured() -> None:
    from persistkit.bench import BackendResult, BenchReport, Spread

    timing = Spread(0.1, 0.1, 0.1)
    result = BackendResult("pickle", save=timing, load=timing, size_bytes=10, predict=timing)
    report = BenchReport("m", [result], repeat=1)
    assert [p[0] for p in report.plot_panels()] == ["save (ms)", "load (ms)", "size (MB)"]
    result.peak_load_mb = 3.0
    assert [p[0] for p in report.plot_panels()][-1] == "peak load memory (MB)"


# --- serve on a busy port -------------------------------------------------------------------


def test_serve_on_a_busy_port_fails_in_one_line_before_loading_any_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from persistkit.server.repository import ModelRepository

    def must_not_load(self: Any) -> None:
        raise AssertionError("models were loaded before the port was checked")

    monkeypatch.setattr(ModelRepository, "load", must_not_load)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "digits", "--port", str(port)])
    assert result.exit_code == 1
    assert f"127.0.0.1:{port}: the port is already in use" in result.output
    assert "--port" in result.output  # the hint
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2  # the error and its hint


def test_serve_checks_the_host_too() -> None:
    result = CliRunner().invoke(main, ["serve", "digits", "--host", "192.0.2.1", "--port", "8"])
    assert result.exit_code == 1
    assert "cannot serve on 192.0.2.1:8" in result.output


# --- Ctrl+C during save ---------------------------------------------------------------------


def _interrupt_while_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    import persistkit_pickle

    def save(model: Any, path: Path, options: dict[str, Any]) -> None:
        path.write_bytes(b"half a pickle")
        raise KeyboardInterrupt

    monkeypatch.setattr(persistkit_pickle.plugin, "save", save)


def _files_under(folder: Path) -> list[str]:
    return sorted(
        str(Path(root, name).relative_to(folder))
        for root, _dirs, files in os.walk(folder)
        for name in files
    )


def test_ctrl_c_during_save_to_a_path_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _interrupt_while_writing(monkeypatch)
    with pytest.raises(KeyboardInterrupt):  # Python's behaviour is kept
        persistkit.save({"a": 1}, tmp_path / "m", backend="pickle")
    assert list(tmp_path.iterdir()) == []  # no artifact, no staging folder


def test_ctrl_c_during_save_into_a_store_leaves_the_store_as_it_was(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = persistkit.Store(tmp_path / "store")
    store.save({"a": 1}, "m", backend="pickle")
    before = _files_under(tmp_path / "store")
    _interrupt_while_writing(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        store.save({"a": 2}, "m", backend="pickle")
    assert _files_under(tmp_path / "store") == before
    monkeypatch.undo()
    assert persistkit.load("m", store=store) == {"a": 1}
    assert [v.version for v in store.versions("m")] == [1]


def test_json_keyword_output_stays_valid_json(tmp_path: Path) -> None:
    """The compact line is still plain JSON for scripts."""
    persistkit.save({"a": 1}, "m", backend="pickle")
    result = CliRunner().invoke(main, ["ls", "--json"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1
    json.loads(result.stdout)
