"""Allowed classes with native code get checked arrays: crafted trees are refused."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import persistkit
from persistkit.errors import FormatError
from persistkit.safety import TrustPolicy


def _forest() -> Any:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    return RandomForestClassifier(n_estimators=2, max_depth=3, random_state=0).fit(X, X[:, 0] > 0)


def _with_nodes(forest: Any, edit: Any) -> bytes:
    """Pickle ``forest`` with its first tree's node array edited (as an attacker would)."""
    tree = forest.estimators_[0].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    edit(nodes)
    state["nodes"] = nodes
    from sklearn.tree._tree import Tree

    crafted = Tree(tree.n_features, np.asarray(tree.n_classes), tree.n_outputs)
    crafted.__setstate__(state)  # sklearn itself accepts it
    forest.estimators_[0].tree_ = crafted
    return pickle.dumps(forest, protocol=5)


@pytest.mark.parametrize(
    ("field", "value"),
    [("left_child", 10**6), ("right_child", 0), ("feature", 10**6), ("feature", -5)],
)
def test_crafted_tree_is_refused_before_predict(field: str, value: int) -> None:
    def edit(nodes: Any) -> None:
        nodes[field][0] = value

    with pytest.raises(FormatError, match="decision tree"):
        TrustPolicy().unpickle(io.BytesIO(_with_nodes(_forest(), edit)))


def test_crafted_tree_inside_an_object_array_is_refused() -> None:
    # gradient boosting keeps its trees in an object ndarray (estimators_)
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.tree._tree import Tree

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    model = GradientBoostingClassifier(n_estimators=2, max_depth=2, random_state=0)
    model.fit(X, X[:, 0] > 0)
    estimator = model.estimators_[0, 0]
    state = estimator.tree_.__getstate__()
    state["nodes"] = state["nodes"].copy()
    state["nodes"]["left_child"][0] = 10**6
    crafted = Tree(estimator.tree_.n_features, np.asarray([1]), 1)
    crafted.__setstate__(state)
    estimator.tree_ = crafted
    with pytest.raises(FormatError, match="decision tree"):
        TrustPolicy().unpickle(io.BytesIO(pickle.dumps(model)))


def test_a_crafted_tree_cannot_hide_behind_more_objects_than_are_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from persistkit.safety import native_checks

    def edit(nodes: Any) -> None:
        nodes["left_child"][0] = 10**6

    crafted_forest = pickle.loads(_with_nodes(_forest(), edit))
    monkeypatch.setattr(native_checks, "_MAX_VISITS", 100)
    payload = [crafted_forest, [[] for _ in range(200)]]  # the lists are visited first
    with pytest.raises(FormatError, match="too many to check"):
        TrustPolicy().unpickle(io.BytesIO(pickle.dumps(payload)))


def test_genuine_trees_pass_the_checks() -> None:
    forest = _forest()
    loaded = TrustPolicy().unpickle(io.BytesIO(pickle.dumps(forest)))
    X = np.zeros((2, 3))
    assert np.array_equal(loaded.predict(X), forest.predict(X))


def test_crafted_gradient_boosting_tree_is_refused() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    model = HistGradientBoostingRegressor(max_iter=3).fit(X, X[:, 0])
    model._predictors[0][0].nodes["left"][0] = 10**6
    with pytest.raises(FormatError, match="child links"):
        TrustPolicy().unpickle(io.BytesIO(pickle.dumps(model)))


@pytest.mark.parametrize("algorithm", ["kd_tree", "ball_tree"])
@pytest.mark.parametrize("part", ["idx_array", "node_end"])
def test_crafted_neighbours_tree_is_refused(algorithm: str, part: str) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    model = KNeighborsClassifier(algorithm=algorithm).fit(X, X[:, 0] > 0)
    state = list(model._tree.__getstate__())
    if part == "idx_array":
        state[1] = np.full_like(state[1], 10**7)
    else:
        nodes = state[2].copy()
        nodes["idx_end"][:] = 10**7
        state[2] = nodes
    model._tree.__setstate__(tuple(state))  # scikit-learn itself accepts it
    with pytest.raises(FormatError, match="nearest-neighbour tree"):
        TrustPolicy().unpickle(io.BytesIO(pickle.dumps(model)))


@pytest.mark.parametrize("algorithm", ["kd_tree", "ball_tree"])
def test_genuine_neighbours_trees_pass_the_checks(algorithm: str) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3))
    model = KNeighborsClassifier(algorithm=algorithm).fit(X, X[:, 0] > 0)
    loaded = TrustPolicy().unpickle(io.BytesIO(pickle.dumps(model)))
    assert np.array_equal(loaded.predict(X), model.predict(X))


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_matrix_with_out_of_range_indices_is_refused(fmt: str) -> None:
    import scipy.sparse as sp

    matrix = sp.random(5, 5, density=0.5, format=fmt, random_state=0)
    matrix.indices[:] = 10**7  # scipy's kernels would read out of bounds
    with pytest.raises(FormatError, match="sparse matrix"):
        TrustPolicy().unpickle(io.BytesIO(pickle.dumps({"components": matrix})))


def test_sparse_matrix_is_checked_in_a_process_without_scikit_learn() -> None:
    # the check must not depend on scikit-learn's tree modules having been imported already
    import subprocess
    import sys

    import scipy.sparse as sp

    matrix = sp.random(5, 5, density=0.5, format="csr", random_state=0)
    matrix.indices[:] = 10**7
    code = (
        "import io, sys\n"
        "from persistkit.errors import FormatError\n"
        "from persistkit.safety import TrustPolicy\n"
        "try:\n"
        "    TrustPolicy().unpickle(io.BytesIO(sys.stdin.buffer.read()))\n"
        "except FormatError as exc:\n"
        "    print(exc.message)\n"
        "print(sorted(m for m in sys.modules if m.startswith('sklearn')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(matrix), capture_output=True, check=True
    )
    refusal, sklearn_modules = result.stdout.decode().splitlines()
    assert "sparse matrix whose index arrays are invalid" in refusal
    assert sklearn_modules == "[]"


def test_genuine_sparse_matrix_loads() -> None:
    import scipy.sparse as sp

    matrix = sp.random(5, 5, density=0.5, format="csr", random_state=0)
    loaded = TrustPolicy().unpickle(io.BytesIO(pickle.dumps(matrix)))
    assert (loaded != matrix).nnz == 0


def test_a_structure_missing_its_parts_is_a_format_error(tmp_path: Path) -> None:
    # found by the grammar fuzzer (seed 26968): a csc_matrix made with no state at all made
    # scipy's own check raise AttributeError out of load and scan
    stream = (
        b"(csklearn.naive_bayes\nMultinomialNB\n(VMT19937\n1ccopyreg\n_reconstructor\n"
        b"(cscipy.sparse._csc\ncsc_matrix\ncbuiltins\nobject\nNtRNbp0\n"
        b"L9223372036854775807L\np1\nt."
    )
    path = tmp_path / "m.pkl"
    path.write_bytes(stream)
    with pytest.raises(FormatError, match="csc_matrix"):
        persistkit.load(path)
    from persistkit.safety import audit_file

    assert audit_file(path).error is not None
