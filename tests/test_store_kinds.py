"""One store suite over every kind of store: a folder, memory://, S3 (moto's server), SQLite,
PostgreSQL (a real server, see ``postgres_server.py``) and PostgreSQL with its payloads on S3.

Versions, refs, aliases, tags, deletion, copies between kinds, several writer processes at
once, and writers killed (SIGKILL) mid-save must behave the same on each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import persistkit
from persistkit.errors import RefError, StoreError, VersionNotFoundError
from persistkit.store import Store
from postgres_server import fresh_postgres_url, postgres_server  # noqa: F401  (fixtures)
from s3_server import S3Server, s3_env, s3_server  # noqa: F401  (fixtures)
from store_helpers import store_url, use_slow_bytes

HELPER = Path(__file__).with_name("store_helpers.py")
KINDS = ["folder", "memory", "s3", "sqlite", "postgresql", "postgresql-s3"]
KILL_TRIALS = int(os.environ.get("PERSISTKIT_KILL_TRIALS") or 3)


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store of each kind, with the slow-bytes test backend installed."""
    use_slow_bytes(chunks=2)
    return Store(store_url(request.param, request, tmp_path))


def save(store: Store, data: bytes, name: str = "m", **options: object) -> persistkit.Artifact:
    return store.save(data, name, backend="slowbytes", **options)


# -- versions and refs ---------------------------------------------------------------------


def test_each_save_makes_the_next_version_and_a_bare_name_is_the_latest(store: Store) -> None:
    assert [save(store, b"a").version, save(store, b"b").version] == [1, 2]
    assert store.load("m") == b"b"
    assert store.load("m:1") == b"a"
    assert store.resolve("m:latest") == ("m", 2)


def test_a_store_exists_only_after_its_first_save(store: Store) -> None:
    assert store.list() == []
    assert not store.exists() or store.kind == "s3"  # the bucket exists
    save(store, b"x")
    assert store.exists()


def test_list_gives_the_names_with_versions_sorted(store: Store) -> None:
    save(store, b"x", "zeta")
    save(store, b"y", "alpha")
    assert store.list() == ["alpha", "zeta"]


def test_missing_names_and_versions_are_not_found_errors(store: Store) -> None:
    save(store, b"x")
    with pytest.raises(VersionNotFoundError, match="no model named 'ghost'"):
        store.load("ghost")
    with pytest.raises(VersionNotFoundError, match="has no version 7"):
        store.load("m:7")


def test_a_digest_ref_finds_its_version_and_tags_leave_the_digest_alone(store: Store) -> None:
    save(store, b"a")
    save(store, b"b")
    digest = store.digest("m:1")
    assert store.resolve(f"m@{digest[:16]}") == ("m", 1)
    store.tag("m:1", "stage", "prod")
    assert store.digest("m:1") == digest


def test_versions_list_every_version_with_digest_aliases_and_tags(store: Store) -> None:
    save(store, b"a", tags={"team": "vision"})
    save(store, b"b")
    store.alias("m:1", "prod")
    records = [v.to_dict() for v in store.versions("m")]
    assert [r["version"] for r in records] == [1, 2]
    assert records[0]["aliases"] == ["prod"] and records[0]["tags"] == {"team": "vision"}
    assert all(r["digest"].startswith("sha256:") and r["backend"] == "slowbytes" for r in records)


def test_the_manifest_keeps_its_seal_in_every_kind(store: Store) -> None:
    save(store, b"sealed")
    manifest = store.manifest("m")
    assert manifest.seal is not None
    assert persistkit.load("m", store=store) == b"sealed"  # a broken seal would refuse it


# -- aliases and tags ----------------------------------------------------------------------


def test_an_alias_moves_and_resolves(store: Store) -> None:
    save(store, b"a")
    save(store, b"b")
    store.alias("m:1", "prod")
    assert store.load("m@prod") == b"a"
    store.alias("m:2", "prod")
    assert store.load("m@prod") == b"b"
    assert store.aliases("m") == {"prod": 2}


def test_a_removed_alias_is_gone_and_its_version_stays(store: Store) -> None:
    save(store, b"a")
    store.alias("m:1", "prod")
    store.remove_alias("m", "prod")
    with pytest.raises(VersionNotFoundError, match="no alias 'prod'"):
        store.resolve("m@prod")
    assert store.load("m:1") == b"a"


def test_latest_is_not_an_alias_one_can_set(store: Store) -> None:
    save(store, b"a")
    with pytest.raises(RefError):
        store.alias("m:1", "latest")


def test_tags_added_later_merge_over_the_saved_ones(store: Store) -> None:
    save(store, b"a", tags={"team": "vision"})
    assert store.tag("m:1", "stage", "prod") == {"team": "vision", "stage": "prod"}
    assert store.tags("m:1") == {"team": "vision", "stage": "prod"}
    store.tag("m:1", "stage", None)
    assert store.tags("m:1") == {"team": "vision"}


