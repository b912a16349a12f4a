"""One damaged ``persistkit.json`` in a store: what a new user runs (ls, show, verify, rm, load,
cp), against a local folder, memory:// and a real S3 API (moto's server on 127.0.0.1).

The damaged version is listed as damaged (``name:version`` and where it is) and the rest of the
store keeps working; loading it (or ``NAME`` when it is the latest) names it and never falls
back to an older version; ``rm`` removes it like any version (its number is never reused).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from persistkit import progress
from persistkit.cli import main
from persistkit.errors import ManifestError, StoreError
from persistkit.manifest import MANIFEST_NAME
from persistkit.store import Store
from s3_server import S3Server, s3_env, s3_server  # noqa: F401  (fixtures)
from store_helpers import use_slow_bytes

KINDS = ["local", "memory", "s3"]

DAMAGE = {
    "truncated": None,  # the first half of the real manifest
    "garbage": b"\x00\xffnot json at all\xfe",
    "nested": b"[" * 100_000 + b"]" * 100_000,
    "empty": b"",
    "not-a-manifest": b'{"format": "persistkit/1"}',
}


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A store of each kind holding a:1..3 and b:1..2 (slow-bytes test backend)."""
    use_slow_bytes(chunks=1)
    if request.param == "local":
        store = Store(tmp_path / "store")
    elif request.param == "memory":
        store = Store(f"memory://damaged-{uuid.uuid4().hex[:10]}")
    else:
        server: S3Server = request.getfixturevalue("s3_env")
        store = Store(server.fresh_url())
    for name, count in (("a", 3), ("b", 2)):
        for i in range(1, count + 1):
            store.save(f"{name}{i}".encode(), name, backend="slowbytes")
    return store


def damage(store: Store, name: str, version: int, kind: str = "truncated") -> None:
    """Overwrite a version's manifest the way a crash, a bad copy or a stray editor would."""
    rel = f"{name}/{version}/{MANIFEST_NAME}"
    data = DAMAGE[kind]
    if data is None:
        raw = store._read(rel)
        assert raw is not None
        data = raw[: len(raw) // 2]
    store._replace(rel, data)


def cli(store: Store, *args: str) -> Result:
    result = CliRunner().invoke(main, [*args, "--store", store.url])
    progress.set_quiet(False)
    return result


# -- Python API ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_versions_list_a_damaged_version_as_damaged_and_keep_the_others(
    store: Store, kind: str
) -> None:
    damage(store, "a", 2, kind)
    assert store.list() == ["a", "b"]
    infos = store.versions("a")
    assert [(v.version, v.damaged is not None) for v in infos] == [
        (1, False),
        (2, True),
        (3, False),
    ]
    bad = infos[1]
    assert bad.manifest is None and bad.digest is None and bad.tags == {}
    assert bad.location.endswith(f"a/2/{MANIFEST_NAME}")
    assert bad.damaged
    assert [v.version for v in store.versions("b")] == [1, 2]


def test_loading_the_damaged_version_names_it_and_others_still_load(store: Store) -> None:
    damage(store, "a", 2)
    with pytest.raises(ManifestError, match=r"a:2 is damaged") as caught:
        store.load("a:2")
    assert "a/2/persistkit.json" in caught.value.message
    assert "persistkit rm a:2" in (caught.value.hint or "")
    assert store.load("a:1") == b"a1"
    assert store.load("a:3") == b"a3"
    assert store.load("a") == b"a3"
    assert store.load(f"a@{store.digest('a:1')}") == b"a1"  # a digest ref skips the damaged one


def test_a_damaged_latest_version_is_an_error_never_an_older_version(store: Store) -> None:
    store.alias("a:3", "prod")
    damage(store, "a", 3, "garbage")
    for ref in ("a", "a:latest", "a@prod", "a:3"):
        with pytest.raises(ManifestError, match=r"a:3 is damaged"):
            store.load(ref)
        with pytest.raises(ManifestError, match=r"a:3 is damaged"):
            store.manifest(ref)


def test_delete_removes_a_damaged_version_and_its_number_is_not_reused(store: Store) -> None:
    damage(store, "a", 3)
    assert store.delete("a:3") == 3
    assert [v.version for v in store.versions("a")] == [1, 2]
    assert store.save(b"a4", "a", backend="slowbytes").version == 4
    assert store.load("a") == b"a4"


def test_delete_by_bare_name_removes_a_damaged_latest_version(store: Store) -> None:
    damage(store, "a", 3, "empty")
    assert store.delete("a") == 3
    assert store.load("a") == b"a2"


