"""A review of the database-backed store, metrics and queries (issue 15) from the side of a
demanding user and an adversary: what must never be lost, never reused, never printed.

Every test here failed before its fix (most were first committed as strict xfails naming
the bug in the catalog package); they all must pass now.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from persistkit.catalog.moving import migrate_store
from persistkit.cli import main
from persistkit.errors import IntegrityError, QueryError, RefError, StoreError
from persistkit.lineage import git_lineage
from persistkit.store import Store
from postgres_server import fresh_postgres_url, postgres_server  # noqa: F401  (fixtures)
from store_helpers import store_url


def _shared(tmp_path: Path) -> tuple[Store, Store]:
    """Two SQLite stores whose payloads go to one folder."""
    blobs = tmp_path / "blobs"
    return (
        Store(f"sqlite:///{tmp_path}/a.db", blobs=blobs),
        Store(f"sqlite:///{tmp_path}/b.db", blobs=blobs),
    )


# --- nothing in the store is lost --------------------------------------------------------


def test_gc_of_one_store_keeps_the_payloads_of_another_sharing_its_blobs(tmp_path: Path) -> None:
    a, b = _shared(tmp_path)
    a.save({"w": [1]}, "m")
    b.save({"w": [2]}, "other")

    b.gc(grace=0)

    assert a.load("m") == {"w": [1]}


def test_deleting_a_version_keeps_its_payload_for_a_copy_in_another_store(tmp_path: Path) -> None:
    a, b = _shared(tmp_path)
    a.save({"w": [1]}, "m")
    a.copy("m", b)  # same digest: one payload for both

    a.delete("m:1")

    assert b.load("m:1") == {"w": [1]}


def test_blobs_in_the_url_beat_the_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_postgres_url: str,  # noqa: F811
) -> None:
    monkeypatch.setenv("PERSISTKIT_BLOBS", str(tmp_path / "env-blobs"))
    in_url = Store(f"{fresh_postgres_url}?blobs={tmp_path}/url-blobs")
    assert in_url.save({"w": [1]}, "m").path.parent == tmp_path / "url-blobs"
    from_env = Store(fresh_postgres_url)  # the variable is for a URL naming no blobs
    assert from_env.catalog.space.url == str(tmp_path / "env-blobs")


def test_gc_refuses_when_a_catalog_sharing_its_blobs_cannot_be_asked(tmp_path: Path) -> None:
    a, b = _shared(tmp_path)
    a.save({"w": [1]}, "m")
    b.save({"w": [2]}, "other")
    a.close()
    (tmp_path / "a.db").rename(tmp_path / "moved.db")  # a's catalog can no longer be found

    with pytest.raises(StoreError, match="shared with the catalog") as caught:
        b.gc(grace=0)

    assert "give each store its own blobs" in str(caught.value.hint)
    assert Store(f"sqlite:///{tmp_path}/moved.db", blobs=tmp_path / "blobs").load("m")


def test_a_negative_grace_is_refused_before_anything_is_removed(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/c.db")
    store.save({"w": [1]}, "m")
    with pytest.raises(StoreError, match="grace period must be 0 seconds or more"):
        store.gc(grace=-60)
    result = CliRunner().invoke(main, ["gc", "--grace", "-5m", "--store", store.url])
    assert result.exit_code == 2
    assert "0 or more" in result.output


def test_gc_keeps_the_payload_of_a_save_whose_serialisation_outlasted_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from persistkit.catalog.sql import SqlCatalog

    url = f"sqlite:///{tmp_path}/c.db"
    store = Store(url)
    store.save({"w": [0]}, "m")
    publish, claim = Store.publish, SqlCatalog._claim

    def written_two_hours_ago(self: Store, staging: Path, *args: Any, **kwargs: Any) -> Any:
        old = time.time() - 7200
        for path in [staging, *staging.rglob("*")]:
            os.utime(path, (old, old))
        return publish(self, staging, *args, **kwargs)

    def gc_meanwhile(self: SqlCatalog, *args: Any, **kwargs: Any) -> Any:
        Store(url).gc()  # another process cleans up with the default grace (1 h)
        return claim(self, *args, **kwargs)

    monkeypatch.setattr(Store, "publish", written_two_hours_ago)
    monkeypatch.setattr(SqlCatalog, "_claim", gc_meanwhile)
    store.save({"w": [1]}, "m")
    monkeypatch.undo()

    assert store.load("m:2") == {"w": [1]}


def test_a_missing_payload_of_a_database_store_is_an_integrity_error(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/c.db")
    art = store.save({"w": [1]}, "m")
    shutil.rmtree(art.path)
    with pytest.raises(IntegrityError, match="m:1"):
        store.load("m")


@pytest.mark.parametrize("kind", ["folder", "sqlite", "postgresql"])
@pytest.mark.parametrize(
    "tags",
    [{"epochs": 10}, {"note": "a\x00b"}, {"note": "\udc80"}, {"k" * 200: "x"}, {"k": None}],
    ids=["number", "nul", "surrogate", "long-key", "none"],
)
def test_a_tag_a_store_cannot_hold_is_refused_before_anything_is_stored(
    kind: str, tags: dict[Any, Any], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = Store(store_url(kind, request, tmp_path))
    with pytest.raises(RefError, match="tag"):
        store.save({"w": [1]}, "m", tags=tags)  # was: a damaged m:1, or a bare database error
    assert not store.has("m") and not store.gc(grace=0, dry_run=True)
    store.save({"w": [1]}, "m", tags={"epochs": "10"})
    with pytest.raises(RefError, match="NUL"):
        store.tag("m:1", "note", "a\x00b")


# --- version numbers are never reused ----------------------------------------------------


def test_migrate_store_keeps_the_deleted_numbers_of_a_name_with_no_version_left(
    tmp_path: Path,
) -> None:
    source = Store(tmp_path / "folder")
    source.save({"w": [1]}, "kept")
    source.save({"w": [1]}, "gone")
    source.delete("gone:1")
    dest = Store(f"sqlite:///{tmp_path}/dest.db")

    migrate_store(source, dest)

    assert dest.save({"w": [2]}, "gone").version == 2  # 1 was deleted: never reused


def test_migrate_store_refuses_a_destination_that_deleted_a_name_of_the_source(
    tmp_path: Path,
) -> None:
    source = Store(tmp_path / "folder")
    source.save({"w": [1]}, "m")
    dest = Store(f"sqlite:///{tmp_path}/dest.db")
    dest.save({"w": [2]}, "m")
    dest.delete("m:1")

    with pytest.raises(StoreError, match="deleted numbers are never reused"):
        migrate_store(source, dest)


@contextlib.contextmanager
def _reader(url: str, grant: list[str], *before: str) -> Iterator[Store]:
    """The store at ``url`` opened as a new role granted only ``grant`` (SQL run as the
    owner after ``before``, which changes the catalog first); the role dropped after."""
    import sqlalchemy as sa

    role = f"pk_reader_{os.getpid()}"
    scheme, rest = url.split("://", 1)
    owner = sa.create_engine("postgresql+psycopg://" + rest.split("?", 1)[0])
    with owner.begin() as conn:
        for statement in [*before, f"CREATE ROLE {role} LOGIN", *grant]:
            conn.exec_driver_sql(statement.format(role=role))
    reader = Store(f"{scheme}://{role}@{rest.split('@', 1)[-1]}")
    try:
        yield reader
    finally:
        reader.close()
        with owner.begin() as conn:
            conn.exec_driver_sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        owner.dispose()


def test_a_read_only_role_opening_an_older_schema_is_told_what_to_do(
    tmp_path: Path,
    fresh_postgres_url: str,  # noqa: F811
) -> None:
    url = f"{fresh_postgres_url}?blobs={tmp_path}/blobs"
    Store(url).save({"w": [1]}, "m")
    back_to_schema_2 = (
        "ALTER TABLE persistkit_versions DROP COLUMN summary",
        "ALTER TABLE persistkit_versions DROP COLUMN checked",
        "UPDATE persistkit_schema SET version = 2",
    )
    grant = ["GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"]
    with _reader(url, grant, *back_to_schema_2) as reader, pytest.raises(StoreError) as caught:
        reader.list()
    assert "schema" in caught.value.message
    assert "upgraded once by a role that owns its tables" in str(caught.value.hint)


def test_a_reader_not_granted_the_catalog_id_still_reads(
    tmp_path: Path,
    fresh_postgres_url: str,  # noqa: F811
) -> None:
    url = f"{fresh_postgres_url}?blobs={tmp_path}/blobs"
    Store(url).save({"w": [1]}, "m")
    # granted as before schema 4 added persistkit_store
    tables = ("schema", "versions", "aliases", "tags")
    grant = [f"GRANT SELECT ON persistkit_{table} TO {{role}}" for table in tables]
    with _reader(url, grant) as reader:
        assert reader.list() == ["m"] and reader.load("m") == {"w": [1]}


# --- concurrent writers: the last write wins ------------------------------------------


def test_moving_an_alias_and_tagging_at_once_on_postgresql_never_fails(
    tmp_path: Path,
    fresh_postgres_url: str,  # noqa: F811
) -> None:
    url = f"{fresh_postgres_url}?blobs={tmp_path}/blobs"
    Store(url).save({"w": [1]}, "m")
    Store(url).save({"w": [2]}, "m")
    failures: list[BaseException] = []

    def writer(i: int) -> None:
        store = Store(url)
        for j in range(20):
            try:
                store.alias(f"m:{1 + (i + j) % 2}", "prod")
                store.tag("m:1", "by", f"{i}-{j}")
            except Exception as exc:  # every failure is the finding
                failures.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert set(Store(url).aliases("m")) == {"prod"}


def test_a_forked_process_reads_a_postgresql_store_on_its_own_connections(
    tmp_path: Path,
    fresh_postgres_url: str,  # noqa: F811
) -> None:
    url = f"{fresh_postgres_url}?blobs={tmp_path}/blobs"
    store = Store(url)
    store.save({"w": [1]}, "m")
    assert store.list() == ["m"]  # the parent holds a pooled connection now
    children = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's outcome is its exit status
            try:
                ok = all(Store(url).resolve("m") == ("m", 1) for _ in range(200))
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        children.append(pid)
    parent_ok = all(store.resolve("m") == ("m", 1) for _ in range(200))
    statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    assert parent_ok and statuses == [0, 0, 0, 0]


# --- credentials are never printed -------------------------------------------------------


def _with_password(url: str) -> str:
    """The test server's URL with a password (the server trusts loopback: it is ignored)."""
    scheme, rest = url.split("://", 1)
    user, at, host = rest.partition("@")
    return f"{scheme}://{user if at else 'postgres'}:s3cretpw@{host if at else rest}"


