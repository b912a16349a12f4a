"""Entry points and versions remembered between processes (persistkit.discovery) are
forgotten as soon as a distribution is installed, upgraded or removed."""

from __future__ import annotations

import gc
import importlib.metadata
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

import persistkit
from persistkit import discovery

DAY_NS = 86_400 * 10**9
GROUP = "persistkit"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site folder that is all of ``sys.path`` (so the test decides every key)."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.setattr(sys, "path", [str(folder)])
    return folder


def _install(site: Path, name: str, version: str, plugins: dict[str, str]) -> None:
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"  # as installers name it
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{k} = {v}\n" for k, v in plugins.items())
    (dist / "entry_points.txt").write_text(f"[persistkit]\n{lines}")


def _settle(site: Path) -> None:
    """Date the folder and its distributions a day back, as if installed yesterday."""
    past = time.time_ns() - DAY_NS
    for path in [site, *site.iterdir()]:
        os.utime(path, ns=(past, past))


def _forbid_scanning(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, reading the distributions' entry points fails the test."""

    def no_scan(**_: object) -> object:
        raise AssertionError("the distributions were scanned again")

    monkeypatch.setattr(importlib.metadata, "entry_points", no_scan)


def _record_files() -> list[Path]:
    return list((persistkit.config.home() / "discovery").glob("*.json"))


def test_entry_points_are_remembered_once_the_folder_is_settled(site: Path) -> None:
    _install(site, "plug-a", "1.0", {"a": "plug_a:plugin"})
    _settle(site)
    assert discovery.entry_points(GROUP) == [("a", "plug_a:plugin")]
    assert len(_record_files()) == 1


def test_other_files_beside_the_distributions_keep_the_record(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(site, "plug-a", "1.0", {"a": "plug_a:plugin"})
    _settle(site)
    discovery.entry_points(GROUP)
    (site / "model.safetensors").write_bytes(b"saved next to the script")
    _forbid_scanning(monkeypatch)
    assert discovery.entry_points(GROUP) == [("a", "plug_a:plugin")]


def test_a_reinstall_of_the_same_version_is_seen(site: Path) -> None:
    _install(site, "plug-a", "1.0", {"a": "plug_a:plugin"})
    _settle(site)
    assert discovery.entry_points(GROUP) == [("a", "plug_a:plugin")]
    shutil.rmtree(site / "plug_a-1.0.dist-info")
    _install(site, "plug-a", "1.0", {"a": "plug_a:plugin", "a2": "plug_a:other"})
    assert discovery.entry_points(GROUP) == [("a", "plug_a:plugin"), ("a2", "plug_a:other")]


def test_a_folder_changed_just_now_is_not_remembered(site: Path) -> None:
    _install(site, "plug-a", "1.0", {"a": "plug_a:plugin"})
    assert discovery.entry_points(GROUP) == [("a", "plug_a:plugin")]
    assert _record_files() == []


def test_remembered_entry_points_are_read_without_scanning(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(site, "plug-a", "1.0", {"a": "plug_a:plugin"})
    _settle(site)
    discovery.entry_points(GROUP)
    _forbid_scanning(monkeypatch)
    assert discovery.entry_points(GROUP) == [("a", "plug_a:plugin")]


def test_a_plugin_installed_later_is_found(site: Path) -> None:
    _install(site, "plug-a", "1.0", {"a": "plug_a:plugin"})
    _settle(site)
    assert [name for name, _ in discovery.entry_points(GROUP)] == ["a"]
    _install(site, "plug-b", "1.0", {"b": "plug_b:plugin"})
    assert sorted(name for name, _ in discovery.entry_points(GROUP)) == ["a", "b"]


def test_a_plugin_removed_later_is_forgotten(site: Path) -> None:
    _install(site, "plug-a", "1.0", {"a": "plug_a:plugin"})
    _install(site, "plug-b", "1.0", {"b": "plug_b:plugin"})
    _settle(site)
    assert sorted(name for name, _ in discovery.entry_points(GROUP)) == ["a", "b"]
    shutil.rmtree(site / "plug_b-1.0.dist-info")
    assert [name for name, _ in discovery.entry_points(GROUP)] == ["a"]


def test_a_remembered_version_follows_an_upgrade(site: Path) -> None:
    _install(site, "libx", "1.0", {})
    _settle(site)
    assert discovery.installed_version("libx") == "1.0"
    assert discovery.installed_version("libx") == "1.0"  # now from the record
    shutil.rmtree(site / "libx-1.0.dist-info")
    _install(site, "libx", "2.1", {})
    assert discovery.installed_version("libx") == "2.1"


def test_a_distribution_installed_later_gets_a_version(site: Path) -> None:
    _settle(site)
    assert discovery.installed_version("liby") is None
    _install(site, "liby", "0.3", {})
    _settle(site)  # even where the folder's time would not tell
    assert discovery.installed_version("liby") == "0.3"


def test_the_record_can_be_turned_off(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTKIT_DISCOVERY_CACHE", "0")
    _install(site, "plug-a", "1.0", {"a": "plug_a:plugin"})
    _settle(site)
    discovery.entry_points(GROUP)
    assert _record_files() == []


def test_entry_point_values_load_like_importlib_metadata() -> None:
    assert discovery.load_entry_point("os.path:join") is os.path.join
    assert discovery.load_entry_point("os.path") is os.path
    assert discovery.load_entry_point("os:path.join [extra]") is os.path.join


class _CollectorWatch:
    """Records, from inside every backend's load, whether the cyclic collector is on."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    @persistkit.hookimpl(wrapper=True)
    def persistkit_load(self, backend: str) -> object:
        self.seen.append(gc.isenabled())
        return (yield)


def test_the_collector_is_paused_during_a_load_and_restored_after(tmp_path: Path) -> None:
    from persistkit.manager import build_plugins, reset_plugins

    art = persistkit.save({"w": [1.0, 2.0]}, tmp_path / "a", backend="pickle")
    watch = _CollectorWatch()
    reset_plugins(build_plugins(watch))
    try:
        persistkit.load(art.path, trusted=True)
        assert gc.isenabled()
        gc.disable()
        persistkit.load(art.path, trusted=True)
        assert not gc.isenabled()  # a caller who turned it off keeps it off
    finally:
        gc.enable()
        reset_plugins()
    assert watch.seen == [False, False]


@pytest.mark.parametrize("xdg", [None, "", "  ", "/srv/data", "~/data", "relative/data"])
def test_home_folder_is_the_one_platformdirs_names(monkeypatch, xdg):
    """persistkit works out the Linux user data folder itself (importing platformdirs costs
    ~2 ms of a first load); it must stay the folder platformdirs names, or a user's default
    store would seem to vanish."""
    platformdirs = pytest.importorskip("platformdirs")
    from persistkit.config import user_data_dir

    monkeypatch.delenv("PERSISTKIT_HOME", raising=False)
    if xdg is None:
        monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_DATA_HOME", xdg)
    assert user_data_dir() == platformdirs.user_data_dir("persistkit", appauthor=False)
    assert persistkit.config.home() == Path(user_data_dir())
