"""Regressions a review of this stop's change found (records as ``persistkit.values.Value``,
lazy plugins registered without a rebuild); each failed before its fix."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import persistkit
from persistkit import manager
from persistkit.manager import PluginEntry, Plugins
from persistkit.manifest import FileEntry, Manifest
from persistkit.safety import read_safetensors_header

ROOT = Path(__file__).resolve().parents[1]
SHA = "a" * 64


# -- benchmarks/bench_catalog.py still calls dataclasses.replace on a Manifest ----------------
def test_bench_catalog_makes_its_versions_from_a_manifest() -> None:
    spec = importlib.util.spec_from_file_location(
        "_review_bench_catalog", ROOT / "benchmarks" / "bench_catalog.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved_path = list(sys.path)
    try:
        spec.loader.exec_module(module)  # only stdlib imports; adds tests/ to sys.path
    finally:
        sys.path[:] = saved_path
    template = Manifest("pickle", [FileEntry("m.pkl", 1, SHA)], name="gnome", version=1)
    made = module._manifests(template, 3)
    assert [m.version for m in made] == [2, 3]
    assert all(m.seal is None for m in made)


# -- a lazily imported plugin joins the live manager in the wrong place -----------------------
class _LastOnly:
    @persistkit.hookimpl(trylast=True)
    def persistkit_describe(self, model: Any) -> Any:
        return None


class _FirstAndLast:
    # pluggy places an implementation marked both tryfirst and trylast as a trylast one
    @persistkit.hookimpl(tryfirst=True, trylast=True)
    def persistkit_describe(self, model: Any) -> Any:
        return None


def _describe_order(plugins: Plugins) -> list[str]:
    impls = plugins._pm.hook.persistkit_describe.get_hookimpls()
    return [impl.plugin_name for impl in reversed(impls)]


def _two_plugins(*, lazy: bool) -> Plugins:
    declared: list[dict[str, Any]] = (
        [{"models": ("m0",)}, {"models": ("m1",)}] if lazy else [{}, {}]
    )
    plugins = Plugins(
        manager._new_manager(),
        [
            PluginEntry("a", "_review_plugin_a:plugin", **declared[0]),
            PluginEntry("b", "_review_plugin_b:plugin", **declared[1]),
        ],
    )
    plugins.register_initial()
    return plugins


def test_tryfirst_and_trylast_impls_keep_the_eager_order(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, cls in [("_review_plugin_a", _LastOnly), ("_review_plugin_b", _FirstAndLast)]:
        module = types.ModuleType(name)
        module.plugin = cls()  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, name, module)
    eager = _describe_order(_two_plugins(lazy=False))
    lazy = _two_plugins(lazy=True)
    lazy._ensure(["b"])  # b arrives first, then a (earlier in entry-point order)
    lazy._ensure(["a"])
    assert _describe_order(lazy) == eager


# -- public records that were NamedTuples / dataclasses ---------------------------------------
def _safetensors_file(path: Path) -> Path:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 8)
    return path


def test_a_safetensors_header_still_unpacks(tmp_path: Path) -> None:
    tensors, metadata, data_start, file_size = read_safetensors_header(  # type: ignore[misc]
        _safetensors_file(tmp_path / "w.safetensors")
    )
    name, dtype, shape, begin, end = tensors[0]
    assert (name, dtype, shape, begin, end) == ("w", "F32", (2,), 0, 8)
    assert metadata == {} and data_start + 8 == file_size
