"""Batch predictions given awkward inputs (engine ``local``: the table is the same on any
engine): rows stay in input order when a file fails, odd file names are written, and no
answer is silently dropped."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

import persistkit
from persistkit.batch import predict_many

pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """clf:1, a classifier of rows of 3 numbers into the text labels 'big' and 'small'."""
    from sklearn.linear_model import LogisticRegression

    monkeypatch.setenv("PERSISTKIT_HOME", str(tmp_path / "home"))
    x = np.random.RandomState(0).rand(40, 3)
    model = LogisticRegression().fit(x, np.where(x[:, 0] > 0.5, "big", "small"))
    persistkit.Store(tmp_path / "store").save(model, "clf", example=x[:2])
    return tmp_path / "store"


def _rows(folder: Path, count: int) -> None:
    folder.mkdir()
    for index in range(count):
        np.save(folder / f"{index}.npy", np.full((1, 3), index / count))


def test_a_file_that_cannot_be_read_keeps_its_place_in_input_order(
    store: Path, tmp_path: Path
) -> None:
    _rows(tmp_path / "in", 4)
    (tmp_path / "in" / "1b.npy").write_bytes(b"not a .npy file")
    output = tmp_path / "out.parquet"
    predict_many("clf", tmp_path / "in", output=output, engine="local", store=store)
    table = pq.read_table(output).to_pydict()
    names = [os.path.basename(name) for name in table["input"]]
    assert names == ["0.npy", "1.npy", "1b.npy", "2.npy", "3.npy"]
    assert [error is not None for error in table["error"]] == [False, False, True, False, False]


def test_text_answers_without_a_label_column_are_never_dropped_silently(
    store: Path, tmp_path: Path
) -> None:
    _rows(tmp_path / "in", 2)
    output = tmp_path / "out.parquet"
    predict_many(
        "clf", tmp_path / "in", output=output, engine="local", store=store, method="predict"
    )
    table = pq.read_table(output).to_pydict()
    assert "label" not in table  # --method: the raw outputs only
    for outputs, error in zip(table["outputs"], table["error"]):
        assert outputs is not None or error is not None  # an answer, or why there is none


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_file_names_that_are_not_utf8_or_hold_newlines_are_written(
    store: Path, tmp_path: Path, suffix: str
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    odd = os.fsdecode(os.fsencode(folder) + b"/\xff odd.npy")  # not UTF-8: a surrogate escape
    np.save(odd, np.zeros((1, 3)))
    np.save(folder / 'comma, "quote"\nnewline.npy', np.ones((1, 3)))
    output = tmp_path / f"out{suffix}"
    report = predict_many("clf", folder, output=output, engine="local", store=store)
    assert (report.rows, report.failed) == (2, 0)
    if suffix == ".csv":
        with output.open(newline="", encoding="utf-8") as table:
            names = [row["input"] for row in csv.DictReader(table)]
    else:
        names = pq.read_table(output).to_pydict()["input"]
    assert sorted(os.path.basename(name) for name in names) == [
        "\\xff odd.npy",
        'comma, "quote"\nnewline.npy',
    ]
