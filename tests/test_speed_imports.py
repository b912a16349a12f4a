"""A first load imports only what it needs (issue 16, target 2): a safetensors module or a
trusted joblib model loads without the pickle VM, the .pt2 audit or the converting backends;
a pickle nobody trusts still goes through the restricted VM; registration finds exactly the
hook implementations pluggy itself finds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pluggy
import pytest

import persistkit
from persistkit import discovery, manager

torch = pytest.importorskip("torch")
sklearn_linear = pytest.importorskip("sklearn.linear_model")

#: modules a load of a safe format (or a trusted joblib file) must not import
NOT_NEEDED = (
    "persistkit.safety.vm",
    "persistkit.safety.pickle_audit",
    "persistkit.safety.allowlist",
    "persistkit.safety.pt2_audit",
    "persistkit.safety.joblib_reader",
    "persistkit.safety.audit",
    "persistkit_export.export",
    "persistkit_export.torchscript",
    "persistkit_onnx.convert",
    "persistkit_onnx.model",
    "persistkit.store",
    "persistkit.artifact",
)

LOADER = textwrap.dedent(
    """
    import dataclasses, json, sys
    import persistkit
    defined = []  # persistkit's dataclasses the load defines (each costs ~1 ms to define)
    plain = dataclasses.dataclass
    def counting(cls=None, /, **options):
        def wrap(c):
            if c.__module__.startswith("persistkit"):
                defined.append(f"{c.__module__}.{c.__qualname__}")
            return plain(**options)(c)
        return wrap if cls is None else wrap(cls)
    dataclasses.dataclass = counting
    model = persistkit.load(sys.argv[1])
    print(json.dumps({"type": type(model).__name__,
                      "modules": sorted(m for m in sys.modules if "persistkit" in m),
                      "dataclasses": defined}))
    """
)


def _load_in_fresh_process(path: Path, home: Path) -> dict[str, object]:
    """Load ``path`` in a new interpreter whose persistkit home is ``home``; what it loaded
    and which persistkit modules it had imported by then."""
    env = {**os.environ, "PERSISTKIT_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-c", LOADER, str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return found


@pytest.fixture
def lr() -> object:
    x = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.2], [0.1, 0.9]]
    return sklearn_linear.LogisticRegression().fit(x, [0, 1, 1, 0])


def test_safetensors_load_imports_no_pickle_vm_audit_or_converter(
    tmp_path: Path, isolated_home: Path
) -> None:
    art = persistkit.save(torch.nn.Linear(4, 2), tmp_path / "lin", backend="safetensors")
    loaded = _load_in_fresh_process(art.path, isolated_home)
    assert loaded["type"] == "Linear"
    assert set(NOT_NEEDED) & set(loaded["modules"]) == set()  # type: ignore[call-overload]
    assert loaded["dataclasses"] == []


def test_trusted_joblib_load_imports_no_pickle_vm_audit_or_converter(
    tmp_path: Path, isolated_home: Path, lr: object
) -> None:
    art = persistkit.save(lr, tmp_path / "lr", backend="joblib")
    loaded = _load_in_fresh_process(art.path, isolated_home)  # our own seal: trusted
    assert loaded["type"] == "LogisticRegression"
    assert set(NOT_NEEDED) & set(loaded["modules"]) == set()  # type: ignore[call-overload]
    assert loaded["dataclasses"] == []


@pytest.mark.parametrize("backend", ["joblib", "pickle"])
def test_a_pickle_nobody_trusts_still_goes_through_the_restricted_vm(
    tmp_path: Path, lr: object, backend: str
) -> None:
    art = persistkit.save(lr, tmp_path / backend, backend=backend)
    stranger = tmp_path / "another-home"  # another key: the seal is not ours there
    loaded = _load_in_fresh_process(art.path, stranger)
    assert loaded["type"] == "LogisticRegression"
    assert "persistkit.safety.vm" in loaded["modules"]  # type: ignore[operator]


def test_export_and_onnx_backends_are_declared_without_importing_them() -> None:
    code = textwrap.dedent(
        """
        import sys
        from persistkit.manager import get_plugins
        found = get_plugins().backends
        print(found["export"].plugin, found["torchscript"].plugin, found["onnx"].plugin)
        print(sorted(m for m in ("persistkit_export.export", "persistkit_export.torchscript",
                                 "persistkit_onnx.convert", "persistkit_onnx.model")
                     if m in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["export export onnx", "[]"]


def test_lazy_export_plugin_still_hands_each_hook_to_its_backend() -> None:
    import persistkit_export

    plugin = persistkit_export.ExportPlugin()
    assert plugin.persistkit_can_save(model=torch.nn.Linear(2, 2), backend="export") is True
    assert plugin.persistkit_can_save(model=torch.nn.Linear(2, 2), backend="torchscript") is False
    assert plugin.persistkit_can_save(model=object(), backend="joblib") is None
    assert plugin.export.info.name == "export"
    assert persistkit_export.ExportBackend is type(plugin.export)


def _first_party_plugins() -> list[tuple[str, object]]:
    return [
        (entry.name, discovery.load_entry_point(entry.value))
        for entry in manager._selected_entries()
    ]


def test_registration_finds_what_pluggy_finds_on_every_first_party_name() -> None:
    ours = manager._PluginManager("persistkit")
    theirs = pluggy.PluginManager("persistkit")
    plugins = _first_party_plugins()
    assert len(plugins) >= 10
    for name, plugin in plugins:
        for attr in dir(plugin):
            if attr.startswith("__") and attr.endswith("__"):
                continue
            assert ours.parse_hookimpl_opts(plugin, attr) == theirs.parse_hookimpl_opts(
                plugin, attr
            ), (name, attr)


class _ThirdParty:
    """Hook implementations in every form pluggy accepts, under other names too."""

    def __init__(self) -> None:
        self.instance_hook = types.MethodType(_bound_backends, self)

    @persistkit.hookimpl(specname="persistkit_backends")
    def declared(self) -> list[persistkit.BackendInfo]:
        return [persistkit.BackendInfo("third-a", safe=True)]

    @staticmethod
    @persistkit.hookimpl(specname="persistkit_backends")
    def declared_static() -> list[persistkit.BackendInfo]:
        return [persistkit.BackendInfo("third-b", safe=True)]

    @classmethod
    @persistkit.hookimpl(specname="persistkit_backends")
    def declared_class(cls) -> list[persistkit.BackendInfo]:
        return [persistkit.BackendInfo("third-c", safe=True)]

    def not_a_hook(self) -> None:
        """Plain methods are skipped."""

    # data is never a hook, whatever it holds; a property is left to pluggy (never run)
    label = "third"
    info = persistkit.BackendInfo("third-info", safe=True)
    marked_data = staticmethod(lambda: None)
    holder = types.SimpleNamespace(persistkit_impl={})

    @property
    def hook_property(self) -> Any:
        return _bound_backends


@persistkit.hookimpl(specname="persistkit_backends")
def _bound_backends(self: object) -> list[persistkit.BackendInfo]:
    return [persistkit.BackendInfo("third-d", safe=True)]


def test_third_party_hooks_in_every_form_still_register() -> None:
    module = types.ModuleType("third_party_plugin")
    module.hook = _bound_backends.__get__(object())  # type: ignore[attr-defined]
    module.Path = Path  # type: ignore[attr-defined]  # imported names: never hooks
    built = manager.build_plugins(_ThirdParty(), load_entry_points=False)
    assert {"third-a", "third-b", "third-c", "third-d"} <= set(built.backends)
    pm = manager._PluginManager("persistkit")
    plain = pluggy.PluginManager("persistkit")
    for attr in ("hook", "Path"):
        assert pm.parse_hookimpl_opts(module, attr) == plain.parse_hookimpl_opts(module, attr)
    assert pm.parse_hookimpl_opts(module, "hook") is not None
    third = _ThirdParty()
    for attr in dir(third):
        assert pm.parse_hookimpl_opts(third, attr) == plain.parse_hookimpl_opts(third, attr), attr
