"""What allowed classes can *do*, reviewed: the dispatch methods persistkit lets run.

An allow-list of names bounds what a stream may import; this table bounds what the objects
it builds may do afterwards. Every method through which an allowed class can run code chosen
by its state (``__setstate__``, ``__call__``, ``__getattr__``, ``__reduce__`` and friends) is
listed here with the class that defines it and why running it on attacker-chosen state is
acceptable. The restricted unpickler calls a ``__setstate__`` only when its defining class is
reviewed here; ``tests/test_safety_capabilities.py`` fails when an allowed class gains a
dispatch method that nobody reviewed.
"""

from __future__ import annotations

#: ``(defining class, method) -> why it is safe``. The defining class is written as
#: ``module.qualname`` of the class in whose ``__dict__`` the method is found.
REVIEWED: dict[tuple[str, str], str] = {
    # --- __setstate__: called by BUILD on instances the restricted unpickler made ---
    ("sklearn.base.BaseEstimator", "__setstate__"): "drops the version key, updates __dict__",
    ("sklearn.utils._bunch.Bunch", "__setstate__"): "ignored state (a dict subclass)",
    ("sklearn.isotonic.IsotonicRegression", "__setstate__"): "stores state, rebuilds interp",
    ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor", "__setstate__"): (
        "stores arrays; nodes checked by native_checks"
    ),
    ("sklearn.tree._tree.Tree", "__setstate__"): "typed arrays; checked by native_checks",
    ("sklearn.neighbors._kd_tree.BinaryTree64", "__setstate__"): "typed memoryviews; checked",
    ("sklearn.neighbors._kd_tree.BinaryTree32", "__setstate__"): "typed memoryviews; checked",
    ("sklearn.neighbors._ball_tree.BinaryTree64", "__setstate__"): "typed memoryviews; checked",
    ("sklearn.neighbors._ball_tree.BinaryTree32", "__setstate__"): "typed memoryviews; checked",
    ("sklearn.metrics._dist_metrics.DistanceMetric64", "__setstate__"): "p and typed arrays",
    ("sklearn.metrics._dist_metrics.DistanceMetric32", "__setstate__"): "p and typed arrays",
    ("sklearn._loss._loss.CyHalfMultinomialLoss", "__setstate__"): "Cython auto-pickle fields",
    ("numpy.random.bit_generator.BitGenerator", "__setstate__"): "numpy validates .state",
    ("torch.nn.modules.module.Module", "__setstate__"): "updates __dict__ (hooks checked)",
    ("torch.nn.modules.conv._ConvNd", "__setstate__"): "Module's, plus a default padding_mode",
    ("torch.nn.modules.rnn.RNNBase", "__setstate__"): "Module's, plus flat weight names",
    ("torch.nn.modules.activation.MultiheadAttention", "__setstate__"): "Module's + a flag",
    ("torch.nn.modules.activation.Softmax", "__setstate__"): "Module's + default dim",
    ("torch.nn.modules.activation.Softmin", "__setstate__"): "Module's + default dim",
    ("torch.nn.modules.activation.LogSoftmax", "__setstate__"): "Module's + default dim",
    ("torch.nn.modules.pooling.AvgPool3d", "__setstate__"): "Module's + defaults",
    ("torch.nn.modules.upsampling.Upsample", "__setstate__"): "Module's + defaults",
    ("torch.nn.modules.transformer.TransformerEncoderLayer", "__setstate__"): "Module's",
    ("torch.nn.modules.transformer.TransformerDecoderLayer", "__setstate__"): "Module's",
}


def reviewed(owner: type, method: str) -> bool:
    """True when ``owner.method`` (``owner`` defines it) has been reviewed as safe."""
    return (f"{owner.__module__}.{owner.__qualname__}", method) in REVIEWED


def defining_class(cls: type, method: str) -> type | None:
    """The class in ``cls``'s MRO whose ``__dict__`` defines ``method`` (``None``: object's)."""
    for klass in cls.__mro__:
        if method in vars(klass):
            return None if klass is object else klass
    return None
