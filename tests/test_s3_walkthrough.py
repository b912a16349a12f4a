"""The S3 walkthrough of docs/store.md, run as written against moto's S3 server; plus what it
promises: a missing bucket is named, ``cp --aliases`` copies aliases, ``cp`` without it says
that it did not.

The walkthrough runner reads the section's fenced blocks in order. ``python`` blocks run in one
namespace; a ``print(...)  # text`` line must print ``text``. In ``console`` blocks each
``$ persistkit ...`` runs through the CLI and its output must match the lines below it
(``…`` matches anything within a line, a line of just ``…`` any number of lines, runs of
spaces any run of spaces); ``export`` lines set the environment (the AWS_* ones must be the
ones the test server needs, pointed at it); ``pip`` and ``moto_server`` are the test's
fixtures.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from persistkit import progress
from persistkit.cli import main
from persistkit.errors import StoreError
from persistkit.store import Store
from s3_server import S3Server, s3_env, s3_server  # noqa: F401  (fixtures)

DOC = Path(__file__).resolve().parent.parent / "docs" / "store.md"
DOC_ENDPOINT = "http://127.0.0.1:5000"


def walkthrough() -> list[tuple[str, str]]:
    """The (language, body) of every fenced block in the doc's S3 walkthrough section."""
    text = DOC.read_text(encoding="utf-8")
    assert "\n## S3 walkthrough" in text, "docs/store.md lost its S3 walkthrough"
    section = text.split("\n## S3 walkthrough", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(console|python)\n(.*?)```", section, flags=re.S)


def cli(args: list[str]) -> Result:
    result = CliRunner().invoke(main, args)
    progress.set_quiet(False)
    return result


def output_pattern(expected: list[str]) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line == "…":
            parts.append(r"(?:[^\n]*\n)*?")
            continue
        pieces = [re.sub(r"\\ (\\ )+", " +", re.escape(p)) for p in line.split("…")]
        parts.append("[^\n]*".join(pieces) + r"[ \t]*\n")
    return re.compile("".join(parts))


def run_console(body: str, server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    for command, expected in steps:
        words = shlex.split(command.split(" &", 1)[0])
        if words[0] in ("pip", "moto_server"):
            continue
        if words[0] == "export":
            for assignment in words[1:]:
                key, _, value = assignment.partition("=")
                if key.startswith("AWS_"):
                    assert key in server.env, f"the walkthrough sets {key}, moto needs no such"
                    if key == "AWS_ENDPOINT_URL":
                        assert value == DOC_ENDPOINT
                    monkeypatch.setenv(key, server.env[key])
                else:
                    monkeypatch.setenv(key, value)
            continue
        assert words[0] == "persistkit", command
        result = cli(words[1:])
        failing = bool(expected) and expected[0].startswith("error:")
        assert result.exit_code == (1 if failing else 0), (command, result.output)
        assert output_pattern(expected).fullmatch(result.output), (command, result.output)


def run_python(body: str, namespace: dict[str, object], server: S3Server) -> None:
    wanted = [
        line.split("  # ", 1)[1].replace(DOC_ENDPOINT, server.endpoint)
        for line in body.splitlines()
        if line.strip().startswith("print(") and "  # " in line
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(body, str(DOC), "exec"), namespace)
    assert out.getvalue().splitlines() == wanted


def test_the_s3_walkthrough_runs_as_documented(
    s3_env: S3Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("sklearn")  # the walkthrough trains a small scikit-learn model
    blocks = walkthrough()
    assert [lang for lang, _ in blocks].count("python") >= 2
    namespace: dict[str, object] = {"__name__": "walkthrough"}
    for lang, body in blocks:
        if lang == "console":
            run_console(body, s3_env, monkeypatch)
        else:
            run_python(body, namespace, s3_env)
    # what the walkthrough leaves behind
    copy = Store("s3://models/team-b")
    assert copy.aliases("iris") == {"prod": 2}
    assert copy.digest("iris@prod") == Store("s3://models/team-a").digest("iris@prod")


# -- a missing bucket ----------------------------------------------------------------------


def test_saving_into_a_missing_bucket_names_the_bucket_and_endpoint(
    s3_env: S3Server,  # noqa: F811
) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:8]}"
    store = Store(f"s3://{bucket}/models")
    with pytest.raises(StoreError) as caught:
        store.save({"w": 1}, "m", backend="pickle")
    message = caught.value.message
    assert f"no bucket {bucket!r} at {s3_env.endpoint}" in message
    assert "create it first" in message
    with pytest.raises(StoreError, match=f"no bucket {bucket!r}"):
        store.load("m")
    with pytest.raises(StoreError, match=f"no bucket {bucket!r}"):
        store.list()


def test_copying_into_a_missing_bucket_names_it(
    s3_env: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "store")
    store.save({"w": 1}, "m", backend="pickle")
    result = cli(["cp", "m", "s3://no-such-bucket/x", "--store", store.url])
    assert result.exit_code == 1
    assert "no bucket 'no-such-bucket'" in result.output


# -- cp --aliases ----------------------------------------------------------------------------


@pytest.fixture
def source(tmp_path: Path) -> Store:
    """A local store holding m:1 (@old), m:2, m:3 (@prod, @stable)."""
    store = Store(tmp_path / "source")
    for i in range(3):
        store.save({"w": i}, "m", backend="pickle")
    store.alias("m:1", "old")
    store.alias("m:3", "prod")
    store.alias("m:3", "stable")
    return store


@pytest.fixture(params=["local", "memory"])
def dest(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return Store(tmp_path / "dest")
    return Store(f"memory://dest-{uuid.uuid4().hex[:10]}")


def test_copy_of_one_version_with_aliases_copies_the_aliases_on_it(
    source: Store, dest: Store
) -> None:
    dest.save({"w": "already there"}, "m", backend="pickle")
    copies = source.copy("m@prod", dest, aliases=True)
    assert [a.version for a in copies] == [2]
    assert dest.aliases("m") == {"prod": 2, "stable": 2}
    assert dest.load("m@stable") == {"w": 2}


def test_copy_of_a_name_with_aliases_maps_every_alias_to_its_copy(
    source: Store, dest: Store
) -> None:
    copied = source.copy_versions("m", dest, aliases=True)
    assert [(c.source_version, c.artifact.version, c.aliases) for c in copied] == [
        (1, 1, ["old"]),
        (2, 2, []),
        (3, 3, ["prod", "stable"]),
    ]
    assert dest.aliases("m") == {"old": 1, "prod": 3, "stable": 3}
    assert dest.digest("m@old") == source.digest("m@old")


def test_copy_without_aliases_copies_none_and_reports_them(source: Store, dest: Store) -> None:
    copied = source.copy_versions("m:3", dest)
    assert (copied[0].aliases, copied[0].aliases_not_copied) == ([], ["prod", "stable"])
    assert dest.aliases("m") == {}


def test_an_alias_the_destination_has_is_refused_before_anything_is_copied(
    source: Store, dest: Store
) -> None:
    dest.save({"w": "theirs"}, "m", backend="pickle")
    dest.alias("m:1", "prod")
    with pytest.raises(StoreError, match=r"already has the alias m@prod \(-> m:1\)") as caught:
        source.copy("m:3", dest, aliases=True)
    assert "--force" in (caught.value.hint or "")
    assert [v.version for v in dest.versions("m")] == [1]
    assert dest.aliases("m") == {"prod": 1}
    source.copy("m:3", dest, aliases=True, force=True)
    assert dest.aliases("m") == {"prod": 2, "stable": 2}


def test_cli_cp_aliases_and_the_note_without_it(source: Store, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    plain = cli(["cp", "m:3", str(dest), "--store", source.url])
    assert plain.exit_code == 0
    assert plain.stdout == f"copied to {dest}: m:1\n"
    assert "note: aliases not copied: m@prod, m@stable" in plain.stderr
    assert "cp --aliases" in plain.stderr
    quiet = cli(["cp", "m:2", str(dest), "--store", source.url])  # m:2 has no alias: no note
    assert quiet.stderr == ""
    refused = cli(["cp", "m:3", str(dest), "--aliases", "--store", source.url])
    assert refused.exit_code == 0  # dest has no aliases yet: nothing to refuse
    assert refused.stdout == f"copied to {dest}: m:3 (aliases: prod, stable)\n"
    again = cli(["cp", "m:3", str(dest), "--aliases", "--store", source.url])
    assert again.exit_code == 1
    assert "already has the alias m@prod (-> m:3)" in again.stderr
    forced = cli(["cp", "m:3", str(dest), "--aliases", "--force", "--json", "--store", source.url])
    assert forced.exit_code == 0
    record = json.loads(forced.stdout)[0]
    assert record["aliases"] == ["prod", "stable"] and record["version"] == 4
    assert record["source_version"] == 3 and record["aliases_not_copied"] == []
    assert Store(dest).aliases("m") == {"prod": 4, "stable": 4}
