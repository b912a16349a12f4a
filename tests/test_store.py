"""The store, specified once and run against a local folder, memory:// and a real S3 API
(moto's server on 127.0.0.1)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

import persistkit
from persistkit import cache
from persistkit.errors import (
    IntegrityError,
    PersistkitError,
    RefError,
    StoreError,
    VersionNotFoundError,
)
from persistkit.manifest import MANIFEST_NAME
from persistkit.store import Store, manifest_digest
from s3_server import S3Server, s3_env, s3_server  # noqa: F401  (fixtures)
from store_helpers import use_slow_bytes

KINDS = ["local", "memory", "s3"]


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store of each kind, with the slow-bytes test backend installed."""
    use_slow_bytes(chunks=2)
    if request.param == "local":
        return Store(tmp_path / "store")
    if request.param == "memory":
        return Store(f"memory://store-{uuid.uuid4().hex[:10]}")
    server: S3Server = request.getfixturevalue("s3_env")
    return Store(server.fresh_url())


def save(store: Store, data: bytes, name: str = "m", **options: object) -> persistkit.Artifact:
    return store.save(data, name, backend="slowbytes", **options)


# -- versions ------------------------------------------------------------------------------


def test_each_save_makes_the_next_version(store: Store) -> None:
    assert [save(store, b"a").version, save(store, b"b").version] == [1, 2]


def test_a_bare_name_loads_the_latest_version(store: Store) -> None:
    save(store, b"old")
    save(store, b"new")
    assert store.load("m") == b"new"
    assert store.load("m:latest") == b"new"


def test_name_colon_version_loads_that_version(store: Store) -> None:
    save(store, b"old")
    save(store, b"new")
    assert store.load("m:1") == b"old"


def test_a_missing_version_is_a_not_found_error_naming_the_range(store: Store) -> None:
    save(store, b"x")
    with pytest.raises(VersionNotFoundError, match="version 1"):
        store.load("m:7")


def test_a_missing_name_is_a_not_found_error(store: Store) -> None:
    with pytest.raises(VersionNotFoundError, match="no model named 'ghost'"):
        store.load("ghost")


def test_list_gives_the_names_with_versions_sorted(store: Store) -> None:
    save(store, b"x", "zeta")
    save(store, b"y", "alpha")
    assert store.list() == ["alpha", "zeta"]


def test_a_name_that_prefixes_another_sees_only_its_own_versions(store: Store) -> None:
    save(store, b"x", "m")
    save(store, b"y", "m2")
    save(store, b"z", "m2")
    assert [v.version for v in store.versions("m")] == [1]
    assert store.load("m") == b"x"


def test_an_empty_store_lists_nothing(store: Store) -> None:
    assert store.list() == []


def test_versions_are_oldest_first_with_their_manifests(store: Store) -> None:
    save(store, b"x")
    save(store, b"y")
    versions = store.versions("m")
    assert [v.version for v in versions] == [1, 2]
    assert all(v.manifest.backend == "slowbytes" for v in versions)
    assert versions[1].to_dict()["name"] == "m"


def test_a_saved_artifact_has_a_local_path_holding_its_manifest(store: Store) -> None:
    art = save(store, b"x")
    assert (art.path / MANIFEST_NAME).is_file()
    assert art.uri == "m:1"


def test_store_save_refuses_a_path_as_name(store: Store) -> None:
    with pytest.raises(RefError):
        save(store, b"x", "../escape")


def test_store_load_refuses_a_path(store: Store) -> None:
    with pytest.raises(RefError):
        store.load("/etc/passwd")


# -- aliases -------------------------------------------------------------------------------


def test_an_alias_loads_the_version_it_points_at(store: Store) -> None:
    save(store, b"one")
    save(store, b"two")
    store.alias("m:1", "prod")
    assert store.load("m@prod") == b"one"


def test_moving_an_alias_changes_what_it_loads(store: Store) -> None:
    save(store, b"one")
    save(store, b"two")
    store.alias("m:1", "prod")
    store.alias("m:2", "prod")
    assert store.load("m@prod") == b"two"
    assert store.aliases("m") == {"prod": 2}


def test_versions_report_their_aliases(store: Store) -> None:
    save(store, b"one")
    store.alias("m:1", "prod")
    store.alias("m", "staging")
    assert store.versions("m")[0].aliases == ["prod", "staging"]


