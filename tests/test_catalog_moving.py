"""Moving stores between kinds (``migrate-store``, ``cp``) and cleaning up after killed
writers (``gc``), with real stores: folders, SQLite, PostgreSQL, S3 (moto)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from persistkit.catalog.moving import migrate_store
from persistkit.cli import main
from persistkit.errors import StoreError
from persistkit.store import Store
from postgres_server import fresh_postgres_url, postgres_server  # noqa: F401  (fixtures)
from s3_server import S3Server, s3_env, s3_server  # noqa: F401  (fixtures)
from store_helpers import store_url, use_slow_bytes

PAIRS = [
    ("folder", "sqlite"),
    ("sqlite", "folder"),
    ("sqlite", "postgresql"),
    ("s3", "postgresql-s3"),
    ("postgresql", "folder"),
]


def _filled(url: str) -> Store:
    """A store with two models, a deleted number, aliases, saved and added tags."""
    use_slow_bytes(chunks=1)
    store = Store(url)
    for text in (b"a", b"b", b"c", b"d"):
        store.save(text, "m", backend="slowbytes", tags={"team": "vision"})
    store.save(b"z", "other", backend="slowbytes")
    store.delete("m:3")
    store.alias("m:2", "prod")
    store.alias("other:1", "prod")
    store.tag("m:4", "stage", "candidate")
    return store


def _stores(pair: tuple[str, str], request: pytest.FixtureRequest, tmp: Path) -> list[Store]:
    return [Store(store_url(kind, request, tmp / str(i))) for i, kind in enumerate(pair)]


@pytest.mark.parametrize("pair", PAIRS, ids=["-to-".join(p) for p in PAIRS])
def test_migrate_store_keeps_numbers_deleted_numbers_tags_and_aliases(
    pair: tuple[str, str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source_url = store_url(pair[0], request, tmp_path / "src")
    source = _filled(source_url)
    dest = Store(store_url(pair[1], request, tmp_path / "dst"))
    report = migrate_store(source, dest)
    assert report.verified
    assert [v.version for v in dest.versions("m")] == [1, 2, 4]
    assert dest.catalog.tombstones("m") == [3]
    assert dest.aliases("m") == {"prod": 2} and dest.aliases("other") == {"prod": 1}
    assert dest.tags("m:4") == {"team": "vision", "stage": "candidate"}
    assert [dest.digest(f"m:{v}") for v in (1, 2, 4)] == [
        source.digest(f"m:{v}") for v in (1, 2, 4)
    ]
    assert dest.load("m@prod") == b"b"
    dest.tag("m:4", "stage", None)  # an added tag stays an added one
    assert dest.save(b"e", "m", backend="slowbytes").version == 5


def test_migrate_store_refuses_a_destination_that_has_the_names(tmp_path: Path) -> None:
    source = _filled(str(tmp_path / "src"))
    dest = Store(f"sqlite:///{tmp_path}/dst.db")
    dest.save(b"mine", "m", backend="slowbytes")
    with pytest.raises(StoreError, match="already has m"):
        migrate_store(source, dest)
    assert dest.list() == ["m"] and [v.version for v in dest.versions("m")] == [1]


def test_migrate_store_from_a_store_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store at"):
        migrate_store(Store(tmp_path / "typo"), Store(f"sqlite:///{tmp_path}/dst.db"))
    assert not (tmp_path / "dst.db").exists()


def test_a_dry_run_reports_and_copies_nothing(tmp_path: Path) -> None:
    source = _filled(str(tmp_path / "src"))
    dest = Store(f"sqlite:///{tmp_path}/dst.db")
    report = migrate_store(source, dest, dry_run=True).to_dict()
    assert (report["versions"], report["tombstones"], report["aliases"]) == (4, 1, 2)
    assert dest.list() == [] and not dest.exists()


def test_the_migrate_store_command_shows_progress_and_a_summary(tmp_path: Path) -> None:
    _filled(str(tmp_path / "src"))
    dest = f"sqlite:///{tmp_path}/dst.db"
    result = CliRunner().invoke(main, ["migrate-store", str(tmp_path / "src"), dest])
    assert result.exit_code == 0, result.output
    assert "[5/5] other:1 copied" in result.output
    assert "copied 4 version(s) and 1 deleted number(s) of 2 model(s), 2 alias(es)" in (
        result.output
    )
    again = CliRunner().invoke(main, ["migrate-store", str(tmp_path / "src"), dest])
    assert again.exit_code == 1 and "already has m, other" in again.output


def test_cp_copies_between_a_folder_and_a_database_store(tmp_path: Path) -> None:
    _filled(str(tmp_path / "src"))
    dest = f"sqlite:///{tmp_path}/dst.db"
    result = CliRunner().invoke(
        main, ["cp", "m@prod", dest, "--aliases", "--store", str(tmp_path / "src")]
    )
    assert result.exit_code == 0, result.output
    assert Store(dest).load("m@prod") == b"b"
    back = CliRunner().invoke(main, ["cp", "m", str(tmp_path / "back"), "--store", dest])
    assert back.exit_code == 0, back.output
    assert Store(tmp_path / "back").load("m:1") == b"b"


# -- gc ------------------------------------------------------------------------------------


def _orphan(blobs: Path, age_s: float) -> Path:
    """A payload folder no row points at, as a writer killed before its commit leaves."""
    folder = blobs / os.urandom(32).hex()
    folder.mkdir(parents=True)
    (folder / "payload.bin").write_bytes(b"half")
    then = time.time() - age_s
    for path in (folder / "payload.bin", folder):
        os.utime(path, (then, then))
    return folder


def test_gc_removes_old_unreferenced_payloads_and_keeps_young_ones(tmp_path: Path) -> None:
    store = _filled(f"sqlite:///{tmp_path}/catalog.db")
    blobs = tmp_path / "catalog.blobs"
    old, young = _orphan(blobs, 7200), _orphan(blobs, 10)
    assert [o.rel for o in store.gc(dry_run=True)] == [old.name]
    assert old.is_dir()
    assert [o.rel for o in store.gc()] == [old.name]
    assert not old.exists() and young.is_dir()
    assert [store.load(f"m:{v}") for v in (1, 2, 4)] == [b"a", b"b", b"d"]


def test_gc_removes_a_dead_writers_staging_folder_in_a_folder_store(tmp_path: Path) -> None:
    store = _filled(str(tmp_path / "store"))
    dead = tmp_path / "store" / ".staging" / "m.otherhost.123.abcdef"
    dead.mkdir(parents=True)
    then = time.time() - 7200
    os.utime(dead, (then, then))
    result = CliRunner().invoke(main, ["gc", "--store", str(tmp_path / "store"), "--json"])
    assert result.exit_code == 0, result.output
    assert [i["location"] for i in json.loads(result.output)["items"]] == [str(dead)]
    assert not dead.exists()
    assert store.load("m@prod") == b"b"


def test_a_writer_dead_between_payload_and_row_leaves_only_an_orphan_for_gc(
    tmp_path: Path, isolated_home: Path
) -> None:
    url = f"sqlite:///{tmp_path}/catalog.db"
    store = _filled(url)
    helper = Path(__file__).with_name("store_helpers.py")
    env = {**os.environ, "PERSISTKIT_HOME": str(isolated_home)}
    env["PYTHONPATH"] = os.pathsep.join([str(helper.parent), str(helper.parents[1] / "src")])
    died = subprocess.run(
        [sys.executable, str(helper), url, "m", "--die-before-claim"], env=env, timeout=120
    )
    assert died.returncode == 137
    assert [v.version for v in store.versions("m")] == [1, 2, 4]  # nothing half-published
    orphans = store.gc(grace=0, dry_run=True)
    assert len(orphans) == 1 and (tmp_path / "catalog.blobs" / orphans[0].rel).is_dir()
    store.gc(grace=0)
    assert store.gc(grace=0, dry_run=True) == []
    assert store.save(b"e", "m", backend="slowbytes").version == 5
