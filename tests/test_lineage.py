"""Lineage: the data digest a user records, and the git commit recorded on its own when the
saving script runs in a git checkout (real git repositories in temporary folders)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import persistkit
from persistkit.errors import RecordError
from persistkit.lineage import git_lineage, recorded_lineage

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="the git command is not installed")

TRAIN_SCRIPT = """
import sys
import persistkit

art = persistkit.save({"w": 1}, "m", store=sys.argv[1], backend="pickle",
                      lineage={"data": "sha256:" + "ab" * 32})
print(art.manifest.to_json())
"""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git checkout with one commit on branch 'main': train/train.py and data.csv."""
    if GIT is None:
        pytest.skip("the git command is not installed")
    root = tmp_path / "project"
    (root / "train").mkdir(parents=True)
    (root / "train" / "train.py").write_text(TRAIN_SCRIPT)
    (root / "data.csv").write_text("x,y\n1,2\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def run_script(script: Path, store: Path, env: dict[str, str] | None = None) -> dict:
    """Run ``script`` (it saves one model into ``store``) in a fresh process; its manifest."""
    done = subprocess.run(
        [sys.executable, str(script), str(store)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=script.parent,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# --- git, found from the script that saves -------------------------------------------------


@needs_git
def test_a_script_in_a_checkout_records_its_commit_branch_and_path(
    repo: Path, tmp_path: Path
) -> None:
    manifest = run_script(repo / "train" / "train.py", tmp_path / "store")

    assert manifest["lineage"]["git"] == {
        "commit": git(repo, "rev-parse", "HEAD"),
        "branch": "main",
        "dirty": False,
        "path": "train/train.py",
    }
    assert manifest["lineage"]["data"] == "sha256:" + "ab" * 32


@needs_git
def test_an_edited_tracked_file_makes_the_record_dirty(repo: Path, tmp_path: Path) -> None:
    (repo / "data.csv").write_text("x,y\n1,3\n")

    manifest = run_script(repo / "train" / "train.py", tmp_path / "store")

    assert manifest["lineage"]["git"]["dirty"] is True


@needs_git
def test_an_untracked_file_does_not_make_it_dirty(repo: Path) -> None:
    (repo / "notes.txt").write_text("scratch")

    assert git_lineage(repo / "train" / "train.py")["dirty"] is False  # type: ignore[index]


@needs_git
def test_without_a_git_command_the_commit_is_still_read_and_dirty_is_unknown(
    repo: Path, tmp_path: Path
) -> None:
    manifest = run_script(repo / "train" / "train.py", tmp_path / "store", env={"PATH": ""})

    record = manifest["lineage"]["git"]
    assert record["commit"] == git(repo, "rev-parse", "HEAD")
    assert record["dirty"] is None


def test_a_script_outside_any_checkout_records_no_git(tmp_path: Path) -> None:
    script = tmp_path / "alone" / "train.py"
    script.parent.mkdir()
    script.write_text(TRAIN_SCRIPT)

    manifest = run_script(script, tmp_path / "store")

    assert "git" not in manifest["lineage"]


@needs_git
def test_the_remote_url_is_recorded_without_credentials(repo: Path) -> None:
    git(repo, "remote", "add", "upstream", "https://someone@example.org/other.git")
    git(repo, "remote", "add", "origin", "https://alice:s3cret@example.com/team/gnome.git")

    record = git_lineage(repo / "train" / "train.py")

    assert record is not None
    assert record["remote"] == "https://example.com/team/gnome.git"
    assert "s3cret" not in json.dumps(record)


@needs_git
def test_packed_refs_and_a_detached_head_are_read(repo: Path) -> None:
    commit = git(repo, "rev-parse", "HEAD")
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()

    assert git_lineage(repo / "data.csv")["commit"] == commit  # type: ignore[index]

    git(repo, "checkout", "-q", "--detach")
    record = git_lineage(repo / "data.csv")
    assert record is not None and record["commit"] == commit and "branch" not in record


@needs_git
def test_a_linked_worktree_records_its_own_branch_and_commit(repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    git(repo, "worktree", "add", "-q", "-b", "experiment", str(other))
    (other / "more.txt").write_text("more")
    git(other, "add", "more.txt")
    git(other, "commit", "-q", "-m", "second")

    record = git_lineage(other / "train" / "train.py")

    assert record is not None
    assert record["branch"] == "experiment"
    assert record["commit"] == git(other, "rev-parse", "HEAD") != git(repo, "rev-parse", "HEAD")
    assert record["path"] == "train/train.py"


@needs_git
def test_a_command_in_the_checkouts_config_is_not_run(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    hook.chmod(0o755)
    git(repo, "config", "core.fsmonitor", str(hook))

    record = git_lineage(repo / "train" / "train.py")

    assert record is not None and record["dirty"] is False
    assert not marker.exists()


@needs_git
def test_a_checkout_without_commits_records_no_git(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")

    assert git_lineage(tmp_path / "train.py") is None


# --- what the user passes -----------------------------------------------------------------


def test_lineage_false_records_nothing_and_git_none_leaves_out_git() -> None:
    assert recorded_lineage(False) == {}
    assert recorded_lineage({"git": None, "data": "x"}) == {"data": "x"}


def test_a_given_git_record_replaces_the_one_found() -> None:
    given = {"commit": "4be1" * 10, "dirty": False}

    assert recorded_lineage({"git": given})["git"] == given


@pytest.mark.parametrize(
    ("lineage", "named"),
    [
        ({"data": ["a", "b"]}, "'data'"),
        ({"data": {"files": ["a"]}}, "'files'"),
        ({"bad key": "x"}, "'bad key'"),
        ({"data": "x" * 5000}, "'data'"),
        ("sha256:abc", "mapping"),
    ],
)
def test_lineage_that_cannot_be_recorded_is_refused_naming_it(lineage: object, named: str) -> None:
    with pytest.raises(RecordError, match=named):
        recorded_lineage(lineage)  # type: ignore[arg-type]


def test_a_refused_lineage_saves_nothing(tmp_path: Path) -> None:
    store = persistkit.Store(tmp_path / "store")
    with pytest.raises(RecordError):
        store.save({"w": 1}, "m", backend="pickle", lineage={"data": 3j})
    assert store.list() == []


# --- data digests ---------------------------------------------------------------------------


def test_a_file_digest_is_the_sha256_of_its_bytes(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "train.csv"
    path.write_bytes(b"x,y\n1,2\n")

    assert persistkit.data_digest(path) == "sha256:" + hashlib.sha256(b"x,y\n1,2\n").hexdigest()
    assert persistkit.data_digest(str(path)) == persistkit.data_digest(b"x,y\n1,2\n")


def test_a_folder_digest_covers_names_and_contents_not_creation_order(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, order in ((first, ("x", "y/z")), (second, ("y/z", "x"))):
        for rel in order:
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(rel)
    assert persistkit.data_digest(first) == persistkit.data_digest(second)

    (second / "x").rename(second / "w")
    assert persistkit.data_digest(first) != persistkit.data_digest(second)


def test_an_array_digest_covers_values_dtype_and_shape_not_memory_layout() -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    digest = persistkit.data_digest(values)

    assert persistkit.data_digest(np.asfortranarray(values)) == digest
    assert persistkit.data_digest(values.astype(np.float64)) != digest
    assert persistkit.data_digest(values.reshape(4, 3)) != digest
    assert persistkit.data_digest(values.tolist()) != digest  # a list reads as float64


def test_data_digest_refuses_object_arrays_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="objects"):
        persistkit.data_digest(np.array([{"a": 1}], dtype=object))
    with pytest.raises(RecordError, match="no such file"):
        persistkit.data_digest(tmp_path / "missing.csv")