def test_an_unknown_alias_names_the_known_ones(store: Store) -> None:
    save(store, b"one")
    store.alias("m", "prod")
    with pytest.raises(VersionNotFoundError, match=r"no alias 'dev' \(aliases: prod\)"):
        store.load("m@dev")


def test_an_alias_cannot_point_at_a_missing_version(store: Store) -> None:
    save(store, b"one")
    with pytest.raises(VersionNotFoundError):
        store.alias("m:5", "prod")


def test_latest_cannot_be_an_alias(store: Store) -> None:
    save(store, b"one")
    with pytest.raises(RefError):
        store.alias("m", "latest")


def test_a_removed_alias_no_longer_resolves(store: Store) -> None:
    save(store, b"one")
    store.alias("m", "prod")
    store.remove_alias("m", "prod")
    with pytest.raises(VersionNotFoundError):
        store.resolve("m@prod")


# -- tags and digests ----------------------------------------------------------------------


def test_tags_given_at_save_time_are_listed(store: Store) -> None:
    save(store, b"x", tags={"team": "vision"})
    assert store.tags("m:1") == {"team": "vision"}


def test_a_tag_added_later_is_merged_without_changing_the_digest(store: Store) -> None:
    save(store, b"x", tags={"team": "vision"})
    before = store.digest("m:1")
    assert store.tag("m:1", "stage", "prod") == {"team": "vision", "stage": "prod"}
    assert store.tags("m") == {"team": "vision", "stage": "prod"}
    assert store.digest("m:1") == before


def test_a_tag_added_later_does_not_break_the_seal(store: Store) -> None:
    use_slow_bytes(chunks=2)
    art = store.save({"w": [1, 2]}, "d", backend="pickle")
    store.tag("d", "stage", "prod")
    assert art.manifest.seal is not None
    assert store.load("d") == {"w": [1, 2]}  # pickle loads without trusted= only when sealed


def test_a_tag_can_be_removed(store: Store) -> None:
    save(store, b"x")
    store.tag("m", "stage", "prod")
    assert store.tag("m", "stage", None) == {}


def test_a_tag_set_at_save_time_cannot_be_removed(store: Store) -> None:
    save(store, b"x", tags={"team": "vision"})
    with pytest.raises(StoreError, match="set at save time"):
        store.tag("m", "team", None)


def test_a_tag_key_follows_the_name_rule(store: Store) -> None:
    save(store, b"x")
    with pytest.raises(RefError):
        store.tag("m", "bad key/", "v")


def test_a_digest_ref_loads_its_version(store: Store) -> None:
    save(store, b"one")
    save(store, b"two")
    digest = store.digest("m:1")
    assert store.load(f"m@{digest}") == b"one"
    assert store.load(f"m@{digest[:15]}") == b"one"  # a unique prefix is enough


def test_the_digest_is_the_sha256_of_the_sealed_manifest(store: Store) -> None:
    art = save(store, b"one")
    assert store.digest("m") == manifest_digest(art.manifest)


def test_an_unknown_digest_is_not_found(store: Store) -> None:
    save(store, b"one")
    with pytest.raises(VersionNotFoundError, match="digest"):
        store.load("m@sha256:" + "0" * 64)


# -- delete and copy -----------------------------------------------------------------------


def test_a_deleted_version_is_gone_and_others_stay(store: Store) -> None:
    save(store, b"one")
    save(store, b"two")
    store.delete("m:1")
    assert [v.version for v in store.versions("m")] == [2]
    with pytest.raises(VersionNotFoundError):
        store.load("m:1")
    assert store.load("m") == b"two"


def test_a_deleted_version_number_is_never_reused(store: Store) -> None:
    save(store, b"one")
    save(store, b"two")
    store.delete("m:2")
    assert save(store, b"three").version == 3


def test_asking_for_a_deleted_version_lists_the_versions_left(store: Store) -> None:
    for data in (b"one", b"two", b"three", b"four"):
        save(store, data)
    store.delete("m:2")
    with pytest.raises(VersionNotFoundError, match=r"it has versions 1, 3-4\)"):
        store.resolve("m:2")


def test_deleting_an_aliased_version_is_refused(store: Store) -> None:
    save(store, b"one")
    store.alias("m:1", "prod")
    with pytest.raises(StoreError, match="aliased as prod"):
        store.delete("m:1")
    assert store.load("m@prod") == b"one"


