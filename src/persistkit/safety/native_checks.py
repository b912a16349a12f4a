"""Checks on loaded objects whose native (Cython) code trusts the arrays it was given.

The allow-list decides which classes a payload may build; it cannot stop a payload from
handing an allowed class arrays that its compiled code indexes without bounds checks. A
scikit-learn decision tree whose child index points past its node array makes ``predict``
read out of bounds (a crash, or worse); one whose children point backwards makes it loop
forever. After an untrusted load, every tree reachable from the result is checked: children
of a node come after it and inside the node array, split features exist, and the value array
has one row per node. KD and ball trees (nearest neighbours) get their index and node arrays
checked the same way, and scipy sparse matrices go through scipy's own full format check
(their index arrays feed C++ kernels unchecked). Other native structures (distance metrics,
Cython loss objects) are not checked yet; ``docs/security.md`` lists that limit.
"""

from __future__ import annotations

from typing import Any

from persistkit.errors import FormatError, LibraryRejectedError, Trust

_MAX_VISITS = 1_000_000


def check_native_structures(root: Any, *, what: str) -> None:
    """Raise :class:`FormatError` if a native structure reachable from ``root`` is malformed."""
    import sys

    # only classes already imported can be in ``root``: look them up, never import them
    tree_type = getattr(sys.modules.get("sklearn.tree._tree"), "Tree", None)
    predictor_type = getattr(
        sys.modules.get("sklearn.ensemble._hist_gradient_boosting.predictor"),
        "TreePredictor",
        None,
    )
    binary_tree_types = tuple(
        getattr(sys.modules[name], base)
        for name in ("sklearn.neighbors._kd_tree", "sklearn.neighbors._ball_tree")
        if name in sys.modules
        for base in ("BinaryTree32", "BinaryTree64")
        if hasattr(sys.modules[name], base)
    )
    sparse_module = sys.modules.get("scipy.sparse")
    sparse_types = (
        (sparse_module.sparray, sparse_module.spmatrix) if sparse_module is not None else ()
    )
    if tree_type is None and predictor_type is None and not binary_tree_types + sparse_types:
        return  # nothing loaded can hold a checked structure
    for obj, owner in _reachable(root, what):
        try:
            if tree_type is not None and isinstance(obj, tree_type):
                _check_tree(obj, what)
            elif predictor_type is not None and isinstance(obj, predictor_type):
                _check_predictor(obj, owner, what)
            elif binary_tree_types and isinstance(obj, binary_tree_types):
                _check_binary_tree(obj, what)
            elif sparse_types and isinstance(obj, sparse_types):
                _check_sparse(obj, what)
        except FormatError:
            raise
        except Exception as exc:  # a structure missing its parts cannot even be checked
            raise LibraryRejectedError(
                f"the {what} holds a {type(obj).__qualname__} that is incomplete or malformed "
                f"({type(exc).__name__}: {exc})",
                remedies=(Trust(),),
            ) from None


