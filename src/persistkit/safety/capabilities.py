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
    # numpy < 2 pickled a Generator with its bit generator's state dict as BUILD state
    # (scikit-learn < 1.6's HistGradientBoosting keeps one); numpy 2 sets that dict as
    # .bit_generator.state, which it validates, and ignores anything that is not a dict
    ("numpy.random._generator.Generator", "__setstate__"): "a dict: .bit_generator.state",
    ("numpy.random.bit_generator.SeedSequence", "__setstate__"): "Cython typed fields",
    ("numpy.random.mtrand.RandomState", "__setstate__"): "numpy validates the state it sets",
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
    # --- every other dispatch method of an allowed class (tests/test_safety_capabilities.py) ---
    ("scipy.interpolate._bsplines.BSpline", "__call__"): (
        "evaluates the spline on the caller's x; calls no stored callable"
    ),
    ("sklearn._loss.loss.ArrayAPILossMixin", "__call__"): (
        "computes the loss of its fixed link/closed-form code"
    ),
    ("sklearn._loss.loss.BaseLoss", "__call__"): (
        "computes the loss through its Cython closs (a loss class)"
    ),
    ("sklearn.gaussian_process.kernels.CompoundKernel", "__call__"): (
        "calls its kernels (kernel instances: STATE_CALLABLE_ATTRIBUTES)"
    ),
    ("sklearn.gaussian_process.kernels.ConstantKernel", "__call__"): (
        "computes the kernel on the caller's arrays"
    ),
    ("sklearn.gaussian_process.kernels.DotProduct", "__call__"): (
        "computes the kernel on the caller's arrays"
    ),
    ("sklearn.gaussian_process.kernels.ExpSineSquared", "__call__"): (
        "computes the kernel on the caller's arrays"
    ),
    ("sklearn.gaussian_process.kernels.Exponentiation", "__call__"): (
        "calls self.kernel (a kernel instance: STATE_CALLABLE_ATTRIBUTES)"
    ),
    ("sklearn.gaussian_process.kernels.Kernel", "__call__"): (
        "abstract; subclasses compute on arrays"
    ),
    ("sklearn.gaussian_process.kernels.Matern", "__call__"): (
        "computes the kernel on the caller's arrays"
    ),
    ("sklearn.gaussian_process.kernels.Product", "__call__"): (
        "calls k1, k2 (kernel instances: STATE_CALLABLE_ATTRIBUTES)"
    ),
    ("sklearn.gaussian_process.kernels.RBF", "__call__"): (
        "computes the kernel on the caller's arrays"
    ),
    ("sklearn.gaussian_process.kernels.RationalQuadratic", "__call__"): (
        "computes the kernel on the caller's arrays"
    ),
    ("sklearn.gaussian_process.kernels.Sum", "__call__"): (
        "calls k1, k2 (kernel instances: STATE_CALLABLE_ATTRIBUTES)"
    ),
    ("sklearn.gaussian_process.kernels.WhiteKernel", "__call__"): (
        "computes the kernel on the caller's arrays"
    ),
    ("sklearn.metrics._scorer._PassthroughScorer", "__call__"): (
        "calls estimator.score, a fixed name, on its argument"
    ),
    ("torch.nn.modules.container.ParameterDict", "__call__"): (
        "raises: a ParameterDict cannot be called"
    ),
    ("torch.nn.modules.container.ParameterList", "__call__"): (
        "raises: a ParameterList cannot be called"
    ),
    ("torch.nn.modules.module.Module", "__call__"): (
        "forward + hook dicts: MODULE_HOOK_ATTRIBUTES must be empty"
    ),
    ("sklearn.frozen._frozen.FrozenEstimator", "__getattr__"): (
        "forwards the caller's name (never state's) to .estimator"
    ),
    ("sklearn.utils._bunch.Bunch", "__getattr__"): "dict item lookup",
    ("torch.nn.modules.module.Module", "__getattr__"): (
        "looks up _parameters/_buffers/_modules dicts"
    ),
    ("builtins.bytes", "__getattribute__"): "C builtin attribute lookup; state adds no code",
    ("builtins.complex", "__getattribute__"): "C builtin attribute lookup; state adds no code",
    ("builtins.dict", "__getattribute__"): "C builtin attribute lookup; state adds no code",
    ("builtins.float", "__getattribute__"): "C builtin attribute lookup; state adds no code",
    ("builtins.frozenset", "__getattribute__"): "C builtin attribute lookup; state adds no code",
    ("builtins.set", "__getattribute__"): "C builtin attribute lookup; state adds no code",
    ("builtins.slice", "__getattribute__"): "C builtin attribute lookup; state adds no code",
    ("builtins.str", "__getattribute__"): "C builtin attribute lookup; state adds no code",
    ("builtins.tuple", "__getattribute__"): "C builtin attribute lookup; state adds no code",
    ("sklearn.utils._bunch.Bunch", "__setattr__"): "dict item store",
    ("torch.nn.modules.module.Module", "__setattr__"): (
        "stores into _parameters/_buffers/_modules/__dict__"
    ),
    ("torch.nn.modules.rnn.RNNBase", "__setattr__"): (
        "Module's, then reads (never calls) _flat_weights_names"
    ),
    ("torch.nn.modules.module.Module", "__delattr__"): "deletes from its dicts or __dict__",
    ("numpy.dtype", "__setstate__"): (
        "numpy validates the dtype tuple (every array pickle uses it)"
    ),
    ("numpy.generic", "__setstate__"): "numpy scalar state; C code validates",
    ("numpy.ma.MaskedArray", "__setstate__"): "ndarray's checked setstate for data and mask",
    ("numpy.ndarray", "__setstate__"): "numpy checks byte count against shape and dtype",
    ("scipy.sparse._coo.coo_matrix", "__setstate__"): (
        "renames row/col to coords, updates __dict__"
    ),
    ("sklearn.metrics._dist_metrics.DistanceMetric", "__setstate__"): (
        "Python-level base; stores plain parameters"
    ),
    ("sklearn.metrics._dist_metrics.MahalanobisDistance32", "__setstate__"): (
        "base's, plus a work buffer sized from mat"
    ),
    ("sklearn.metrics._dist_metrics.MahalanobisDistance64", "__setstate__"): (
        "base's, plus a work buffer sized from mat"
    ),
    ("sklearn.neighbors._ball_tree.NeighborsHeap32", "__setstate__"): (
        "Cython: typed arrays, shapes checked on assignment"
    ),
    ("sklearn.neighbors._ball_tree.NeighborsHeap64", "__setstate__"): (
        "Cython: typed arrays, shapes checked on assignment"
    ),
    ("sklearn.neighbors._ball_tree.NodeHeap", "__setstate__"): (
        "Cython: typed arrays, shapes checked on assignment"
    ),
    ("sklearn.neighbors._kd_tree.NeighborsHeap32", "__setstate__"): (
        "Cython: typed arrays, shapes checked on assignment"
    ),
    ("sklearn.neighbors._kd_tree.NeighborsHeap64", "__setstate__"): (
        "Cython: typed arrays, shapes checked on assignment"
    ),
    ("sklearn.neighbors._kd_tree.NodeHeap", "__setstate__"): (
        "Cython: typed arrays, shapes checked on assignment"
    ),
    ("sklearn.tree._tree.BestFirstTreeBuilder", "__setstate__"): (
        "Cython auto-pickle; fit-time helper, typed fields"
    ),
    ("sklearn.tree._tree.DepthFirstTreeBuilder", "__setstate__"): (
        "Cython auto-pickle; fit-time helper, typed fields"
    ),
    ("sklearn.tree._tree.TreeBuilder", "__setstate__"): (
        "Cython auto-pickle; fit-time helper, typed fields"
    ),
    ("sklearn.tree._tree._AlphaPruner", "__setstate__"): (
        "Cython auto-pickle; fit-time helper, typed fields"
    ),
    ("sklearn.tree._tree._CCPPruneController", "__setstate__"): (
        "Cython auto-pickle; fit-time helper, typed fields"
    ),
    ("sklearn.tree._tree._PathFinder", "__setstate__"): (
        "Cython auto-pickle; fit-time helper, typed fields"
    ),
    ("builtins.frozenset", "__reduce__"): "runs only when re-pickled; reads state, calls none",
    ("builtins.set", "__reduce__"): "runs only when re-pickled; reads state, calls none",
    ("builtins.slice", "__reduce__"): "runs only when re-pickled; reads state, calls none",
    ("collections.OrderedDict", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("numpy.dtype", "__reduce__"): "runs only when re-pickled; reads state, calls none",
    ("numpy.generic", "__reduce__"): "runs only when re-pickled; reads state, calls none",
    ("numpy.ma.MaskedArray", "__reduce__"): "runs only when re-pickled; reads state, calls none",
    ("numpy.ndarray", "__reduce__"): "runs only when re-pickled; reads state, calls none",
    ("numpy.random.bit_generator.BitGenerator", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("numpy.random.bit_generator.SeedSequence", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn._loss._loss.CyHalfMultinomialLoss", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn._loss._loss.CyHalfTweedieLoss", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn._loss._loss.CyHalfTweedieLossIdentity", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn._loss._loss.CyHuberLoss", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn._loss._loss.CyLossFunction", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn._loss._loss.CyPinballLoss", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.linear_model._sgd_fast.Hinge", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.metrics._dist_metrics.DistanceMetric", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.metrics._dist_metrics.DistanceMetric32", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.metrics._dist_metrics.DistanceMetric64", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._ball_tree.BinaryTree32", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._ball_tree.BinaryTree64", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._ball_tree.NeighborsHeap32", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._ball_tree.NeighborsHeap64", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._ball_tree.NodeHeap", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._kd_tree.BinaryTree32", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._kd_tree.BinaryTree64", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._kd_tree.NeighborsHeap32", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._kd_tree.NeighborsHeap64", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._kd_tree.NodeHeap", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.tree._tree.BestFirstTreeBuilder", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.tree._tree.DepthFirstTreeBuilder", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.tree._tree.Tree", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.tree._tree.TreeBuilder", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.tree._tree._AlphaPruner", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.tree._tree._CCPPruneController", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.tree._tree._PathFinder", "__reduce__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("torch.Size", "__reduce__"): "runs only when re-pickled; reads state, calls none",
    ("torch.device", "__reduce__"): "runs only when re-pickled; reads state, calls none",
    ("numpy.ndarray", "__reduce_ex__"): "runs only when re-pickled; reads state, calls none",
    ("numpy.ma.MaskedArray", "__getstate__"): "runs only when re-pickled; reads state, calls none",
    ("numpy.random.bit_generator.BitGenerator", "__getstate__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.base.BaseEstimator", "__getstate__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.isotonic.IsotonicRegression", "__getstate__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.metrics._dist_metrics.DistanceMetric32", "__getstate__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.metrics._dist_metrics.DistanceMetric64", "__getstate__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._ball_tree.BinaryTree32", "__getstate__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._ball_tree.BinaryTree64", "__getstate__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._kd_tree.BinaryTree32", "__getstate__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.neighbors._kd_tree.BinaryTree64", "__getstate__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.tree._tree.Tree", "__getstate__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("torch.nn.modules.module.Module", "__getstate__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("torch.nn.modules.rnn.RNNBase", "__getstate__"): (
        "runs only when re-pickled; reads state, calls none"
    ),
    ("sklearn.utils._metadata_requests._MetadataRequester", "__init_subclass__"): (
        "runs when a subclass is defined (import time)"
    ),
    ("sklearn.utils._set_output._SetOutputMixin", "__init_subclass__"): (
        "runs when a subclass is defined (import time)"
    ),
    ("torch.nn.modules.container.Container", "__init_subclass__"): (
        "runs when a subclass is defined (import time)"
    ),
    ("torch.nn.modules.loss.NLLLoss2d", "__init_subclass__"): (
        "runs when a subclass is defined (import time)"
    ),
    ("builtins.dict", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("builtins.frozenset", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("builtins.set", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("builtins.tuple", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("numpy.bool", "__class_getitem__"): "builds a typing alias (cls[...]); no instance involved",
    ("numpy.complex128", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("numpy.complex64", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("numpy.dtype", "__class_getitem__"): "builds a typing alias (cls[...]); no instance involved",
    ("numpy.float16", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("numpy.float32", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("numpy.float64", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("numpy.int16", "__class_getitem__"): "builds a typing alias (cls[...]); no instance involved",
    ("numpy.int32", "__class_getitem__"): "builds a typing alias (cls[...]); no instance involved",
    ("numpy.int64", "__class_getitem__"): "builds a typing alias (cls[...]); no instance involved",
    ("numpy.int8", "__class_getitem__"): "builds a typing alias (cls[...]); no instance involved",
    ("numpy.ndarray", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("numpy.uint16", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("numpy.uint32", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("numpy.uint64", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("numpy.uint8", "__class_getitem__"): "builds a typing alias (cls[...]); no instance involved",
    ("scipy.interpolate._bsplines.BSpline", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("scipy.sparse._base.sparray", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("scipy.sparse._matrix.spmatrix", "__class_getitem__"): (
        "builds a typing alias (cls[...]); no instance involved"
    ),
    ("builtins.bytes", "__getitem__"): "indexes data (library code)",
    ("builtins.dict", "__getitem__"): "indexes data (library code)",
    ("builtins.str", "__getitem__"): "indexes data (library code)",
    ("builtins.tuple", "__getitem__"): "indexes data (library code)",
    ("numpy.dtype", "__getitem__"): "indexes data (library code)",
    ("numpy.generic", "__getitem__"): "indexes data (library code)",
    ("numpy.ma.MaskedArray", "__getitem__"): "indexes data (library code)",
    ("numpy.ndarray", "__getitem__"): "indexes data (library code)",
    ("scipy.sparse._coo._coo_base", "__getitem__"): "indexes data (library code)",
    ("scipy.sparse._coo.coo_matrix", "__getitem__"): "indexes data (library code)",
    ("scipy.sparse._index.IndexMixin", "__getitem__"): "indexes data (library code)",
    ("sklearn.compose._column_transformer.ColumnTransformer", "__getitem__"): (
        "indexes its own steps/estimators by the caller's key"
    ),
    ("sklearn.ensemble._base.BaseEnsemble", "__getitem__"): (
        "indexes its own steps/estimators by the caller's key"
    ),
    ("sklearn.frozen._frozen.FrozenEstimator", "__getitem__"): (
        "forwards the caller's key to .estimator"
    ),
    ("sklearn.pipeline.FeatureUnion", "__getitem__"): (
        "indexes its own steps/estimators by the caller's key"
    ),
    ("sklearn.pipeline.Pipeline", "__getitem__"): (
        "indexes its own steps/estimators by the caller's key"
    ),
    ("sklearn.utils._bunch.Bunch", "__getitem__"): "dict lookup; may warn with a stored message",
    ("torch.Size", "__getitem__"): "indexes data (library code)",
    ("torch.nn.modules.container.ModuleDict", "__getitem__"): (
        "indexes its modules/parameters by the caller's key"
    ),
    ("torch.nn.modules.container.ModuleList", "__getitem__"): (
        "indexes its modules/parameters by the caller's key"
    ),
    ("torch.nn.modules.container.ParameterDict", "__getitem__"): (
        "indexes its modules/parameters by the caller's key"
    ),
    ("torch.nn.modules.container.ParameterList", "__getitem__"): (
        "indexes its modules/parameters by the caller's key"
    ),
    ("torch.nn.modules.container.Sequential", "__getitem__"): (
        "indexes its modules/parameters by the caller's key"
    ),
    ("numpy.ndarray", "__array_ufunc__"): "numpy's C hook; dispatches on operand types only",
    ("numpy.ndarray", "__array_function__"): "numpy's C hook; dispatches on operand types only",
    ("numpy.generic", "__array__"): "numpy's C hook; dispatches on operand types only",
    ("numpy.ndarray", "__array__"): "numpy's C hook; dispatches on operand types only",
    ("numpy.generic", "__array_wrap__"): "numpy's C hook; dispatches on operand types only",
    ("numpy.ma.MaskedArray", "__array_wrap__"): "numpy's C hook; dispatches on operand types only",
    ("numpy.ndarray", "__array_wrap__"): "numpy's C hook; dispatches on operand types only",
    ("numpy.ma.MaskedArray", "__array_finalize__"): (
        "numpy's C hook; dispatches on operand types only"
    ),
    ("numpy.ndarray", "__array_finalize__"): "numpy's C hook; dispatches on operand types only",
}


#: ``torch.nn.Module`` attributes that hold hooks: callables (or flags keyed by hook id) that
#: ``Module.__call__`` (``_call_impl``), ``state_dict`` and ``load_state_dict`` run. They
#: must be empty in untrusted ``BUILD`` state; one entry is an attacker's callable run on
#: every ``forward``. Listed from ``Module.__init__``/``__setstate__``/``_call_impl``.
MODULE_HOOK_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "_backward_pre_hooks",
        "_backward_hooks",
        "_forward_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_hooks_always_called",
        "_forward_pre_hooks",
        "_forward_pre_hooks_with_kwargs",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_load_state_dict_pre_hooks",
        "_load_state_dict_post_hooks",
    }
)

#: Other ``nn.Module`` state the unpickler must check. ``_compiled_call_impl`` replaces
#: ``__call__`` entirely (``_wrapped_call_impl`` calls it first); ``torch.save`` drops it.
#: The three dicts are what ``Module.__getattr__`` hands out for ``self.<name>``: a value
#: of the wrong type there is called by ``forward`` (``self.linear1(x)``).
MODULE_STATE_RULES: dict[str, str] = {
    "_compiled_call_impl": "absent or None",
    "_is_full_backward_hook": "None or a bool",
    "_modules": "dict of str -> instance of an allowed nn.Module class, or None",
    "_parameters": "dict of str -> torch.nn.Parameter, or None",
    "_buffers": "dict of str -> torch.Tensor, or None",
    "_non_persistent_buffers_set": "set of str",
}

#: Policies for an attribute that a class *calls* (``self.<attr>(...)``) or resolves by name:
#:
#: - ``"absent"``: derived; ``__setstate__`` rebuilds it, state must not carry it;
#: - ``"option name"``: ``None`` or a ``str`` the library looks up in its own fixed table
#:   (``kernel="rbf"``, ``metric="minkowski"``); a callable is refused;
#: - ``"pure function"``: ``None`` or an allowed global whose role is ``"pure function"``;
#: - ``"kernel instance"``: an instance of an allowed ``sklearn.gaussian_process.kernels``
#:   class (not a class, not a function), or ``None`` before fit;
#: - ``"kernel instances"``: a list of those;
#: - ``"passthrough scorer"``: ``None`` or an instance of ``_PassthroughScorer``;
#: - ``"numpy scalar type"``: one of the numpy scalar type globals on the allow-list;
#: - ``"splitter class"``: ``KFold`` or ``StratifiedKFold`` itself (``Repeated*KFold.cv``);
#: - ``"parameter names"``: a list of ``str``, each a key of the module's ``_parameters``;
#: - ``"module or absent"``: absent from ``__dict__`` (an ``nn.Module`` activation lives in
#:   ``_modules``).
#:
#: Keys are ``module.qualname`` of the class whose code calls the attribute; the rule holds
#: for instances of that class and of its subclasses.
CallablePolicy = str
STATE_CALLABLE_ATTRIBUTES: dict[str, dict[str, CallablePolicy]] = {
    # transform(X) = func(X, **kw_args): with any allowed callable this calls it with chosen
    # arguments (e.g. a Cython routine with mismatched buffers)
    "sklearn.preprocessing._function_transformer.FunctionTransformer": {
        "func": "pure function",
        "inverse_func": "pure function",
    },
    "sklearn.cluster._feature_agglomeration.AgglomerationTransform": {
        "pooling_func": "pure function",
    },
    "sklearn.isotonic.IsotonicRegression": {"f_": "absent"},
    # SVC & co.: kernel(X, support vectors) when callable
    "sklearn.svm._base.BaseLibSVM": {"kernel": "option name"},
    # pairwise_kernels(X, Y, metric=kernel, **kernel_params): callable + chosen kwargs
    "sklearn.decomposition._kernel_pca.KernelPCA": {"kernel": "option name"},
    "sklearn.kernel_ridge.KernelRidge": {"kernel": "option name"},
    "sklearn.kernel_approximation.Nystroem": {"kernel": "option name"},
    "sklearn.semi_supervised._label_propagation.BaseLabelPropagation": {
        "kernel": "option name",
    },
    # pairwise_distances(X, Y, metric=callable, **metric_params) at predict time
    "sklearn.neighbors._base.NeighborsBase": {
        "metric": "option name",
        "effective_metric_": "option name",
    },
    "sklearn.neighbors._classification.KNeighborsClassifier": {"weights": "option name"},
    "sklearn.neighbors._classification.RadiusNeighborsClassifier": {"weights": "option name"},
    "sklearn.neighbors._regression.KNeighborsRegressor": {"weights": "option name"},
    "sklearn.neighbors._regression.RadiusNeighborsRegressor": {"weights": "option name"},
    "sklearn.neighbors._nearest_centroid.NearestCentroid": {"metric": "option name"},
    "sklearn.neighbors._kde.KernelDensity": {"metric": "option name"},
    "sklearn.impute._knn.KNNImputer": {"metric": "option name", "weights": "option name"},
    "sklearn.manifold._isomap.Isomap": {"metric": "option name"},
    # predict: kernel_(X, X_train_)
    "sklearn.gaussian_process._gpr.GaussianProcessRegressor": {
        "kernel": "kernel instance",
        "kernel_": "kernel instance",
        "optimizer": "option name",
    },
    "sklearn.gaussian_process._gpc.GaussianProcessClassifier": {
        "kernel": "kernel instance",
        "optimizer": "option name",
    },
    "sklearn.gaussian_process._gpc._BinaryGaussianProcessClassifierLaplace": {
        "kernel": "kernel instance",
        "kernel_": "kernel instance",
        "optimizer": "option name",
    },
    "sklearn.gaussian_process.kernels.KernelOperator": {
        "k1": "kernel instance",
        "k2": "kernel instance",
    },
    "sklearn.gaussian_process.kernels.Exponentiation": {"kernel": "kernel instance"},
    "sklearn.gaussian_process.kernels.CompoundKernel": {"kernels": "kernel instances"},
    # score(X, y) = scorer_(best_estimator_, X, y)
    "sklearn.model_selection._search.BaseSearchCV": {"scorer_": "passthrough scorer"},
    # transform: self.dtype(value) for each feature value
    "sklearn.feature_extraction._dict_vectorizer.DictVectorizer": {"dtype": "numpy scalar type"},
    "sklearn.preprocessing._encoders.OneHotEncoder": {"feature_name_combiner": "option name"},
    # split(): cv(random_state=..., shuffle=True, **cvargs)
    "sklearn.model_selection._split._RepeatedSplits": {"cv": "splitter class"},
    # fit-time callables of estimators a user may refit after loading
    "sklearn.feature_selection._univariate_selection._BaseFilter": {
        "score_func": "pure function",
    },
    "sklearn.decomposition._fastica.FastICA": {"fun": "option name"},
    "sklearn.impute._base.SimpleImputer": {"strategy": "option name"},
    "sklearn.neighbors._nca.NeighborhoodComponentsAnalysis": {"callback": "absent"},
    # RNNBase.__setattr__/__setstate__ run getattr(self, name) for each of these names
    "torch.nn.modules.rnn.RNNBase": {"_flat_weights_names": "parameter names"},
    "torch.nn.modules.transformer.TransformerEncoderLayer": {"activation": "module or absent"},
    "torch.nn.modules.transformer.TransformerDecoderLayer": {"activation": "module or absent"},
}

#: Pairs taken off the allow-list by the capability review, with the reason. They stay off:
#: ``tests/test_safety_capabilities.py`` fails if one comes back, and each is named in
#: ``docs/security.md`` ("How the allow-list is reviewed").
REMOVED: dict[tuple[str, str], str] = {
    ("sklearn.metrics._scorer", "_BaseScorer"): (
        "calls getattr(estimator, self._response_method) - a method name from state - then "
        "the stored _score_func with stored kwargs"
    ),
    ("sklearn.metrics._scorer", "_Scorer"): "a _BaseScorer (name dispatch + stored callable)",
    ("sklearn.metrics._scorer", "_CurveScorer"): "a _BaseScorer (name dispatch + stored callable)",
    ("sklearn.metrics._scorer", "_MultimetricScorer"): (
        "calls every stored scorer (any callable) with chosen arguments"
    ),
    ("sklearn.ensemble._stacking", "StackingClassifier"): (
        "transform/predict call getattr(est, meth)(X) with meth from stack_method_ (state)"
    ),
    ("sklearn.ensemble._stacking", "StackingRegressor"): (
        "transform/predict call getattr(est, meth)(X) with meth from stack_method_ (state)"
    ),
    ("sklearn.multioutput", "ClassifierChain"): (
        "predict calls the estimator's method named by chain_method_ (state)"
    ),
    ("sklearn.multioutput", "RegressorChain"): (
        "predict reads chain_method_ from its __dict__ too (state may carry it)"
    ),
    ("sklearn.model_selection._classification_threshold", "FixedThresholdClassifier"): (
        "predict calls the estimator's method named by response_method (state)"
    ),
    ("sklearn.model_selection._classification_threshold", "TunedThresholdClassifierCV"): (
        "predict calls the estimator's method named by response_method (state)"
    ),
    ("sklearn.feature_selection._from_model", "SelectFromModel"): (
        "transform resolves importance_getter (state) as an attribute path on the "
        "estimator, or calls it when it is callable"
    ),
    ("sklearn.cluster._kmeans", "_kmeans_single_lloyd"): (
        "Cython k-means: X, sample_weight and centers of mismatched sizes crash the process "
        "(segfault, out-of-bounds access); any holder that calls a stored function with "
        "chosen arguments reaches it"
    ),
    ("sklearn.metrics._dist_metrics", "PyFuncDistance32"): (
        "every distance calls the stored func with stored kwargs"
    ),
    ("sklearn.metrics._dist_metrics", "PyFuncDistance64"): (
        "every distance calls the stored func with stored kwargs"
    ),
    ("sklearn.gaussian_process.kernels", "PairwiseKernel"): (
        "__call__ runs pairwise_kernels(metric=<stored callable>, **pairwise_kernels_kwargs)"
    ),
}


def state_key_shadows_method(cls: type, key: object) -> bool:
    """True when ``BUILD`` state key ``key`` would hide code of ``cls`` behind data.

    Methods are non-data descriptors: an instance ``__dict__`` entry of the same name wins
    over them, so state ``{"predict": f}`` turns ``est.predict(X)`` - and every internal
    ``self._helper(...)`` call - into ``f(...)``. The unpickler refuses such keys (dunder
    methods are looked up on the type and cannot be shadowed this way, but ``__class__``
    and ``__dict__`` are refused too).
    """
    if not isinstance(key, str):
        return False
    if key in ("__class__", "__dict__", "__weakref__"):
        return True
    for klass in cls.__mro__:
        if key in vars(klass):
            attr = vars(klass)[key]
            if isinstance(attr, (staticmethod, classmethod, property)):
                return True
            return callable(attr) or hasattr(type(attr), "__get__")
    return False


def reviewed(owner: type, method: str) -> bool:
    """True when ``owner.method`` (``owner`` defines it) has been reviewed as safe."""
    return (f"{owner.__module__}.{owner.__qualname__}", method) in REVIEWED


def defining_class(cls: type, method: str) -> type | None:
    """The class in ``cls``'s MRO whose ``__dict__`` defines ``method`` (``None``: object's)."""
    for klass in cls.__mro__:
        if method in vars(klass):
            return None if klass is object else klass
    return None
