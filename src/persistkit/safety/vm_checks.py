"""What the restricted machine lets an allowed global do, besides numpy: the reviewed argument
check of every global a stream may call (invariant 1 in ``docs/security.md``), and the rules
for state a class later calls or dispatches on (invariant 2, from the capability review in
:mod:`persistkit.safety.capabilities`).

Each check validates the arguments a pickler would write and makes the call itself; a global
in a callable role without a check here is never called (``tests/test_safety_invariants.py``).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from persistkit.safety.allowlist import CALLED_CLASS, DATA_CLASS, PURE_FUNCTION
from persistkit.safety.capabilities import (
    MODULE_HOOK_ATTRIBUTES,
    STATE_CALLABLE_ATTRIBUTES,
    defining_class,
    state_key_shadows_method,
)
from persistkit.safety.vm_base import REPLACEMENT, TRUSTED, describe, exact_int
from persistkit.safety.vm_numpy import (
    check_dtype_args,
    check_frombuffer,
    check_mareconstruct,
    check_reconstruct,
    check_scalar,
    shape_of,
)

if TYPE_CHECKING:
    from persistkit.safety.vm import RestrictedMachine


def _np() -> Any:
    import numpy

    return numpy


_SHADOWS: dict[tuple[type, str], bool] = {}


def shadows_behaviour(cls: type, name: str) -> bool:
    """:func:`capabilities.state_key_shadows_method`, cached per load-independent key."""
    key = (cls, name)
    found = _SHADOWS.get(key)
    if found is None:
        found = _SHADOWS[key] = state_key_shadows_method(cls, name)
    return found


def declared_slots(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        slots = vars(klass).get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        names.update(s for s in slots if isinstance(s, str))
    return names


def plain_build(inst: Any, state: Any) -> None:
    """What pickle's BUILD does (for globals the user trusted)."""
    setstate = getattr(inst, "__setstate__", None)
    if setstate is not None and defining_class(type(inst), "__setstate__") is not None:
        setstate(state)
        return
    slot_state = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slot_state = state
    if state:
        inst.__dict__.update(state)
    if slot_state:
        for k, v in slot_state.items():
            setattr(inst, k, v)


# --- state a class later calls ---------------------------------------------------------------
_RULES_BY_CLASS: dict[type, list[tuple[str, str]]] = {}


def _rules_for(cls: type) -> list[tuple[str, str]]:
    rules = _RULES_BY_CLASS.get(cls)
    if rules is None:
        rules = []
        for klass in cls.__mro__:
            table = STATE_CALLABLE_ATTRIBUTES.get(f"{klass.__module__}.{klass.__qualname__}")
            if table:
                rules.extend(table.items())
        _RULES_BY_CLASS[cls] = rules
    return rules


def check_called_attributes(machine: RestrictedMachine, cls: type, state: dict[str, Any]) -> None:
    """Attributes a class calls or resolves by name hold only what the review allows
    (:data:`persistkit.safety.capabilities.STATE_CALLABLE_ATTRIBUTES`)."""
    for name, policy in _rules_for(cls):
        if name in state and not _satisfies(machine, state[name], policy):
            raise machine.refuse(
                f"{cls.__qualname__}.{name} holds {describe(state[name])}; it may only "
                f"hold a {policy}"
            )


def _satisfies(machine: RestrictedMachine, value: Any, policy: str) -> bool:
    known = machine.role(value)
    if policy == "absent":  # derived at load time: the state may carry only its default
        return value is None
    if policy == "module or absent":
        torch_nn = sys.modules.get("torch.nn")
        return torch_nn is not None and isinstance(value, torch_nn.Module)
    if policy == "option name":
        return value is None or type(value) is str
    if policy == "pure function":
        return value is None or (known is not None and known[1] == PURE_FUNCTION)
    if policy == "kernel instance":
        return value is None or _is_kernel(machine, value)
    if policy == "kernel instances":
        return type(value) is list and all(_is_kernel(machine, v) for v in value)
    if policy == "passthrough scorer":
        return value is None or (
            machine.made.get(id(value)) is value
            and type(value).__qualname__ == "_PassthroughScorer"
            and type(value).__module__ == "sklearn.metrics._scorer"
        )
    if policy == "numpy scalar type":
        return known is not None and isinstance(value, type) and issubclass(value, _np().generic)
    if policy == "splitter class":
        return known is not None and known[0] in (
            ("sklearn.model_selection._split", "KFold"),
            ("sklearn.model_selection._split", "StratifiedKFold"),
        )
    if policy == "parameter names":
        return type(value) is list and all(type(v) is str for v in value)
    return False  # a policy this machine does not know: fail closed