def test_a_forced_delete_removes_the_aliases_too(store: Store) -> None:
    save(store, b"one")
    store.alias("m:1", "prod")
    store.delete("m:1", force=True)
    assert store.aliases("m") == {}
    assert store.list() == []


def test_copying_a_name_copies_every_version_with_digests_and_tags(
    store: Store, tmp_path: Path
) -> None:
    save(store, b"one")
    save(store, b"two")
    store.tag("m:2", "stage", "prod")
    dest = Store(tmp_path / "dest")
    copies = store.copy("m", dest)
    assert [a.version for a in copies] == [1, 2]
    assert [dest.digest(f"m:{a.version}") for a in copies] == [
        store.digest("m:1"),
        store.digest("m:2"),
    ]
    assert dest.tags("m:2") == {"stage": "prod"}
    assert dest.load("m:1") == b"one"


def test_deleting_one_of_two_copies_in_the_same_store_keeps_the_other(store: Store) -> None:
    save(store, b"one")
    store.copy("m:1", store)
    store.delete("m:1")
    shutil.rmtree(cache.artifacts_root(), ignore_errors=True)  # load from the store itself
    assert store.load("m:2") == b"one"


def test_copying_one_version_appends_it_to_the_destination(store: Store) -> None:
    save(store, b"one")
    save(store, b"two")
    dest = Store(f"memory://dest-{uuid.uuid4().hex[:8]}")
    dest.save(b"mine", "m", backend="slowbytes")
    [copied] = store.copy("m:2", dest)
    assert copied.version == 2
    assert dest.load("m:2") == b"two"


# -- remote loads and the cache ------------------------------------------------------------


@pytest.fixture
def remote_store(request: pytest.FixtureRequest) -> Store:
    use_slow_bytes(chunks=2)
    server: S3Server = request.getfixturevalue("s3_env")
    return Store(server.fresh_url())


def test_a_remote_load_is_served_from_the_cache_the_second_time(remote_store: Store) -> None:
    art = save(remote_store, b"cached")
    cache_entry = cache.entry_path(manifest_digest(art.manifest))
    os.rename(cache_entry, cache_entry.with_name("moved"))  # forget the copy made at save time
    folder, *_ = remote_store.fetch("m")
    assert folder == cache_entry
    remote_store._fs.rm(remote_store._path("m/.payload"), recursive=True)
    assert remote_store.load("m") == b"cached"  # the payload is gone remotely: cache served it


def test_a_corrupted_cache_entry_is_detected_and_fetched_again(remote_store: Store) -> None:
    art = save(remote_store, b"good")
    payload = cache.entry_path(manifest_digest(art.manifest)) / "payload.bin"
    payload.write_bytes(b"evil" + payload.read_bytes()[4:])
    assert remote_store.load("m") == b"good"
    assert payload.read_bytes().startswith(b"good")


def test_a_damaged_remote_payload_is_an_integrity_error(remote_store: Store) -> None:
    art = save(remote_store, b"good")
    digest = manifest_digest(art.manifest)
    remote_store._fs.pipe_file(remote_store._path(f"m/.payload/{digest[7:]}/payload.bin"), b"x")
    cache.lookup(digest, art.manifest)
    os.rename(cache.entry_path(digest), cache.entry_path(digest).with_name("gone"))
    with pytest.raises(IntegrityError):
        remote_store.load("m")


def test_a_remote_version_url_loads_directly(remote_store: Store) -> None:
    save(remote_store, b"by-url")
    assert persistkit.load(f"{remote_store.url}/m/1") == b"by-url"


def test_inspect_of_a_remote_ref_reads_only_the_manifest(remote_store: Store) -> None:
    art = save(remote_store, b"x", tags={"a": "b"})
    remote_store._fs.rm(remote_store._path("m/.payload"), recursive=True)
    manifest = persistkit.inspect("m", store=remote_store)
    assert manifest.files == art.manifest.files
    assert manifest.tags == {"a": "b"}


def test_inspect_of_a_remote_version_url_reads_only_the_manifest(remote_store: Store) -> None:
    art = save(remote_store, b"x", tags={"a": "b"})
    remote_store._fs.rm(remote_store._path("m/.payload"), recursive=True)
    shutil.rmtree(cache.artifacts_root())  # nor is there a copy to serve it from
    manifest = persistkit.inspect(f"{remote_store.url}/m/1")
    assert manifest.files == art.manifest.files
    assert manifest.tags == {"a": "b"}


# -- stale staging ---------------------------------------------------------------------------


