"""How a store URL picks its catalog, where a database store's payloads go, and the errors
for URLs that cannot work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from persistkit.catalog import is_database_url
from persistkit.errors import StoreError
from persistkit.store import Store


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("sqlite:///models/catalog.db", True),
        ("postgresql://me@db/models", True),
        ("postgresql+psycopg://me@db/models", True),
        ("postgres://me@db/models", True),
        ("s3://bucket/models", False),
        ("memory://scratch", False),
        ("/srv/models", False),
        ("sqlite-models", False),
    ],
)
def test_database_urls_are_told_from_folders_and_object_stores(url: str, database: bool) -> None:
    assert is_database_url(url) is database


def test_a_sqlite_store_keeps_its_payloads_beside_the_database(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/catalog.db")
    art = store.save({"w": np.arange(3.0)}, "m")
    assert store.kind == "sqlite"
    assert art.path.parent == tmp_path / "catalog.blobs"
    assert (art.path / "persistkit.json").is_file()


def test_blobs_can_be_named_in_the_url_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_url = Store(f"sqlite:///{tmp_path}/a.db?blobs={tmp_path}/url-blobs")
    assert in_url.save({"w": np.arange(2.0)}, "m").path.parent == tmp_path / "url-blobs"
    monkeypatch.setenv("PERSISTKIT_BLOBS", str(tmp_path / "env-blobs"))
    # $PERSISTKIT_BLOBS is for PostgreSQL: a SQLite store keeps its payloads beside its file
    beside = Store(f"sqlite:///{tmp_path}/b.db")
    assert beside.save({"w": np.arange(2.0)}, "m").path.parent == tmp_path / "b.blobs"
    in_url = Store(f"sqlite:///{tmp_path}/c.db?blobs={tmp_path}/url-blobs")
    assert in_url.save({"w": np.arange(3.0)}, "m").path.parent == tmp_path / "url-blobs"


def test_a_postgresql_store_without_a_place_for_payloads_is_refused() -> None:
    with pytest.raises(StoreError, match="needs a place for its payloads") as caught:
        Store("postgresql://me@127.0.0.1:1/models")
    assert "PERSISTKIT_BLOBS" in str(caught.value.hint)


def test_an_in_memory_sqlite_catalog_is_refused() -> None:
    with pytest.raises(StoreError, match="in-memory SQLite"):
        Store("sqlite:///:memory:")


def test_an_unreachable_database_is_a_store_error_with_a_hint(tmp_path: Path) -> None:
    store = Store("postgresql://me@127.0.0.1:1/models", blobs=tmp_path / "blobs")
    with pytest.raises(StoreError, match="catalog database .* failed") as caught:
        store.list()
    assert "reachable" in str(caught.value.hint)


def test_reading_a_sqlite_store_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/nothing.db")
    assert store.list() == [] and not store.exists()
    assert not (tmp_path / "nothing.db").exists()
