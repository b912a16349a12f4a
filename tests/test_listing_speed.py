"""Listing a database-backed store reads each version's summary row and parses no manifest
(issue 15: the first ``ls NAME`` of a database store is >= 5x a folder store's); a manifest is
parsed when a caller reads it, and a row edited since it was written is parsed as before, so
what a listing shows never changes with how it was read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from persistkit import progress
from persistkit.catalog import sql
from persistkit.cli import main
from persistkit.manifest import Manifest
from persistkit.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A SQLite store: m:1 (metrics, params, lineage, a save-time tag, an added tag), m:2."""
    store = Store(f"sqlite:///{tmp_path}/catalog.db")
    store.save(
        {"w": np.arange(3.0)},
        "m",
        metrics={"accuracy": 0.9, "loss": 1},
        params={"C": 0.5},
        lineage={"data": {"digest": "sha256:" + "a" * 64}},
        tags={"stage": "dev"},
    )
    store.tag("m:1", "owner", "ana")
    store.save({"w": np.arange(2.0)}, "m", metrics={"accuracy": 0.95})
    store.alias("m:2", "prod")
    return store


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many manifests are parsed from now on (the per-process cache of rows emptied)."""
    calls: list[int] = []
    real = Manifest.from_json.__func__  # type: ignore[attr-defined]

    def counted(cls: type[Manifest], text: str | bytes) -> Manifest:
        calls.append(1)
        return real(cls, text)

    sql._parsed.cache_clear()
    monkeypatch.setattr(Manifest, "from_json", classmethod(counted))
    return calls


def ls_json(store: Store, *args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(main, ["ls", "m", "--json", *args, "--store", store.url])
    progress.set_quiet(False)
    assert result.exit_code == 0, result.output
    records: list[dict[str, Any]] = json.loads(result.stdout)
    return records


def rows(store: Store, statement: str) -> None:
    engine = sa.create_engine(store.url)
    with engine.begin() as conn:
        conn.exec_driver_sql(statement)
    engine.dispose()


def test_listing_a_database_store_parses_no_manifest(store: Store, parses: list[int]) -> None:
    infos = store.versions("m")
    assert [(v.version, v.tags, v.aliases) for v in infos] == [
        (1, {"stage": "dev", "owner": "ana"}, []),
        (2, {}, ["prod"]),
    ]
    assert infos[0].summary is not None and infos[0].summary.metrics["accuracy"] == 0.9
    assert parses == []


def test_ls_json_and_queries_on_summary_fields_parse_no_manifest(
    store: Store, parses: list[int]
) -> None:
    found = ls_json(store, "--where", "tags.owner=ana", "--sort", "-metrics.accuracy")
    assert [(r["version"], r["metrics"], r["params"]) for r in found] == [
        (1, {"accuracy": 0.9, "loss": 1}, {"C": 0.5})
    ]
    assert store.resolve("m@best:accuracy") == ("m", 2)
    assert parses == []


def test_a_listed_manifest_is_parsed_when_read_with_its_added_tags(
    store: Store, parses: list[int]
) -> None:
    first = store.versions("m")[0]
    manifest = first.manifest
    assert manifest is not None and manifest.tags == {"stage": "dev", "owner": "ana"}
    assert manifest.params == {"C": 0.5} and first.manifest is manifest
    assert parses == [1]


def test_a_listing_from_summaries_equals_one_from_parsed_manifests(store: Store) -> None:
    summarised = ls_json(store)
    rows(store, "UPDATE persistkit_versions SET summary = NULL, checked = NULL")
    sql._parsed.cache_clear()
    assert ls_json(store) == summarised


def test_a_row_whose_manifest_was_edited_is_parsed_and_listed_as_damaged(store: Store) -> None:
    rows(
        store, "UPDATE persistkit_versions SET manifest = substr(manifest, 1, 40) WHERE version = 1"
    )
    infos = store.versions("m")
    assert [(v.version, v.damaged is not None) for v in infos] == [(1, True), (2, False)]
    assert infos[0].manifest is None and infos[0].summary is None and infos[0].digest is None
    assert "not valid JSON" in str(infos[0].damaged)


def test_a_row_whose_summary_was_edited_is_listed_from_its_manifest(store: Store) -> None:
    rows(store, "UPDATE persistkit_versions SET summary = replace(summary, '0.9', '0.1')")
    assert [r["metrics"]["accuracy"] for r in ls_json(store)] == [0.9, 0.95]


def test_a_store_of_schema_2_gets_summaries_when_upgraded(
    tmp_path: Path, parses: list[int]
) -> None:
    golden = Path(__file__).with_name("golden") / "catalog-2"
    shutil.copytree(golden, tmp_path / "store")
    store = Store(f"sqlite:///{tmp_path}/store/catalog.db")
    listed = [r.to_dict() for r in store.versions("gnome")]  # opening it upgrades it
    assert parses  # the upgrade parsed each row once to summarise it
    parses.clear()
    sql._parsed.cache_clear()
    assert [r.to_dict() for r in store.versions("gnome")] == listed
    assert parses == []
