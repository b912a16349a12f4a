"""Plugins that declare what they answer for (the ``persistkit.backends`` and
``persistkit.models`` entry-point groups) are imported only when a call needs them, and then
answer exactly as when every plugin is imported up front."""

from __future__ import annotations

import json
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

import persistkit
from persistkit import discovery, manager
from persistkit.errors import BackendNotFoundError, PluginError
from persistkit.manager import PluginEntry, Plugins, build_plugins

HOOKS = [name for name in dir(manager.hookspecs) if name.startswith("persistkit_")]


def _order(plugins: Plugins) -> dict[str, list[str]]:
    """Every hook's implementations, in the order pluggy calls them."""
    pm = plugins._pm
    return {
        hook: [impl.plugin_name for impl in reversed(getattr(pm.hook, hook).get_hookimpls())]
        for hook in HOOKS
    }


def _child(code: str, tmp_path: Path) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_first_party_plugins_declare_what_they_answer_for() -> None:
    entries = {e.name: e for e in manager._selected_entries()}
    assert entries["joblib"].backends == ("joblib",)
    assert set(entries["export"].backends) == {"export", "torchscript"}
    assert entries["sklearn"].models == ("sklearn",)
    assert entries["torch"].models == ("torch.nn",)
    assert not entries["callable"].lazy  # it answers for any callable: imported up front


def test_every_declared_backend_is_provided_and_every_provided_one_declared() -> None:
    """A backend missing from the declarations would make every load of it import all
    plugins; one declared but not provided would send its loads to the wrong plugin."""
    plugins = build_plugins()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        provided = {name: info.plugin for name, info in plugins.backends.items()}
    declared = {b: e.name for e in plugins._entries for b in e.backends}
    assert declared == provided


def test_a_load_in_a_fresh_process_imports_only_the_plugins_it_needs(tmp_path: Path) -> None:
    X = np.random.default_rng(0).normal(size=(40, 3))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    persistkit.save(model, tmp_path / "lr", backend="joblib")
    code = (
        "import json, sys, persistkit\n"
        "m = persistkit.load('lr')\n"
        "y = persistkit.predict(m, [[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]])\n"
        "print(json.dumps({'y': [int(v) for v in y], "
        "'plugins': sorted(k for k in sys.modules if k.startswith('persistkit_'))}))"
    )
    seen = _child(code, tmp_path)
    assert seen["y"] == [int(v) for v in model.predict([[0.5, 0, 0], [-0.5, 0, 0]])]
    assert seen["plugins"] == ["persistkit_callable", "persistkit_joblib", "persistkit_sklearn"]


def test_a_load_by_store_name_imports_only_the_plugins_it_needs(tmp_path: Path) -> None:
    """Telling a stored name from a missing model file must not ask every backend for its
    file suffixes (that imported every plugin on each load by name)."""
    X = np.random.default_rng(2).normal(size=(40, 3))
    model = LogisticRegression().fit(X, (X[:, 2] > 0).astype(int))
    store = str(tmp_path / "store")
    persistkit.save(model, "lr", store=store, backend="joblib")
    code = (
        "import json, sys, persistkit\n"
        f"m = persistkit.load('lr', store={store!r})\n"
        "print(json.dumps(sorted(k for k in sys.modules if k.startswith('persistkit_'))))"
    )
    seen = _child(code, tmp_path)
    assert seen == ["persistkit_callable", "persistkit_joblib", "persistkit_sklearn"]


def test_every_plugin_is_imported_when_a_call_is_not_routed(tmp_path: Path) -> None:
    code = (
        "import json, sys, persistkit\n"
        "names = [b.name for b in persistkit.backends()]\n"
        "print(json.dumps(sorted(k for k in sys.modules if k.startswith('persistkit_') "
        "and '.' not in k)))"
    )
    imported = _child(code, tmp_path)
    assert len(imported) == len(manager._selected_entries())


def test_hooks_answer_in_the_eager_order_whatever_order_plugins_arrive_in() -> None:
    """pluggy calls later registrations first: plugins imported lazily, in any order, must
    end up registered in entry-point order (then extra plugins), as eager ones are."""

    class Extra:
        @persistkit.hookimpl
        def persistkit_freeze(self, model: Any) -> Any:
            return None

    eager = build_plugins(Extra(), lazy=False)
    expected = _order(eager)
    names = [e.name for e in manager._selected_entries()]
    for arrival in (names, list(reversed(names)), names[1::2] + names[::2]):
        lazy = build_plugins(Extra(), lazy=True)
        assert not lazy._complete
        for name in arrival:
            lazy._ensure([name])
        assert _order(lazy) == expected
    assert set(eager.backends) == set(build_plugins(lazy=True).backends)


