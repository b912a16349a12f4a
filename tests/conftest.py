"""Shared fixtures: every test gets its own persistkit home (keys, caches, default store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from persistkit.manager import reset_plugins


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A fresh PERSISTKIT_HOME (signing key, caches) and default store for each test."""
    home = tmp_path_factory.mktemp("pkhome")
    monkeypatch.setenv("PERSISTKIT_HOME", str(home))
    monkeypatch.delenv("PERSISTKIT_STORE", raising=False)
    monkeypatch.delenv("PERSISTKIT_PLUGINS", raising=False)
    monkeypatch.delenv("PERSISTKIT_DISABLE_PLUGINS", raising=False)
    reset_plugins()
    yield home
    reset_plugins()


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"