def test_migrate_store_and_cp_never_print_the_database_password(
    tmp_path: Path,
    fresh_postgres_url: str,  # noqa: F811
) -> None:
    source = Store(tmp_path / "folder")
    source.save({"w": [1]}, "m")
    dest = f"{_with_password(fresh_postgres_url)}?blobs={tmp_path}/blobs"
    runner = CliRunner()
    outputs = []
    for args in (
        ["migrate-store", str(source.url), dest],
        ["cp", "m", dest, "--store", str(source.url)],
        ["cp", "m", dest, "--store", str(source.url), "--json"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert len(Store(dest).versions("m")) == 3
    assert not [o for o in outputs if "s3cretpw" in o]
    assert "***" in outputs[0] and "***" in json.loads(outputs[2])[0]["store"]


def test_an_unknown_scheme_is_refused_without_printing_its_password() -> None:
    with pytest.raises(StoreError) as caught:
        Store("mysql://me:s3cretpw@db.internal/models")
    assert "s3cretpw" not in caught.value.message


def test_a_batch_worker_reopens_the_store_the_model_was_pinned_in(tmp_path: Path) -> None:
    from persistkit.batch import pin_model

    store = Store(f"sqlite:///{tmp_path}/c.db", blobs=tmp_path / "elsewhere")
    store.save({"w": [1]}, "m")
    pin, _ = pin_model("m", store, remote=True)
    assert Store(pin.store_url).load(pin.source) == {"w": [1]}  # as a worker process does


def test_a_batch_worker_reopens_a_postgresql_store_with_its_password(
    tmp_path: Path,
    fresh_postgres_url: str,  # noqa: F811
) -> None:
    from persistkit.batch import pin_model

    store = Store(_with_password(fresh_postgres_url), blobs=tmp_path / "blobs")
    store.save({"w": [1]}, "m")
    pin, _ = pin_model("m", store, remote=True)
    assert "s3cretpw" in str(pin.store_url) and "s3cretpw" not in repr(pin)
    assert Store(pin.store_url).load(pin.source) == {"w": [1]}


# --- clear errors for bad URLs -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://me:s3cretpw@db.internal:notaport/models",
        "postgresql+nodriver://me:s3cretpw@db.internal/models",
    ],
)
def test_a_database_url_that_cannot_work_is_a_store_error(url: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        Store(url, blobs=tmp_path / "blobs").list()
    assert "s3cretpw" not in caught.value.message


def test_a_sqlite_url_with_two_slashes_is_told_apart_from_an_in_memory_one() -> None:
    with pytest.raises(StoreError) as caught:
        Store("sqlite://models.db")
    assert "sqlite:///models.db" in caught.value.message + str(caught.value.hint)


def test_the_url_a_store_shows_opens_the_same_store(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/a.db?timeout=5&blobs={tmp_path}/b")
    store.save({"w": [1]}, "m")
    assert Store(store.url).load("m") == {"w": [1]}


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a wedged server, a firewall)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in accepted:
        conn.close()


def test_a_server_that_never_answers_is_an_error_within_seconds(
    silent_server: int, tmp_path: Path
) -> None:
    code = (
        "import persistkit\n"
        f"persistkit.Store('postgresql://me@127.0.0.1:{silent_server}/models', "
        f"blobs={str(tmp_path)!r}).list()\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=25
        )
    except subprocess.TimeoutExpired:
        pytest.fail("still waiting for the server after 25 s")
    assert "StoreError" in done.stderr and "timeout" in done.stderr.lower()


def test_a_connect_timeout_in_the_url_is_kept(silent_server: int, tmp_path: Path) -> None:
    url = f"postgresql://me@127.0.0.1:{silent_server}/models?connect_timeout=1"
    started = time.monotonic()
    with pytest.raises(StoreError, match="timeout"):
        Store(url, blobs=tmp_path).list()
    assert time.monotonic() - started < 8  # not the default 10 s


# --- lineage never leaks a secret --------------------------------------------------------


@pytest.mark.skipif(shutil.which("git") is None, reason="the git command is not installed")
@pytest.mark.parametrize(
    ("remote", "recorded"),
    [
        # git writes a value holding '#' or ';' in quotes
        ("https://alice:pa#ss;w0rd@example.com/team/r.git", "https://example.com/team/r.git"),
        ("https://bob:p@ssword@example.org/x.git", "https://example.org/x.git"),
        ("https://example.com/a@b/r.git", "https://example.com/a@b/r.git"),
    ],
)
def test_the_git_remote_loses_every_credential(tmp_path: Path, remote: str, recorded: str) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin", remote], check=True)
    author = ["-c", "user.name=t", "-c", "user.email=t@e.org"]
    subprocess.run(
        ["git", "-C", str(tmp_path), *author, "commit", "-q", "--allow-empty", "-m", "first"],
        check=True,
    )
    record = git_lineage(tmp_path / "train.py")
    assert record is not None
    assert record["remote"] == recorded


@pytest.mark.parametrize("special", ["fifo", "dangling-link"])
def test_data_digest_of_a_folder_with_a_special_file_is_a_record_error(
    tmp_path: Path, special: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n")
    if special == "fifo":
        os.mkfifo(data / "pipe")  # opening it would wait for a writer forever
    else:
        (data / "gone.csv").symlink_to(tmp_path / "nowhere.csv")
    code = (
        "import sys\nfrom persistkit import data_digest\nfrom persistkit.errors import "
        "RecordError\ntry:\n    data_digest(sys.argv[1])\nexcept RecordError as e:\n"
        "    print(e.message)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(data)], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        pytest.fail("data_digest() still waiting after 20 s")
    assert "data_digest()" in done.stdout, done.stderr


# --- queries: types that do not mix ------------------------------------------------------


@pytest.fixture
def versions(tmp_path: Path) -> Store:
    store = Store(tmp_path / "q")
    store.save({"a": 1}, "m", params={"C": 1}, tags={"epochs": "9"})
    store.save({"a": 2}, "m", params={"C": "abc"}, tags={"epochs": "10"})
    store.save({"a": 3}, "m", params={"C": 2.5}, tags={"epochs": "x"})
    return store


def _found(store: Store, *where: str, sort: tuple[str, ...] = ()) -> list[int]:
    return [v.version for v in store.find("m", where=list(where), sort=list(sort))]


def test_numeric_tags_sort_as_numbers_as_where_compares_them(versions: Store) -> None:
    assert _found(versions, "tags.epochs>=9") == [1, 2]
    assert _found(versions, sort=("tags.epochs",)) == [1, 2, 3]  # 9, 10, then text
    assert _found(versions, sort=("-tags.epochs",)) == [2, 1, 3]  # 10, 9, then text


def test_a_param_of_another_type_is_never_equal_to_the_value(versions: Store) -> None:
    assert _found(versions, "params.C=abc") == [2]
    assert _found(versions, "params.C!=abc") == [1, 3]
    assert _found(versions, "params.C>abc") == []  # a number orders against no text


def test_only_plainly_written_numbers_compare_as_numbers(versions: Store) -> None:
    assert _found(versions, "tags.epochs=10") == [2]
    assert _found(versions, "tags.epochs=1_0") == []  # Python reads 1_0 as 10; a user does not
    with pytest.raises(QueryError, match="is not one"):
        _found(versions, "version>=1_0")


def test_a_relative_time_beyond_the_calendar_is_a_query_error(versions: Store) -> None:
    with pytest.raises(QueryError, match="before the year 1"):
        _found(versions, "created_at>=now-100000000d")