def test_deleting_a_healthy_version_beside_a_damaged_one_works(store: Store) -> None:
    damage(store, "a", 2)
    assert store.delete("a:1") == 1
    assert store.delete("a:3") == 3
    assert [(v.version, bool(v.damaged)) for v in store.versions("a")] == [(2, True)]


def test_a_damaged_aliased_version_is_deleted_only_with_force(store: Store) -> None:
    store.alias("a:2", "prod")
    damage(store, "a", 2)
    with pytest.raises(StoreError, match="aliased as prod"):
        store.delete("a:2")
    assert store.delete("a:2", force=True) == 2
    assert store.aliases("a") == {}


def test_saving_beside_a_damaged_version_works(store: Store) -> None:
    damage(store, "a", 3, "nested")
    orphan = "a/.payload/" + "0" * 64 + "/payload.bin"  # a payload no manifest points at
    if not store.is_local:
        store._replace(orphan, b"left by a killed writer")
    store.stale_after = 0  # the remote payload cleanup runs
    assert store.save(b"a4", "a", backend="slowbytes").version == 4
    assert store.load("a:1") == b"a1"
    assert store.load("a") == b"a4"
    if not store.is_local:  # kept while a damaged version might point at it ...
        assert store._read(orphan) is not None
        store.delete("a:3")
        store.save(b"a5", "a", backend="slowbytes")
        assert store._read(orphan) is None  # ... and cleaned up once none does


def test_copying_every_version_stops_before_writing_when_one_is_damaged(
    store: Store, tmp_path: Path
) -> None:
    damage(store, "a", 2)
    dest = Store(tmp_path / "dest")
    with pytest.raises(ManifestError, match=r"a:2 is damaged") as caught:
        store.copy("a", dest)
    assert "a:1, a:3" in (caught.value.hint or "")
    assert dest.list() == []
    assert [a.version for a in store.copy("a:3", dest)] == [1]


def test_a_manifest_replaced_by_a_link_is_listed_as_damaged(tmp_path: Path) -> None:
    use_slow_bytes(chunks=1)
    store = Store(tmp_path / "store")
    store.save(b"x1", "x", backend="slowbytes")
    store.save(b"x2", "x", backend="slowbytes")
    manifest = tmp_path / "store" / "x" / "2" / MANIFEST_NAME
    real = tmp_path / "elsewhere.json"
    manifest.rename(real)
    os.symlink(real, manifest)
    infos = store.versions("x")
    assert [bool(v.damaged) for v in infos] == [False, True]
    with pytest.raises(ManifestError, match=r"x:2 is damaged"):
        store.load("x")
    assert store.delete("x:2") == 2
    assert real.exists()  # the link is removed, not what it points at


# -- the command line ----------------------------------------------------------------------


def test_cli_ls_marks_the_damaged_version_and_lists_every_model(store: Store) -> None:
    damage(store, "a", 2)
    result = cli(store, "ls")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    assert [(r[0], r[1]) for r in rows] == [
        ("a", "1"),
        ("a", "2"),
        ("a", "3"),
        ("b", "1"),
        ("b", "2"),
    ]
    assert rows[1][2] == "DAMAGED"
    assert "a:2 is damaged" in result.stderr
    assert "a/2/persistkit.json" in result.stderr
    assert "persistkit rm a:2" in result.stderr


def test_cli_ls_json_gives_the_reason_and_location(store: Store) -> None:
    damage(store, "a", 2)
    result = cli(store, "ls", "a", "--json")
    assert result.exit_code == 0
    records = json.loads(result.stdout)
    assert [r["damaged"] is not None for r in records] == [False, True, False]
    assert records[1]["location"].endswith("a/2/persistkit.json")
    assert records[1]["digest"] is None


@pytest.mark.parametrize("command", ["show", "verify"])
def test_cli_show_and_verify_name_the_damaged_version(store: Store, command: str) -> None:
    damage(store, "a", 3)
    for ref in ("a:3", "a"):
        result = cli(store, command, ref)
        assert result.exit_code == 1
        assert "error: a:3 is damaged" in result.stderr
        assert "a/3/persistkit.json" in result.stderr
    assert cli(store, command, "a:2").exit_code == 0


def test_cli_rm_removes_a_damaged_version_by_ref_and_by_name(store: Store) -> None:
    damage(store, "a", 2)
    damage(store, "a", 3)
    result = cli(store, "rm", "a:2")
    assert (result.exit_code, result.stdout.strip()) == (0, "deleted a:2")
    result = cli(store, "rm", "a")
    assert (result.exit_code, result.stdout.strip()) == (0, "deleted a:3")
    result = cli(store, "ls", "a")
    assert result.exit_code == 0 and "DAMAGED" not in result.output
    assert store.save(b"a4", "a", backend="slowbytes").version == 4