class _Tiny:
    def __call__(self, x: Any) -> Any:
        return np.asarray(x) * 2


def _models() -> list[tuple[str, Any, Any]]:
    X = np.random.default_rng(1).normal(size=(30, 4))
    models: list[tuple[str, Any, Any]] = [
        ("sklearn", LogisticRegression().fit(X, (X[:, 1] > 0).astype(int)), X[:3]),
        ("function", np.tanh, X[:3]),
        ("callable object", _Tiny(), X[:3]),
    ]
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    models.append(("torch", torch.nn.Sequential(torch.nn.Linear(4, 2)), X[:3].astype("f4")))
    return models


@pytest.mark.parametrize("kind", ["sklearn", "function", "callable object", "torch"])
def test_freeze_and_predict_answer_as_with_every_plugin_imported(kind: str) -> None:
    _, model, inputs = next(m for m in _models() if m[0] == kind)
    answers = {}
    for lazy in (False, True):
        plugins = build_plugins(lazy=lazy)
        frozen = plugins.hook_for_model(model).persistkit_freeze(model=model)
        target = model if frozen is None else frozen
        hook = plugins.hook_for_model(target)
        result = hook.persistkit_predict(model=target, inputs=inputs, options={})
        answers[lazy] = (frozen is None, type(frozen), np.asarray(result).tolist())
    assert answers[True] == answers[False]


def _provider(*backends: str) -> object:
    """A plugin that declares ``backends`` and nothing else."""

    class Provider:
        @persistkit.hookimpl
        def persistkit_backends(self) -> list[persistkit.BackendInfo]:
            return [persistkit.BackendInfo(b, safe=True) for b in backends]

    return Provider()


def _install(monkeypatch: pytest.MonkeyPatch, module_name: str, plugin: object) -> None:
    """Make ``module_name:plugin`` importable as ``plugin``."""
    module = types.ModuleType(module_name)
    module.plugin = plugin  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module_name, module)


def _fake_plugin(monkeypatch: pytest.MonkeyPatch, module_name: str, *backends: str) -> None:
    _install(monkeypatch, module_name, _provider(*backends))


def _plugins_of(*entries: PluginEntry) -> Plugins:
    plugins = Plugins(manager._new_manager(), list(entries))
    plugins.register_initial()
    return plugins


def test_a_plugin_is_imported_only_when_its_backend_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_plugin(monkeypatch, "fake_one", "one")
    _fake_plugin(monkeypatch, "fake_two", "two")
    plugins = _plugins_of(
        PluginEntry("one", "fake_one:plugin", backends=("one",)),
        PluginEntry("two", "fake_two:plugin", backends=("two",)),
    )
    assert plugins._registered == []
    assert plugins.backend("two").plugin == "two"
    assert plugins._registered == ["two"]
    with pytest.raises(BackendNotFoundError, match="installed backends: one, two"):
        plugins.backend("three")  # nobody declares it: every plugin is asked
    assert plugins._registered == ["one", "two"]


def test_a_backend_declared_but_not_provided_is_a_warning_naming_the_plugin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_plugin(monkeypatch, "fake_liar", "real")
    plugins = _plugins_of(PluginEntry("liar", "fake_liar:plugin", backends=("claimed",)))
    with pytest.warns(RuntimeWarning, match="'liar' declares the backend.*claimed"):
        plugins.hook_for_backend("claimed")


def test_a_backend_declared_by_two_plugins_is_an_error_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    groups = {
        manager.ENTRY_POINT_GROUP: [("a", "mod_a:plugin"), ("b", "mod_b:plugin")],
        manager.BACKENDS_GROUP: [("same", "mod_a:plugin"), ("same", "mod_b:plugin")],
        manager.MODELS_GROUP: [],
    }
    monkeypatch.setattr(discovery, "entry_points_of", lambda names: {g: groups[g] for g in names})
    with pytest.raises(PluginError, match="'same' is declared by two plugins: 'a' and 'b'"):
        manager._selected_entries()


def test_a_broken_lazy_plugin_is_a_warning_when_it_is_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugins = _plugins_of(PluginEntry("gone", "no_such_module_xyz:plugin", backends=("gone",)))
    with (
        pytest.warns(RuntimeWarning, match="'gone'.*failed to load and was skipped"),
        pytest.raises(BackendNotFoundError),
    ):
        plugins.backend("gone")
    assert "gone" in plugins.broken