def _is_kernel(machine: RestrictedMachine, value: Any) -> bool:
    return (
        machine.made.get(id(value)) is value
        and type(value).__module__ == "sklearn.gaussian_process.kernels"
        and machine.role(type(value)) is not None
    )


def check_module_state(machine: RestrictedMachine, inst: Any, state: Any) -> None:
    """A torch module's hook tables must be empty and its child tables hold only modules,
    parameters and tensors (``__call__`` runs hooks and reaches children through them)."""
    torch_nn = sys.modules.get("torch.nn")
    if torch_nn is None or not isinstance(inst, torch_nn.Module):
        return
    import torch

    if type(state) is not dict:
        raise machine.refuse("a torch module's state is not a dict")
    for name, value in state.items():
        if name in MODULE_HOOK_ATTRIBUTES or "hook" in name:
            if isinstance(value, dict):
                if value:
                    raise machine.refuse(f"a torch module's {name} holds hooks it would run")
            elif not (value is None or type(value) is bool):
                raise machine.refuse(f"a torch module's {name} is not a hook table")
    if state.get("_compiled_call_impl") is not None:
        raise machine.refuse("a torch module replaces its __call__ (_compiled_call_impl)")
    kinds = {
        "_modules": torch_nn.Module,
        "_parameters": torch_nn.Parameter,
        "_buffers": torch.Tensor,
    }
    for table, kind in kinds.items():
        entries = state.get(table)
        if entries is None:
            continue
        if not isinstance(entries, dict) or not all(
            type(k) is str and (v is None or isinstance(v, kind)) for k, v in entries.items()
        ):
            raise machine.refuse(f"a torch module's {table} holds something other than {table[1:]}")
    non_persistent = state.get("_non_persistent_buffers_set")
    if non_persistent is not None and not (
        type(non_persistent) is set and all(type(v) is str for v in non_persistent)
    ):
        raise machine.refuse("a torch module's _non_persistent_buffers_set is not a set of names")


# --- builtins and the stdlib ----------------------------------------------------------------
_RECONSTRUCT_BASES = (object, dict, list, set, frozenset, tuple, int, float, str, bytes)


