"""The database catalog's schema over releases: a golden store made by an earlier release
opens and answers, an older schema is upgraded on opening, a newer one is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from persistkit.catalog import migrations
from persistkit.errors import StoreError
from persistkit.store import Store
from postgres_server import fresh_postgres_url, postgres_server  # noqa: F401  (fixtures)

GOLDEN = sorted(Path(__file__).with_name("golden").glob("catalog-*"))


def _schema_version(db: Path) -> int | None:
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        found = migrations.current_version(conn)
    engine.dispose()
    return found


@pytest.fixture(params=GOLDEN, ids=[p.name for p in GOLDEN])
def golden(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Store, dict[str, object]]:
    """A copy of a golden store (opening it may upgrade it) and what it must answer."""
    copy = tmp_path / request.param.name
    shutil.copytree(request.param, copy)
    expected = json.loads((copy / "expected.json").read_text())
    return Store(f"sqlite:///{copy}/catalog.db"), expected


def test_a_golden_store_lists_its_models_and_versions(golden: tuple[Store, dict]) -> None:
    store, expected = golden
    assert store.list() == expected["names"]
    for name, numbers in expected["versions"].items():
        assert [v.version for v in store.versions(name)] == numbers


def test_a_golden_store_keeps_digests_tags_and_deleted_numbers(
    golden: tuple[Store, dict],
) -> None:
    store, expected = golden
    for ref, digest in expected["digests"].items():
        assert store.digest(ref) == digest
        assert store.tags(ref) == expected["tags"][ref]
    for name, numbers in expected["deleted"].items():
        assert store.catalog.tombstones(name) == numbers
        assert store.save({"w": np.zeros(1)}, name).version == max(numbers) + 1


def test_a_golden_store_resolves_aliases_and_loads_models(golden: tuple[Store, dict]) -> None:
    store, expected = golden
    for name, aliases in expected["aliases"].items():
        assert store.aliases(name) == aliases
    for ref, values in expected["arrays"].items():
        arrays = store.load(ref)
        assert [list(a.ravel()) for a in arrays.values()] == [values]


def test_opening_a_store_of_an_older_schema_upgrades_it(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        migrations.upgrade(conn, str(db), target=1)
    engine.dispose()
    assert _schema_version(db) == 1
    store = Store(f"sqlite:///{db}")
    assert store.list() == []
    assert _schema_version(db) == migrations.SCHEMA_VERSION
    assert store.save({"w": np.arange(2.0)}, "m").version == 1
    indexes = {
        i["name"]
        for i in sa.inspect(sa.create_engine(f"sqlite:///{db}")).get_indexes("persistkit_tags")
    }
    assert "persistkit_tags_by_key" in indexes


def test_a_store_of_a_newer_schema_is_refused_naming_the_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    Store(f"sqlite:///{db}").save({"w": np.arange(2.0)}, "m")
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE persistkit_schema SET version = 99")
    engine.dispose()
    with pytest.raises(StoreError, match="schema version 99, newer than") as caught:
        Store(f"sqlite:///{db}").list()
    assert "pip install -U" in str(caught.value.hint)


def test_opening_a_postgresql_store_of_an_older_schema_upgrades_it(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("fresh_postgres_url")
    engine = sa.create_engine("postgresql+psycopg://" + url.split("://", 1)[1])
    with engine.begin() as conn:
        migrations.upgrade(conn, url, target=1)
    store = Store(url, blobs=tmp_path / "blobs")
    assert store.save({"w": np.arange(2.0)}, "m").version == 1
    with engine.connect() as conn:
        assert migrations.current_version(conn) == migrations.SCHEMA_VERSION
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("persistkit_tags")}
    engine.dispose()
    store.close()
    assert "persistkit_tags_by_key" in indexes