def test_staging_left_by_a_dead_writer_is_removed_by_the_next_save(tmp_path: Path) -> None:
    use_slow_bytes(chunks=2)
    store = Store(tmp_path / "store")
    leftover = tmp_path / "store" / ".staging" / "m.otherhost.999999.abc"
    stale_here = store.stage("m")
    os.rename(stale_here, stale_here.with_name(stale_here.name.replace(str(os.getpid()), "1")))
    leftover.mkdir(parents=True)
    store.save(b"x", "m", backend="slowbytes")
    remaining = sorted(p.name for p in (tmp_path / "store" / ".staging").iterdir())
    # pid 1 is alive but belongs to someone else; it is kept until it is old, as is another
    # host's folder; a folder of a pid that does not exist on this host is removed
    assert "m.otherhost.999999.abc" in remaining
    store.stale_after = 0
    store.save(b"y", "m", backend="slowbytes")
    assert list((tmp_path / "store" / ".staging").iterdir()) == []


def test_a_dead_writers_staging_on_this_host_is_removed_at_once(tmp_path: Path) -> None:
    use_slow_bytes(chunks=2)
    store = Store(tmp_path / "store")
    staged = store.stage("m")
    dead = staged.with_name(staged.name.replace(f".{os.getpid()}.", ".4194303."))
    os.rename(staged, dead)
    store.save(b"x", "m", backend="slowbytes")
    assert not dead.exists()


def test_an_orphaned_remote_payload_is_removed_once_stale(remote_store: Store) -> None:
    save(remote_store, b"x")
    orphan = remote_store._path("m/.payload/" + "ab" * 32 + "/payload.bin")
    remote_store._fs.pipe_file(orphan, b"half an upload")
    remote_store.stale_after = 0
    save(remote_store, b"y")
    assert not remote_store._fs.exists(orphan)
    assert remote_store.load("m:1") == b"x"


# -- configuration and errors ------------------------------------------------------------


def test_the_default_store_is_persistkit_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSISTKIT_STORE", str(tmp_path / "envstore"))
    assert Store().url == str(tmp_path / "envstore")


def test_the_default_store_lives_in_persistkit_home(isolated_home: Path) -> None:
    assert Store().url == str(isolated_home / "store")


def test_an_unknown_url_scheme_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        Store("nosuchscheme://x/y")


def test_an_unreachable_s3_endpoint_is_one_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    fast_failure = {"retries": {"max_attempts": 1}, "connect_timeout": 1}
    store = Store("s3://nobucket/p", storage_options={"config_kwargs": fast_failure})
    with pytest.raises(StoreError, match="nobucket") as info:
        store.list()
    assert info.value.hint


def test_a_missing_bucket_is_a_store_error(request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("s3_env")
    use_slow_bytes(chunks=2)
    store = Store("s3://no-such-bucket-here/p")
    with pytest.raises(PersistkitError):
        store.save(b"x", "m", backend="slowbytes")


def test_a_durable_save_loads_like_any_other(tmp_path: Path) -> None:
    use_slow_bytes(chunks=2)
    store = Store(tmp_path / "store")
    store.save(b"x", "m", backend="slowbytes", durable=True)
    assert store.load("m") == b"x"


def test_an_artifact_folder_url_outside_any_store_loads(tmp_path: Path) -> None:
    import fsspec

    use_slow_bytes(chunks=2)
    art = persistkit.save(b"loose", tmp_path / "artifact", backend="slowbytes")
    url = f"memory://loose-{uuid.uuid4().hex[:8]}/artifact"
    fsspec.filesystem("memory").put(str(art.path), url, recursive=True)
    assert persistkit.load(url) == b"loose"


def test_a_url_without_a_manifest_is_not_an_artifact() -> None:
    with pytest.raises(persistkit.errors.ArtifactNotFoundError, match="holds no"):
        persistkit.load(f"memory://nothing-{uuid.uuid4().hex[:8]}/here")


def test_the_top_level_api_saves_and_loads_through_a_store_url() -> None:
    use_slow_bytes(chunks=2)
    url = f"memory://api-{uuid.uuid4().hex[:8]}"
    persistkit.save(b"v1", "m", store=url, backend="slowbytes")
    Store(url).alias("m:1", "prod")
    persistkit.save(b"v2", "m", store=url, backend="slowbytes")
    assert persistkit.load("m@prod", store=url) == b"v1"
    assert persistkit.inspect("m", store=url).version == 2
