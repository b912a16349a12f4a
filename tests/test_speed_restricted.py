"""The restricted joblib reader builds arrays as views of the file's bytes it read (one copy of
the data, as ``joblib.load`` makes), never a second copy per array; what it hands out stays
what the stream says: ``bytes`` stay ``bytes``, arrays are writable and independent."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

import persistkit


def _root(array: np.ndarray) -> Any:
    """The object at the end of an array's ``base`` chain."""
    base: Any = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base


def _load(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return persistkit.load(path)  # a bare file: no seal, so the restricted reader


@pytest.fixture
def dumped(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    rng = np.random.default_rng(0)
    value = {
        "weights": rng.normal(size=(300, 40)),
        "counts": np.arange(1000, dtype=np.int64),
        "fortran": np.asfortranarray(rng.normal(size=(30, 7))),
        "small": np.array([1.5, 2.5], dtype=np.float32),
        "raw": b"\x00\x01 bytes stay bytes",
        "text": "text",
    }
    path = tmp_path / "model.joblib"
    joblib.dump(value, path)
    return path, value


def test_arrays_are_views_of_the_bytes_read_not_copies(
    dumped: tuple[Path, dict[str, Any]],
) -> None:
    path, value = dumped
    got = _load(path)
    for key in ("weights", "counts", "fortran"):
        np.testing.assert_array_equal(got[key], value[key])
        assert got[key].flags.writeable
        assert not isinstance(_root(got[key]), np.ndarray), key  # a view of the read buffer
    assert got["fortran"].flags.f_contiguous


def test_the_views_are_independent_and_bytes_stay_bytes(
    dumped: tuple[Path, dict[str, Any]],
) -> None:
    path, value = dumped
    got = _load(path)
    got["weights"][:] = 0.0
    np.testing.assert_array_equal(got["counts"], value["counts"])
    np.testing.assert_array_equal(got["small"], value["small"])
    assert type(got["raw"]) is bytes and got["raw"] == value["raw"]
    assert got["text"] == "text"
    again = _load(path)  # a second load reads its own buffer
    np.testing.assert_array_equal(again["weights"], value["weights"])


def test_a_compressed_file_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    array = np.arange(5000, dtype=np.float64)
    joblib.dump({"a": array}, path, compress=3)
    got = _load(path)
    np.testing.assert_array_equal(got["a"], array)
    assert got["a"].flags.writeable