def test_models_are_matched_by_module_prefix() -> None:
    assert manager._within("torch.nn.modules.module", "torch.nn")
    assert manager._within("torch.nn", "torch.nn")
    assert not manager._within("torch.nnx", "torch.nn")
    assert not manager._within("torch", "torch.nn")


def test_lazy_plugins_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTKIT_LAZY_PLUGINS", "0")
    plugins = build_plugins()
    assert plugins._complete
    assert len(plugins._registered) == len(manager._selected_entries())


def test_a_reordering_registration_never_changes_the_manager_a_caller_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Plugins that must answer after a newly imported one are registered again behind it in
    a new manager: a hook called meanwhile from another thread (the server predicts in
    threads) sees every plugin it saw before, never a set with one taken out."""
    _fake_plugin(monkeypatch, "fake_first", "first")
    _fake_plugin(monkeypatch, "fake_last", "last")
    plugins = _plugins_of(
        PluginEntry("first", "fake_first:plugin", backends=("first",)),
        PluginEntry("last", "fake_last:plugin"),  # declares nothing: registered at once
    )
    held = plugins._pm
    assert plugins._registered == ["last"]
    plugins.hook_for_backend("first")  # entry-point order puts it before "last"
    assert plugins._pm is not held
    assert plugins._registered == ["first", "last"]
    assert [p for p, _ in held.list_name_plugin()] == ["last"]  # untouched
    assert _order(plugins)["persistkit_backends"] == ["last", "first"]


def test_a_lazy_backend_that_a_plugin_started_at_once_also_provides_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_plugin(monkeypatch, "fake_eager", "clash")
    _fake_plugin(monkeypatch, "fake_lazy", "clash")
    with pytest.raises(PluginError, match="'clash' is declared by two plugins"):
        _plugins_of(
            PluginEntry("eager", "fake_eager:plugin"),
            PluginEntry("lazy", "fake_lazy:plugin", backends=("clash",)),
        )


def test_an_undeclared_clash_found_late_stays_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two plugins providing one backend is an error on every start of eager plugins; found
    only when the lazy one is imported, it must not be said once and then forgotten."""
    _fake_plugin(monkeypatch, "fake_eager", "shared")
    _fake_plugin(monkeypatch, "fake_lazy", "own", "shared")
    plugins = _plugins_of(
        PluginEntry("eager", "fake_eager:plugin"),
        PluginEntry("lazy", "fake_lazy:plugin", backends=("own",)),
    )
    for _ in range(2):
        with pytest.raises(PluginError, match="'shared' is declared by two plugins"):
            plugins.backend("own")


# --- corner cases a review found: each answered differently from eager mode, lost or
# misreported a plugin, or forgot an error ----------------------------------------------------


def test_an_extra_plugin_that_is_also_a_lazy_entry_point_starts_as_in_eager_mode() -> None:
    import persistkit_joblib

    eager = build_plugins(persistkit_joblib.plugin, lazy=False)
    lazy = build_plugins(persistkit_joblib.plugin, lazy=True)
    assert lazy.backend("joblib").plugin == eager.backend("joblib").plugin


def test_an_error_from_a_lazy_plugins_backends_stays_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Boom:
        @persistkit.hookimpl
        def persistkit_backends(self) -> list[persistkit.BackendInfo]:
            raise RuntimeError("boom")

    _install(monkeypatch, "review_fake_ok", _provider("okb"))
    _install(monkeypatch, "review_fake_boom", Boom())
    plugins = _plugins_of(
        PluginEntry("ok", "review_fake_ok:plugin", backends=("okb",)),
        PluginEntry("boom", "review_fake_boom:plugin", backends=("boomb",)),
    )
    for _ in range(2):  # eager plugins raise this on every start
        with pytest.raises(RuntimeError, match="boom"):
            plugins.backend("boomb")


def test_a_plugin_registered_under_a_duplicated_entry_point_name_survives_a_reordering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _install(monkeypatch, "review_fake_early", _provider("early"))
    _install(monkeypatch, "review_fake_dup_a", _provider("dup_a"))
    _install(monkeypatch, "review_fake_dup_b", _provider("dup_b"))
    with pytest.warns(RuntimeWarning):
        plugins = _plugins_of(
            PluginEntry("early", "review_fake_early:plugin", backends=("early",)),
            PluginEntry("dup", "review_fake_dup_a:plugin"),
            PluginEntry("dup", "review_fake_dup_b:plugin"),
        )
    assert plugins._pm.get_plugin("dup") is not None  # registered at start
    plugins.hook_for_backend("early")  # entry-point order puts it first: a reordering
    assert plugins._pm.get_plugin("dup") is not None