def test_a_tag_set_at_save_time_cannot_be_removed(store: Store) -> None:
    save(store, b"a", tags={"team": "vision"})
    with pytest.raises(StoreError, match="set at save time"):
        store.tag("m:1", "team", None)


# -- deleting ------------------------------------------------------------------------------


def test_a_deleted_number_is_never_reused(store: Store) -> None:
    save(store, b"a")
    save(store, b"b")
    assert store.delete("m:2") == 2
    assert [v.version for v in store.versions("m")] == [1]
    assert save(store, b"c").version == 3
    with pytest.raises(VersionNotFoundError):
        store.load("m:2")


def test_deleting_an_aliased_version_needs_force_and_takes_the_alias(store: Store) -> None:
    save(store, b"a")
    store.alias("m:1", "prod")
    with pytest.raises(StoreError, match="aliased as prod"):
        store.delete("m:1")
    store.delete("m:1", force=True)
    assert store.aliases("m") == {}
    assert store.list() == []


def test_deleting_the_last_version_that_shares_a_payload_keeps_the_others(store: Store) -> None:
    save(store, b"a")
    store.copy("m:1", store)  # version 2: the same digest, maybe the same payload
    store.delete("m:1")
    assert store.load("m:2") == b"a"


# -- moving between kinds ------------------------------------------------------------------


@pytest.mark.parametrize("dest_kind", ["folder", "sqlite"])
def test_copies_between_kinds_keep_digests_tags_and_aliases(
    store: Store, dest_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    save(store, b"a", tags={"team": "vision"})
    save(store, b"b")
    store.alias("m:2", "prod")
    dest = Store(store_url(dest_kind, request, tmp_path / "dest"))
    copies = store.copy_versions("m", dest, aliases=True)
    assert [c.artifact.version for c in copies] == [1, 2]
    assert [dest.digest(f"m:{v}") for v in (1, 2)] == [store.digest(f"m:{v}") for v in (1, 2)]
    assert dest.tags("m:1") == {"team": "vision"}
    assert dest.load("m@prod") == b"b"


# -- several writers, and writers killed mid-save --------------------------------------------


def _child_env(isolated_home: Path) -> dict[str, str]:
    env = {**os.environ, "PERSISTKIT_HOME": str(isolated_home)}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([str(HELPER.parent), src])
    return env


def _writer(url: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HELPER), url, "m", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_writer_processes_at_once_get_distinct_versions_that_all_load(
    store: Store, isolated_home: Path
) -> None:
    if store.kind == "memory":  # one process's memory: raced with threads instead
        with ThreadPoolExecutor(4) as pool:
            arts = list(pool.map(lambda i: save(store, b"m-%d" % i), range(8)))
        assert sorted(a.version for a in arts) == list(range(1, 9))
        return
    use_slow_bytes()  # the children's chunking, which the loads here must share
    env = _child_env(isolated_home)
    start_at = str(time.time() + 2.5)
    writers = [_writer(store.url, env, "--start-at", start_at, "--saves", "2") for _ in range(4)]
    outputs = [w.communicate(timeout=120) for w in writers]
    assert [w.returncode for w in writers] == [0] * 4, [err[-2000:] for _, err in outputs]
    saved = dict(line.split(" ", 1) for out, _ in outputs for line in out.splitlines())
    assert sorted(map(int, saved)) == list(range(1, 9))
    for version, text in saved.items():
        assert store.load(f"m:{version}") == text.encode() * 100


def test_writers_killed_mid_save_leave_no_partial_version(
    store: Store, isolated_home: Path
) -> None:
    if store.kind == "memory":
        pytest.skip("memory:// lives in one process: there is no writer process to kill")
    env = _child_env(isolated_home)
    url = store.url
    first = _writer(url, env, "--chunks", "6", "--delay", "0.05")
    began = time.monotonic()
    assert first.wait(timeout=120) == 0
    run_seconds = time.monotonic() - began
    seen = [v.version for v in store.versions("m")]
    for trial in range(KILL_TRIALS):
        writer = _writer(url, env, "--chunks", "6", "--delay", "0.05")
        time.sleep(run_seconds * (0.4 + 0.6 * trial / max(1, KILL_TRIALS - 1)))
        writer.send_signal(signal.SIGKILL)
        writer.communicate(timeout=60)
        versions = [v.version for v in store.versions("m")]
        assert set(seen) <= set(versions), "a version published earlier was lost"
        for version in versions:  # every visible version is whole: its sha256s check out
            assert store.load(f"m:{version}").startswith(b"m-")
        seen = versions
    store.gc(grace=0)
    assert store.gc(grace=0, dry_run=True) == []
    after = save(store, b"m-after")
    assert after.version > max(seen)
    assert [store.load(f"m:{v}")[:2] for v in (*seen, after.version)] == [b"m-"] * (len(seen) + 1)