def _check_reconstructor(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    if len(args) != 3:
        raise machine.corrupt("copyreg._reconstructor has the wrong arguments")
    cls, base, state = args
    known = machine.role(cls)
    if (
        known is None
        or not isinstance(cls, type)
        or known[1]
        not in (
            DATA_CLASS,
            CALLED_CLASS,
            TRUSTED,
            REPLACEMENT,
        )
    ):
        raise machine.refuse("copyreg._reconstructor makes something that is not an allowed class")
    if not any(base is b for b in _RECONSTRUCT_BASES) or not issubclass(cls, base):
        raise machine.refuse("copyreg._reconstructor is given a base that is not plain data")
    if base is object:
        if state is not None:
            raise machine.refuse("copyreg._reconstructor passes state to object.__new__")
        return object.__new__(cls)
    if type(state) not in (list, dict, tuple, set, frozenset, int, float, str, bytes):
        raise machine.refuse("copyreg._reconstructor is given state that is not plain data")
    obj = base.__new__(cls, state)
    if base.__init__ is not object.__init__:
        base.__init__(obj, state)
    if base is tuple:  # a tuple subclass (a named tuple) nests like a tuple
        machine.nest_tuple(state, made=obj)
    return obj


def _check_encode(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    # protocols 0-2 write bytes as _codecs.encode(text, "latin1"); nothing else is data
    if not 1 <= len(args) <= 2 or type(args[0]) is not str:
        raise machine.refuse("_codecs.encode is only allowed as (str, 'latin1')")
    encoding = args[1] if len(args) == 2 else "utf-8"
    if encoding not in ("latin1", "latin-1"):
        raise machine.refuse("_codecs.encode is only allowed as (str, 'latin1')")
    return args[0].encode("latin1")


def _check_bytes(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    # bytes() and bytes(text, "latin1") rebuild data; bytes(n) would allocate n zero bytes
    if not args:
        return b""
    if len(args) == 1 and type(args[0]) in (bytes, list, tuple):
        items = args[0]
        if type(items) is not bytes and not all(exact_int(i) for i in items):
            raise machine.corrupt("builtins.bytes is given items that are not integers")
        return bytes(items)
    if len(args) == 2 and type(args[0]) is str and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin1")
    raise machine.refuse("builtins.bytes is only allowed on data, not a size or an object")


def _plain_items(machine: RestrictedMachine, args: tuple[Any, ...], what: str) -> Any:
    if not args:
        return ()
    if len(args) != 1 or type(args[0]) not in (list, tuple, set, frozenset):
        raise machine.refuse(f"{what} is called with something that is not a plain container")
    return args[0]


def _check_set(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    return set(_plain_items(machine, args, "builtins.set"))


def _check_frozenset(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    return frozenset(_plain_items(machine, args, "builtins.frozenset"))


def _check_ordered_dict(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    items = _plain_items(machine, args, "collections.OrderedDict")
    result: OrderedDict[Any, Any] = OrderedDict()
    for pair in items:
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise machine.corrupt("collections.OrderedDict is given items that are not pairs")
        result[pair[0]] = pair[1]
    return result


def _check_slice(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    if not 1 <= len(args) <= 3 or not all(a is None or exact_int(a) for a in args):
        raise machine.corrupt("builtins.slice is given something other than integers")
    return slice(*args)


def _check_complex(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    if len(args) > 2 or not all(type(a) in (int, float) for a in args):
        raise machine.corrupt("builtins.complex is given something other than numbers")
    return complex(*args)


# --- numpy random ---------------------------------------------------------------------------
_BIT_GENERATORS = frozenset({"MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64"})


def _bit_generator_class(machine: RestrictedMachine, value: Any) -> Any:
    import numpy.random as npr

    if type(value) is str and value in _BIT_GENERATORS:
        cls = getattr(npr, value)
    else:
        known = machine.role(value)
        if known is None or not isinstance(value, type) or value.__name__ not in _BIT_GENERATORS:
            raise machine.refuse("a random generator names a bit generator that is not allowed")
        cls = value
    return cls


def _check_bit_generator_ctor(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    if len(args) != 1:
        raise machine.corrupt("a bit generator is rebuilt with the wrong arguments")
    cls = _bit_generator_class(machine, args[0])
    return cls()


def _generator_arguments(machine: RestrictedMachine, args: tuple[Any, ...]) -> Any:
    import numpy.random as npr

    if not 1 <= len(args) <= 2:
        raise machine.corrupt("a random generator is rebuilt with the wrong arguments")
    if len(args) == 2:
        ctor = args[1]
        known = machine.role(ctor)
        if known is None or known[0] != ("numpy.random._pickle", "__bit_generator_ctor"):
            raise machine.refuse("a random generator passes a callable that is not its own")
    first = args[0]
    if isinstance(first, npr.BitGenerator):
        if machine.made.get(id(first)) is not first:
            raise machine.refuse("a random generator wraps a bit generator it did not make")
        return first
    return _bit_generator_class(machine, first)()


def _check_randomstate_ctor(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    import numpy.random as npr

    return npr.RandomState(_generator_arguments(machine, args))


def _check_generator_ctor(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    import numpy.random as npr

    return npr.Generator(_generator_arguments(machine, args))


# --- Cython helpers -------------------------------------------------------------------------
def _cython_unpickle(owner: tuple[str, str]) -> Callable[..., Any]:
    """``__pyx_unpickle_X(type, checksum, state)`` calls ``X.__new__(type)``: the type must be
    exactly ``X`` (allowed), the checksum an int, the state a tuple or None."""

    def check(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
        if len(args) != 3 or not exact_int(args[1]):
            raise machine.corrupt(f"{owner[1]} is rebuilt with the wrong arguments")
        cls, state = args[0], args[2]
        known = machine.role(cls)
        if known is None or known[0] != owner:
            raise machine.refuse(f"a Cython rebuild helper is given a class other than {owner[1]}")
        if state is not None and type(state) is not tuple:
            raise machine.corrupt(f"{owner[1]} is rebuilt from state that is not a tuple")
        return func(*args)

    return check


def _check_new_obj(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    """scikit-learn's ``newObj(cls)`` is ``cls.__new__(cls)``: cls must be an allowed class
    from the same family (a distance metric or a neighbours tree)."""
    if len(args) != 1:
        raise machine.corrupt("newObj is given the wrong arguments")
    cls = args[0]
    known = machine.role(cls)
    func_pair = machine.role(func)
    if (
        known is None
        or func_pair is None
        or not isinstance(cls, type)
        or known[1] != DATA_CLASS
        or known[0][0] != func_pair[0][0]
    ):
        raise machine.refuse("newObj makes something that is not an allowed class of its module")
    made: Any = cls
    return made.__new__(made)


def _check_tree(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    """``Tree(n_features, n_classes, n_outputs)`` copies ``n_outputs`` entries of the
    ``n_classes`` array without bounds checks: both are checked here."""
    np = _np()
    if len(args) != 3:
        raise machine.corrupt("a decision tree is rebuilt with the wrong arguments")
    n_features, n_classes, n_outputs = args
    if not (exact_int(n_features) or isinstance(n_features, np.integer)) or not (
        exact_int(n_outputs) or isinstance(n_outputs, np.integer)
    ):
        raise machine.corrupt("a decision tree's sizes are not integers")
    if not 0 <= int(n_features) <= 1 << 31 or not 1 <= int(n_outputs) <= 1 << 20:
        raise machine.corrupt("a decision tree's sizes are out of range")
    if (
        type(n_classes) is not np.ndarray
        or n_classes.ndim != 1
        or n_classes.shape[0] != int(n_outputs)
        or n_classes.dtype.kind not in "iu"
        or (n_classes.size and (n_classes.min() < 1 or n_classes.max() > 1 << 31))
    ):
        raise machine.corrupt("a decision tree's class counts do not match its outputs")
    return func(int(n_features), n_classes.astype(np.intp), int(n_outputs))


def _check_numeric_parameters(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    """Cython loss objects rebuild as ``cls()`` or ``cls(one_number)`` (a power, a delta, a
    quantile, a threshold) and store only that number."""
    import math

    if len(args) > 1 or not all(type(a) in (int, float) and math.isfinite(a) for a in args):
        raise machine.corrupt(f"{func.__qualname__} is rebuilt from something other than a number")
    return func(*args)


# --- torch ----------------------------------------------------------------------------------
def _empty_hooks(machine: RestrictedMachine, hooks: Any) -> None:
    if not isinstance(hooks, dict) or len(hooks):
        raise machine.refuse("a tensor carries backward hooks (callables torch would run)")


def _storage_elements(storage: Any) -> int:
    import warnings

    with warnings.catch_warnings():  # TypedStorage.size() warns that TypedStorage is legacy
        warnings.simplefilter("ignore")
        return int(storage.size())


def _check_rebuild_tensor(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    import torch

    if not 6 <= len(args) <= 7:
        raise machine.corrupt("a tensor is rebuilt with the wrong arguments")
    storage, offset, size, stride, requires_grad, hooks = args[:6]
    if len(args) == 7 and args[6] is not None and not (isinstance(args[6], dict) and not args[6]):
        raise machine.refuse("a tensor is rebuilt with metadata")
    if (
        not isinstance(storage, torch.storage.TypedStorage)
        or machine.persisted.get(id(storage)) is not storage
    ):
        raise machine.refuse("a tensor is rebuilt over a storage the file does not hold")
    shape, count = shape_of(machine, size)
    strides, _ = shape_of(machine, stride)
    if len(strides) != len(shape) or not exact_int(offset) or offset < 0:
        raise machine.corrupt("a tensor's strides or offset do not match its shape")
    extent = offset + (sum((n - 1) * s for n, s in zip(shape, strides)) + 1 if count else 0)
    if extent > _storage_elements(storage):
        raise machine.corrupt("a tensor reaches past the end of its storage")
    if type(requires_grad) is not bool:
        raise machine.corrupt("a tensor's requires_grad is not a bool")
    _empty_hooks(machine, hooks)
    return func(storage, offset, shape, strides, requires_grad, OrderedDict())


def _check_rebuild_parameter(machine: RestrictedMachine, func: Any, args: tuple[Any, ...]) -> Any:
    import torch

    if len(args) not in (3, 4):
        raise machine.corrupt("a parameter is rebuilt with the wrong arguments")
    data: Any = args[0]
    requires_grad, hooks = args[1:3]
    if type(data) is not torch.Tensor or machine.made.get(id(data)) is not args[0]:
        raise machine.refuse("a parameter wraps something that is not a tensor of the file")
    if type(requires_grad) is not bool:
        raise machine.corrupt("a parameter's requires_grad is not a bool")
    _empty_hooks(machine, hooks)
    if (
        len(args) == 4
        and args[3] not in (None, {})
        and not (isinstance(args[3], dict) and not args[3])
    ):
        raise machine.refuse("a parameter is rebuilt with extra attributes")
    return torch.nn.Parameter(data, requires_grad)


CallCheck = Callable[["RestrictedMachine", Any, tuple[Any, ...]], Any]

CALL_CHECKS: dict[tuple[str, str], CallCheck] = {
    ("numpy", "dtype"): check_dtype_args,
    ("numpy._core.multiarray", "_reconstruct"): check_reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): check_reconstruct,
    ("numpy._core.multiarray", "scalar"): check_scalar,
    ("numpy.core.multiarray", "scalar"): check_scalar,
    ("numpy._core.numeric", "_frombuffer"): check_frombuffer,
    ("numpy.core.numeric", "_frombuffer"): check_frombuffer,
    ("numpy.ma.core", "_mareconstruct"): check_mareconstruct,
    ("numpy.random._pickle", "__bit_generator_ctor"): _check_bit_generator_ctor,
    ("numpy.random._pickle", "__randomstate_ctor"): _check_randomstate_ctor,
    ("numpy.random._pickle", "__generator_ctor"): _check_generator_ctor,
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"): _cython_unpickle(
        ("numpy.random.bit_generator", "SeedSequence")
    ),
    ("copyreg", "_reconstructor"): _check_reconstructor,
    ("_codecs", "encode"): _check_encode,
    ("builtins", "bytes"): _check_bytes,
    ("builtins", "set"): _check_set,
    ("builtins", "frozenset"): _check_frozenset,
    ("builtins", "slice"): _check_slice,
    ("builtins", "complex"): _check_complex,
    ("collections", "OrderedDict"): _check_ordered_dict,
    ("sklearn.tree._tree", "Tree"): _check_tree,
    ("sklearn.tree._tree", "__pyx_unpickle_TreeBuilder"): _cython_unpickle(
        ("sklearn.tree._tree", "TreeBuilder")
    ),
    ("sklearn.tree._tree", "__pyx_unpickle__CCPPruneController"): _cython_unpickle(
        ("sklearn.tree._tree", "_CCPPruneController")
    ),
    ("sklearn._loss._loss", "__pyx_unpickle_CyHalfMultinomialLoss"): _cython_unpickle(
        ("sklearn._loss._loss", "CyHalfMultinomialLoss")
    ),
    ("sklearn.metrics._dist_metrics", "__pyx_unpickle_DistanceMetric"): _cython_unpickle(
        ("sklearn.metrics._dist_metrics", "DistanceMetric")
    ),
    ("sklearn.metrics._dist_metrics", "newObj"): _check_new_obj,
    ("sklearn.neighbors._ball_tree", "newObj"): _check_new_obj,
    ("sklearn.neighbors._kd_tree", "newObj"): _check_new_obj,
    **{
        ("sklearn._loss._loss", name): _check_numeric_parameters
        for name in (
            "CyAbsoluteError",
            "CyExponentialLoss",
            "CyHalfBinomialLoss",
            "CyHalfGammaLoss",
            "CyHalfPoissonLoss",
            "CyHalfSquaredError",
            "CyHalfTweedieLoss",
            "CyHalfTweedieLossIdentity",
            "CyHuberLoss",
            "CyPinballLoss",
        )
    },
    ("sklearn.linear_model._sgd_fast", "Hinge"): _check_numeric_parameters,
    ("torch._utils", "_rebuild_tensor_v2"): _check_rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _check_rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _check_rebuild_parameter,
}

# called classes that picklers also make with NEWOBJ (no arguments)
NEWOBJ_OK: frozenset[tuple[str, str]] = frozenset({("collections", "OrderedDict")})


def call_checks() -> dict[tuple[str, str], CallCheck]:
    """The reviewed argument checks, by global (for tests and ``docs/security.md``)."""
    return dict(CALL_CHECKS)
