"""Lazy plugins (src/persistkit/manager.py) in the corner cases a review found: each of these
answered differently from eager mode, lost or misreported a plugin, or forgot an error."""

from __future__ import annotations

import sys
import types

import pytest

import persistkit
from persistkit import discovery, manager
from persistkit.manager import PluginEntry, Plugins, build_plugins


def _install(monkeypatch: pytest.MonkeyPatch, module_name: str, plugin: object) -> None:
    module = types.ModuleType(module_name)
    module.plugin = plugin  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module_name, module)


def _provider(*backends: str) -> object:
    class Provider:
        @persistkit.hookimpl
        def persistkit_backends(self) -> list[persistkit.BackendInfo]:
            return [persistkit.BackendInfo(b, safe=True) for b in backends]

    return Provider()


def _plugins_of(*entries: PluginEntry) -> Plugins:
    plugins = Plugins(manager._new_manager(), list(entries))
    plugins.register_initial()
    return plugins


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
