"""The allow-list reviewed by capability: what allowed objects can *do* once a stream built them.

A name on the allow-list is only safe if nothing the class does afterwards runs code chosen by
its state: a method named by a string in state, a stored callable called with stored
arguments, a hook dict. These tests fail when a library upgrade (or an edit of the list)
brings a dispatch method nobody reviewed, when a removed gadget comes back, or when a role
does not match what the object is.
"""

from __future__ import annotations

import io
import pickle
import re
from collections import OrderedDict
from pathlib import Path

import pytest

from persistkit.errors import UntrustedArtifactError
from persistkit.safety import TrustPolicy
from persistkit.safety.allowlist import (
    ALLOWED,
    CALLED_CLASS,
    CONSTANT,
    DATA_CLASS,
    PURE_FUNCTION,
    RECONSTRUCTOR,
)
from persistkit.safety.capabilities import (
    MODULE_HOOK_ATTRIBUTES,
    MODULE_STATE_RULES,
    REMOVED,
    REVIEWED,
    STATE_CALLABLE_ATTRIBUTES,
    defining_class,
    reviewed,
    state_key_shadows_method,
)
from persistkit.safety.vm import resolve_global

#: Methods through which an object runs code on its own: called by the interpreter
#: (attribute access, calls, pickling, subclassing, descriptors) or by numpy/torch dispatch.
DISPATCH_METHODS = (
    "__call__",
    "__getattr__",
    "__getattribute__",
    "__setattr__",
    "__delattr__",
    "__setstate__",
    "__reduce__",
    "__reduce_ex__",
    "__getstate__",
    "__missing__",
    "__del__",
    "__init_subclass__",
    "__class_getitem__",
    "__set_name__",
    "__get__",
    "__set__",
    "__delete__",
    "__getitem__",
    "__array_ufunc__",
    "__array_function__",
    "__array__",
    "__array_wrap__",
    "__array_finalize__",
    "__torch_function__",
    "__torch_dispatch__",
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "security.md"


def _resolved() -> dict[tuple[str, str], object]:
    out = {}
    for pair in ALLOWED:
        try:
            out[pair] = resolve_global(*pair)
        except Exception:  # a library that is not installed: nothing to review here
            continue
    return out


RESOLVED = _resolved()
ALLOWED_CLASSES = {pair: obj for pair, obj in RESOLVED.items() if isinstance(obj, type)}


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_every_dispatch_method_of_an_allowed_class_was_reviewed() -> None:
    missing = set()
    for cls in ALLOWED_CLASSES.values():
        for method in DISPATCH_METHODS:
            owner = defining_class(cls, method)
            if owner is not None and not reviewed(owner, method):
                missing.add(f"{_name(owner)}.{method} (reached from {_name(cls)})")
    assert not missing, (
        "allowed classes gained dispatch methods nobody reviewed; review each and add it to "
        "capabilities.REVIEWED (or take the class off the allow-list):\n"
        + "\n".join(sorted(missing))
    )


def test_review_entries_are_real_and_have_reasons() -> None:
    owners = {
        (_name(owner), method)
        for cls in ALLOWED_CLASSES.values()
        for method in DISPATCH_METHODS
        if (owner := defining_class(cls, method)) is not None
    }
    for (owner, method), reason in REVIEWED.items():
        assert reason.strip(), (owner, method)
        assert method.startswith("__") and method.endswith("__"), method
    # nothing stale beyond the __setstate__ seeds (kept even if a class left the list)
    stale = {key for key in REVIEWED if key not in owners and key[1] != "__setstate__"}
    assert not stale, sorted(stale)


def test_defining_class_finds_the_owner_in_the_mro() -> None:
    from sklearn.linear_model import LogisticRegression

    owner = defining_class(LogisticRegression, "__setstate__")
    assert owner is not None and _name(owner) == "sklearn.base.BaseEstimator"
    assert defining_class(LogisticRegression, "__missing__") is None
    assert reviewed(owner, "__setstate__")


@pytest.mark.parametrize("pair", sorted(REMOVED), ids=".".join)
def test_removed_gadget_stays_off_the_list_and_is_explained(pair: tuple[str, str]) -> None:
    assert pair not in ALLOWED
    assert REMOVED[pair].strip()
    section = DOCS.read_text(encoding="utf-8").split("## How the allow-list is reviewed", 1)
    assert len(section) == 2, "docs/security.md lost its review section"
    assert f"{pair[1]}`" in section[1].split("\n## ", 1)[0], f"{pair} not explained in docs"


def test_a_pickled_scorer_is_refused_by_default() -> None:
    from sklearn.metrics import make_scorer, mean_squared_error

    data = pickle.dumps(make_scorer(mean_squared_error), protocol=5)
    with pytest.raises(UntrustedArtifactError) as info:
        TrustPolicy().unpickle(io.BytesIO(data))
    assert "sklearn.metrics._scorer._Scorer" in info.value.globals_needed


def test_every_pair_has_a_role_that_matches_what_it_is() -> None:
    assert set(ALLOWED.values()) <= {
        DATA_CLASS,
        CALLED_CLASS,
        RECONSTRUCTOR,
        PURE_FUNCTION,
        CONSTANT,
    }
    for pair, obj in RESOLVED.items():
        role = ALLOWED[pair]
        if role in (DATA_CLASS, CALLED_CLASS):
            assert isinstance(obj, type), f"{pair} is {role} but not a class"
        elif role in (RECONSTRUCTOR, PURE_FUNCTION):
            assert callable(obj) and not isinstance(obj, type), f"{pair} is {role}"
        else:
            assert not callable(obj) and not isinstance(obj, type), f"{pair} is a constant"


def test_pure_functions_are_the_reviewed_few() -> None:
    # a holder (FunctionTransformer.func, pooling_func) may call these with chosen
    # arguments; each must only compute on data and check its shapes
    pure = {pair for pair, role in ALLOWED.items() if role == PURE_FUNCTION}
    assert pure == {
        ("numpy", "mean"),
        ("scipy._lib.array_api_compat.numpy._aliases", "asarray"),
        ("sklearn.feature_selection._univariate_selection", "f_classif"),
    }


def test_state_callable_rules_name_real_classes_on_or_under_the_list() -> None:
    bases = {_name(k) for cls in ALLOWED_CLASSES.values() for k in cls.__mro__}
    for owner, rules in STATE_CALLABLE_ATTRIBUTES.items():
        module, _, qualname = owner.rpartition(".")
        try:
            cls = resolve_global(module, qualname)
        except Exception:
            continue
        assert isinstance(cls, type) and owner in bases, owner
        assert rules and all(isinstance(v, str) and v for v in rules.values()), owner


def test_module_hook_attributes_are_every_hook_dict_torch_keeps() -> None:
    torch = pytest.importorskip("torch")
    module = torch.nn.Linear(2, 2)
    hook_dicts = {
        name
        for name, value in vars(module).items()
        if isinstance(value, (dict, OrderedDict)) and "hook" in name
    }
    assert hook_dicts == MODULE_HOOK_ATTRIBUTES
    # and __call__ / __setstate__ read no hook attribute outside the list
    import inspect

    source = inspect.getsource(torch.nn.Module._call_impl) + inspect.getsource(
        torch.nn.Module.__setstate__
    )
    used = set(re.findall(r"self\.(_\w*hooks\w*)", source))
    assert used <= MODULE_HOOK_ATTRIBUTES | {"_get_backward_hooks", "_get_backward_pre_hooks"}
    assert "_compiled_call_impl" in MODULE_STATE_RULES
    assert "_compiled_call_impl" in inspect.getsource(torch.nn.Module._wrapped_call_impl)


def test_a_state_key_may_not_shadow_a_method() -> None:
    from sklearn.linear_model import LogisticRegression

    assert state_key_shadows_method(LogisticRegression, "predict")
    assert state_key_shadows_method(LogisticRegression, "decision_function")
    assert state_key_shadows_method(LogisticRegression, "__class__")
    assert not state_key_shadows_method(LogisticRegression, "coef_")
    assert not state_key_shadows_method(LogisticRegression, "C")
    assert not state_key_shadows_method(LogisticRegression, 3)


@pytest.mark.parametrize(
    "name", ["LogisticRegression", "RandomForestClassifier", "KNeighborsClassifier", "Pipeline"]
)
def test_real_estimator_state_never_shadows_a_method(name: str) -> None:
    from hostile.estimators import fitted

    if name == "Pipeline":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from hostile.estimators import data

        X, y, _ = data()
        estimator = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    else:
        estimator = fitted(name)
    for obj in (estimator, *getattr(estimator, "estimators_", [])[:2]):
        state = obj.__getstate__()
        assert not [k for k in state if state_key_shadows_method(type(obj), k)]


def test_torch_module_state_never_shadows_a_method_and_has_empty_hooks() -> None:
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LSTM(2, 2))
    for sub in module.modules():
        state = sub.__getstate__()
        assert not [k for k in state if state_key_shadows_method(type(sub), k)]
        assert all(not state[name] for name in MODULE_HOOK_ATTRIBUTES if name in state)
