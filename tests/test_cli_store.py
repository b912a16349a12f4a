"""The store commands of the ``persistkit`` CLI: ls, show, alias, tag, rm, cp, verify.

Most cases use click's CliRunner; a few run the installed ``persistkit`` command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import persistkit
from persistkit import progress
from persistkit.cli import main
from persistkit.store import Store
from s3_server import S3Server, s3_env, s3_server  # noqa: F401  (fixtures)

PERSISTKIT = shutil.which("persistkit", path=str(Path(sys.executable).parent)) or "persistkit"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A local store holding m:1 (tag team=vision) and m:2, plain pickled dicts."""
    store = Store(tmp_path / "store")
    store.save({"w": [1]}, "m", backend="pickle", tags={"team": "vision"})
    store.save({"w": [2]}, "m", backend="pickle")
    return store


def run(store: Store | str, *args: str) -> Result:
    url = store.url if isinstance(store, Store) else store
    result = CliRunner().invoke(main, [*args, "--store", url])
    progress.set_quiet(False)
    return result


def run_installed(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PERSISTKIT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


# -- ls ------------------------------------------------------------------------------------


def test_ls_json_lists_one_object_per_version_with_the_agreed_keys(store: Store) -> None:
    records = json.loads(run(store, "ls", "--json").output)
    assert [(r["name"], r["version"]) for r in records] == [("m", 1), ("m", 2)]
    for key in ("name", "version", "backend", "created_at", "aliases", "tags"):
        assert all(key in r for r in records)
    assert records[0]["tags"] == {"team": "vision"}


def test_ls_name_lists_only_that_model(store: Store) -> None:
    store.save({"w": [3]}, "other", backend="pickle")
    records = json.loads(run(store, "ls", "other", "--json").output)
    assert [r["name"] for r in records] == ["other"]


def test_ls_prints_a_table_with_aliases(store: Store) -> None:
    store.alias("m:2", "prod")
    result = run(store, "ls")
    assert result.exit_code == 0
    header, _rule, _first, second = result.output.splitlines()
    assert header.split()[:3] == ["name", "version", "aliases"]
    assert second.split()[:3] == ["m", "2", "prod"]


def test_ls_of_an_empty_store_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()  # a folder that does not exist is no store: an error
    result = run(str(tmp_path / "empty"), "ls")
    assert result.exit_code == 0
    assert "no models" in result.output


# -- show ----------------------------------------------------------------------------------


def test_show_json_prints_the_manifest_with_its_digest(store: Store) -> None:
    shown = json.loads(run(store, "show", "m:1", "--json").output)
    assert shown["format"] == "persistkit/2"  # BLAKE3 file digests (persistkit.digests)
    assert shown["version"] == 1
    assert shown["digest"] == store.digest("m:1")


def test_show_accepts_an_alias_and_a_digest(store: Store) -> None:
    store.alias("m:1", "prod")
    digest = store.digest("m:1")
    by_alias = json.loads(run(store, "show", "m@prod", "--json").output)
    by_digest = json.loads(run(store, "show", f"m@{digest[:20]}", "--json").output)
    assert by_alias["version"] == by_digest["version"] == 1
    assert by_alias["aliases"] == ["prod"]


def test_show_prints_the_digest_for_people(store: Store) -> None:
    assert f"digest:     {store.digest('m')}" in run(store, "show", "m").output


# -- alias, tag, rm, cp --------------------------------------------------------------------


def test_alias_moves_an_alias(store: Store) -> None:
    assert run(store, "alias", "m:1", "prod").output.strip() == "m@prod -> m:1"
    run(store, "alias", "m:2", "prod")
    assert store.aliases("m") == {"prod": 2}


def test_tag_sets_a_tag_on_the_version(store: Store) -> None:
    result = run(store, "tag", "m:2", "stage=prod", "--json")
    assert json.loads(result.output) == {"name": "m", "version": 2, "tags": {"stage": "prod"}}
    assert store.tags("m:2") == {"stage": "prod"}


def test_tag_without_equals_is_a_usage_error(store: Store) -> None:
    result = run(store, "tag", "m", "stage")
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output


def test_rm_deletes_a_version(store: Store) -> None:
    assert run(store, "rm", "m:1").output.strip() == "deleted m:1"
    assert [v.version for v in store.versions("m")] == [2]


def test_rm_of_an_aliased_version_needs_force(store: Store) -> None:
    store.alias("m:1", "prod")
    refused = run(store, "rm", "m:1")
    assert refused.exit_code == 1
    assert run(store, "rm", "m:1", "--force").exit_code == 0
    assert [v.version for v in store.versions("m")] == [2]


def test_cp_copies_every_version_to_another_store(store: Store, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    result = run(store, "cp", "m", str(dest), "--json")
    assert [r["version"] for r in json.loads(result.output)] == [1, 2]
    assert Store(dest).digest("m:2") == store.digest("m:2")


def test_cp_copies_one_version(store: Store, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    run(store, "cp", "m:2", str(dest))
    assert Store(dest).load("m") == {"w": [2]}
    assert [v.version for v in Store(dest).versions("m")] == [1]


# -- verify --------------------------------------------------------------------------------


def test_verify_proves_a_stored_example_reproduces(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.save(lambda x: x * 2, "double", example=np.arange(4.0))
    result = run(store, "verify", "double", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "uri": "double:1",
        "files_checked": 4,  # payload, requirements.txt, example inputs and outputs
        "example_checked": True,
        "identical": True,
        "seal": "yours",
    }


def test_verify_of_a_tampered_version_exits_1(store: Store) -> None:
    folder, manifest, *_ = store.fetch("m:1")
    payload = folder / manifest.primary_file
    payload.write_bytes(payload.read_bytes() + b"!")
    result = run(store, "verify", "m:1")
    assert result.exit_code == 1
    assert "hint:" in result.output


# -- the installed command -----------------------------------------------------------------


def test_installed_ls_json_works(store: Store) -> None:
    done = run_installed("ls", "--json", "--store", store.url)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 2


def test_installed_errors_are_one_line_with_a_hint_and_exit_1(store: Store) -> None:
    done = run_installed("show", "m:9", "--store", store.url)
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: m has no version 9") and "(hint:" in line


def test_installed_bad_ref_is_exit_1(store: Store) -> None:
    done = run_installed("show", "Bad Name!", "--store", store.url)
    assert done.returncode == 1
    assert "not a valid model name" in done.stderr


def test_installed_usage_errors_exit_2() -> None:
    assert run_installed("alias", "onlyone").returncode == 2


def test_installed_commands_reach_an_s3_store(request: pytest.FixtureRequest) -> None:
    server: S3Server = request.getfixturevalue("s3_env")
    url = server.fresh_url()
    remote = Store(url)
    remote.save({"w": [1]}, "m", backend="pickle")
    done = run_installed("alias", "m:1", "prod", "--store", url, env=server.env)
    assert done.returncode == 0, done.stderr
    shown = run_installed("show", "m@prod", "--json", "--store", url, env=server.env)
    assert json.loads(shown.stdout)["aliases"] == ["prod"]
    verified = run_installed("verify", "m@prod", "--store", url, env=server.env)
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr == ""  # no progress bar when stderr is not a terminal


def test_the_persistkit_store_variable_picks_the_store(store: Store) -> None:
    done = run_installed("ls", "--json", env={"PERSISTKIT_STORE": store.url})
    assert len(json.loads(done.stdout)) == 2


def test_a_saved_model_is_listed_by_the_cli_default_store(isolated_home: Path) -> None:
    persistkit.save({"w": [1]}, "defaulted", backend="pickle")
    done = run_installed("ls", "--json")
    assert [r["name"] for r in json.loads(done.stdout)] == ["defaulted"]