def test_a_plugin_published_under_two_names_starts_as_in_eager_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _install(monkeypatch, "review_fake_alias", _provider("aliased"))
    groups: dict[str, list[tuple[str, str]]] = {
        manager.ENTRY_POINT_GROUP: [
            ("one", "review_fake_alias:plugin"),
            ("uno", "review_fake_alias:plugin"),
        ],
        manager.BACKENDS_GROUP: [("aliased", "review_fake_alias:plugin")],
        manager.MODELS_GROUP: [],
    }
    monkeypatch.setattr(discovery, "entry_points_of", lambda names: {g: groups[g] for g in names})
    monkeypatch.delenv("PERSISTKIT_PLUGINS", raising=False)
    monkeypatch.delenv("PERSISTKIT_DISABLE_PLUGINS", raising=False)
    with pytest.warns(RuntimeWarning, match="'uno'"):
        eager = build_plugins(lazy=False)
    assert eager.backend("aliased").plugin == "one"
    with pytest.warns(RuntimeWarning, match="'uno'"):
        lazy = build_plugins(lazy=True)
    assert lazy.backend("aliased").plugin == "one"


# -- registering without a rebuild ------------------------------------------------------------
#: hook implementations a generated plugin may have: (hook, kind), kinds as pluggy sorts them
_IMPL_HOOKS = ("persistkit_recommend", "persistkit_describe", "persistkit_sniff")
_IMPL_KINDS = ("plain", "tryfirst", "trylast", "wrapper", "tryfirst+trylast")


def _generated_plugin(impls: list[tuple[str, str]]) -> object:
    """A plugin object with one implementation of each ``(hook, kind)`` in ``impls``."""
    namespace: dict[str, Any] = {}
    for hook, kind in impls:
        options = {
            "plain": {},
            "wrapper": {"wrapper": True},
            "tryfirst+trylast": {"tryfirst": True, "trylast": True},
        }.get(kind, {kind: True})
        if hook == "persistkit_sniff":
            if kind == "wrapper":

                def impl(self: Any, path: Any, head: Any) -> Any:
                    return (yield)
            else:

                def impl(self: Any, path: Any, head: Any) -> Any:
                    return None
        elif kind == "wrapper":

            def impl(self: Any, model: Any) -> Any:
                return (yield)
        else:

            def impl(self: Any, model: Any) -> Any:
                return None

        namespace[hook] = persistkit.hookimpl(**options)(impl)
    return type("Generated", (), namespace)()


plugin_specs = st.lists(
    st.lists(
        st.tuples(st.sampled_from(_IMPL_HOOKS), st.sampled_from(_IMPL_KINDS)),
        max_size=3,
        unique_by=lambda hook_kind: hook_kind[0],
    ),
    min_size=2,
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(specs=plugin_specs, data=st.data())
def test_generated_plugins_answer_in_the_eager_order_in_any_arrival_order(
    specs: list[list[tuple[str, str]]], data: st.DataObject
) -> None:
    """Registering a plugin without a rebuild is allowed only when no registered plugin that
    comes later in entry-point order implements one of its hooks in the same kind: attacked
    with generated plugins (hooks shared or not, in every kind) arriving in generated orders."""
    objects = [_generated_plugin(impls) for impls in specs]
    modules = {}
    for i, plugin in enumerate(objects):
        module = types.ModuleType(f"generated_{i}")
        module.plugin = plugin  # type: ignore[attr-defined]
        modules[module.__name__] = module
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        names = [f"p{i}" for i in range(len(objects))]
        eager = _plugins_of(*(PluginEntry(n, f"generated_{i}:plugin") for i, n in enumerate(names)))
        lazy = _plugins_of(
            *(
                PluginEntry(n, f"generated_{i}:plugin", models=(f"m{i}",))
                for i, n in enumerate(names)
            )
        )
        for name in data.draw(st.permutations(names)):
            lazy._ensure([name])
        assert _order(lazy) == _order(eager)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def test_a_scikit_learn_load_registers_its_plugins_without_a_rebuild(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """joblib and sklearn come before callable (registered at start) in entry-point order,
    but share no hook of the same kind with it (callable's are trylast): no new manager."""
    plugins = build_plugins(lazy=True)
    built = []
    real = manager._new_manager
    monkeypatch.setattr(manager, "_new_manager", lambda: built.append(1) or real())
    plugins.hook_for_backend("joblib")
    plugins.hook_for_model(LogisticRegression())
    assert built == []
    assert set(plugins._registered) == {"callable", "joblib", "sklearn"}