def _reachable(root: Any, what: str) -> Any:
    """Objects reachable through containers, object arrays and instance ``__dict__``s, with
    the object whose attribute held them (so a predictor can be checked against its
    estimator)."""
    import numpy as np

    leaves = (str, bytes, int, float, np.generic)
    seen: set[int] = set()
    todo: list[tuple[Any, Any]] = [(root, None)]
    visits = 0
    while todo:
        obj, owner = todo.pop()
        if isinstance(obj, leaves) or id(obj) in seen:
            continue
        if isinstance(obj, np.ndarray) and obj.dtype != object:
            continue
        seen.add(id(obj))
        visits += 1
        if visits > _MAX_VISITS:
            # stopping here would leave whatever comes next unchecked
            raise FormatError(
                f"the {what} holds more than {_MAX_VISITS} objects, too many to check",
                remedies=(Trust(),),
            )
        if isinstance(obj, np.ndarray):  # gradient boosting keeps its trees in one
            todo.extend((v, owner) for v in obj.flat if not isinstance(v, leaves))
            continue
        yield obj, owner
        if isinstance(obj, dict):
            todo.extend((v, owner) for v in obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo.extend((v, owner) for v in obj)
        else:
            attrs = getattr(obj, "__dict__", None)
            if isinstance(attrs, dict):
                todo.extend((v, obj) for v in attrs.values())


def _check_children(left: Any, right: Any, internal: Any, what: str) -> None:
    import numpy as np

    n = len(left)
    index = np.arange(n)
    ok_internal = (left > index) & (left < n) & (right > index) & (right < n)
    if not bool(np.all(ok_internal[internal])):
        raise FormatError(
            f"the {what} holds a decision tree whose child links point outside the tree "
            "(predicting with it would read out of bounds)",
            hint="the file was crafted or damaged; it is refused",
        )


def _check_tree(tree: Any, what: str) -> None:
    import numpy as np

    n = int(tree.node_count)
    left = np.asarray(tree.children_left)
    right = np.asarray(tree.children_right)
    feature = np.asarray(tree.feature)
    leaf = (left == -1) & (right == -1)
    if len(left) != n or len(right) != n or len(feature) != n or tree.value.shape[0] != n:
        raise FormatError(f"the {what} holds a decision tree with inconsistent array sizes")
    _check_children(left, right, ~leaf, what)
    internal_features = feature[~leaf]
    if internal_features.size and (
        internal_features.min() < 0 or internal_features.max() >= int(tree.n_features)
    ):
        raise FormatError(f"the {what} holds a decision tree that splits on a missing feature")


def _check_predictor(predictor: Any, owner: Any, what: str) -> None:
    import numpy as np

    nodes = getattr(predictor, "nodes", None)
    if not isinstance(nodes, np.ndarray) or nodes.dtype.names is None:
        raise FormatError(f"the {what} holds a gradient-boosting tree without its node array")
    internal = ~nodes["is_leaf"].astype(bool)
    _check_children(nodes["left"].astype(np.int64), nodes["right"].astype(np.int64), internal, what)
    features = nodes["feature_idx"][internal]
    n_features = getattr(owner, "n_features_in_", None)
    if features.size and (
        features.min() < 0 or (isinstance(n_features, int) and features.max() >= n_features)
    ):
        raise FormatError(
            f"the {what} holds a gradient-boosting tree that splits on a missing feature"
        )


def _check_binary_tree(tree: Any, what: str) -> None:
    import numpy as np

    data, idx_array, node_data, node_bounds = (np.asarray(a) for a in tree.get_arrays())
    n_samples = data.shape[0] if data.ndim == 2 else -1
    n_nodes = len(node_data)
    bad = (
        n_samples < 0
        or len(idx_array) != n_samples
        or (idx_array.size and (idx_array.min() < 0 or idx_array.max() >= n_samples))
        or node_data.dtype.names is None
        or node_bounds.ndim != 3
        or node_bounds.shape[1] != n_nodes
        or node_bounds.shape[2] != data.shape[1]
    )
    if not bad and n_nodes:
        start = node_data["idx_start"]
        end = node_data["idx_end"]
        internal = np.flatnonzero(node_data["is_leaf"] == 0)
        bad = bool(
            np.any(start < 0)
            or np.any(end < start)
            or np.any(end > n_samples)
            or (internal.size and 2 * internal.max() + 2 >= n_nodes)
        )
    if bad:
        raise FormatError(
            f"the {what} holds a nearest-neighbour tree whose index arrays point outside its "
            "data (querying it would read out of bounds)",
            hint="the file was crafted or damaged; it is refused",
        )


def _check_sparse(matrix: Any, what: str) -> None:
    check = getattr(matrix, "check_format", None)
    if check is None:  # coo/dok/lil keep no compressed index arrays
        return
    try:
        check(full_check=True)
    except (ValueError, TypeError, IndexError) as exc:
        raise FormatError(
            f"the {what} holds a sparse matrix whose index arrays are invalid ({exc})",
            hint="the file was crafted or damaged; it is refused",
        ) from None
