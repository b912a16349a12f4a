"""Queries over a store: --where clauses, --sort keys, --limit, and name@best:METRIC refs,
through the Python API, the CLI and the server, on every store kind."""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import persistkit
from persistkit.cli import main
from persistkit.errors import QueryError, RefError, VersionNotFoundError
from persistkit.manifest import Manifest, utc_now
from persistkit.query import parse_sort, parse_where, sort_versions
from persistkit.refs import Ref, parse_ref
from persistkit.store import Store, VersionInfo
from postgres_server import fresh_postgres_url, postgres_server  # noqa: F401  (fixtures)
from s3_server import s3_env, s3_server  # noqa: F401  (fixtures)
from store_helpers import store_url

KINDS = ["folder", "memory", "s3", "sqlite", "postgresql", "postgresql-s3"]
DATA = "sha256:" + "aa" * 32
COMMIT = "4be1" * 10

# name, metrics, params, tags, saved_by, lineage
VERSIONS: list[tuple[str, dict[str, float], dict[str, Any], dict[str, str], str, Any]] = [
    ("g", {"acc": 0.80, "loss": 0.5}, {"C": 0.1, "kernel": "lin", "fit": True},
     {"stage": "prod"}, "alice", False),
    ("g", {"acc": 0.95, "loss": 0.3}, {"C": 1, "kernel": "rbf"}, {"stage": "prod"}, "bob", False),
    ("g", {"acc": 0.95, "loss": 0.4}, {"C": 1.0, "kernel": "rbf"}, {}, "alice", False),
    ("g", {}, {"C": "auto"}, {"stage": "dev"}, "bob", {"git": {"commit": COMMIT}}),
    ("h", {"acc": 0.99}, {}, {}, "alice", {"data": DATA, "git": None}),
]  # fmt: skip


def fill(store: Store, monkeypatch: pytest.MonkeyPatch) -> str:
    """Save :data:`VERSIONS` (g:1-4, h:1; each g:N predicts N); ``g@prod`` -> g:2. Returns
    a time between g:2 and g:3."""
    middle = ""
    for i, (name, metrics, params, tags, who, lineage) in enumerate(VERSIONS, start=1):
        monkeypatch.setenv("LOGNAME", who)
        store.save(
            _times(i),
            name,
            backend="cloudpickle",
            metrics=metrics,
            params=params,
            tags=tags,
            lineage=lineage,
        )
        if i == 2:
            time.sleep(0.01)
            middle = utc_now()
            time.sleep(0.01)
    store.alias("g:2", "prod")
    return middle


def _times(k: int) -> Any:
    return lambda x: np.asarray(x, dtype=float) * k


def refs(found: list[Any]) -> list[str]:
    return [f"{v.name}:{v.version}" for v in found]


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Store:
    the_store = Store(f"memory://query-{uuid.uuid4().hex[:10]}")
    the_store.middle = fill(the_store, monkeypatch)  # type: ignore[attr-defined]
    return the_store


# --- where ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("tags.stage=prod", ["g:1", "g:2"]),
        ("metrics.acc>=0.9", ["g:2", "g:3", "h:1"]),
        ("metrics.acc>0.95", ["h:1"]),
        ("metrics.loss<=0.3", ["g:2"]),
        ("params.C=1.0", ["g:2", "g:3"]),  # 1 and 1.0 are the same number
        ("params.C=auto", ["g:4"]),
        ("params.C>0.5", ["g:2", "g:3"]),  # "auto" is not compared with numbers
        ("params.kernel=rbf", ["g:2", "g:3"]),
        ("params.fit=true", ["g:1"]),
        ("saved_by=alice", ["g:1", "g:3", "h:1"]),
        ("backend=cloudpickle", ["g:1", "g:2", "g:3", "g:4", "h:1"]),
        ("backend!=cloudpickle", []),
        ("name=h", ["h:1"]),
        ("version>=3", ["g:3", "g:4"]),
        ("aliases=prod", ["g:2"]),
        ("alias!=prod", ["g:1", "g:3", "g:4", "h:1"]),
        (f"lineage.data={DATA}", ["h:1"]),
        (f"lineage.git.commit={COMMIT}", ["g:4"]),
        ("metrics.loss", ["g:1", "g:2", "g:3"]),  # a bare field: it is recorded
        ("lineage.git", ["g:4"]),
        ("tags.stage == 'prod'", ["g:1", "g:2"]),  # spaces, == and quotes are read too
    ],
)
def test_a_where_clause_finds_the_versions_it_describes(
    store: Store, where: str, expected: list[str]
) -> None:
    assert refs(store.find(where=[where])) == expected


def test_a_field_a_version_lacks_never_matches_not_even_with_not_equal(store: Store) -> None:
    assert refs(store.find(where="tags.stage!=prod")) == ["g:4"]  # g:3, h:1 have no stage
    assert refs(store.find(where="metrics.acc<0.9")) == ["g:1"]  # g:4 has no acc


def test_several_clauses_must_all_hold(store: Store) -> None:
    assert refs(store.find(where=["tags.stage=prod", "metrics.acc>0.9"])) == ["g:2"]


def test_created_at_takes_times_dates_and_now_minus_a_duration(store: Store) -> None:
    middle = store.middle  # type: ignore[attr-defined]

    assert refs(store.find(where=f"created_at>={middle}")) == ["g:3", "g:4", "h:1"]
    assert refs(store.find(where=f"created<{middle}")) == ["g:1", "g:2"]
    assert len(store.find(where="created_at>=now-1h")) == 5
    assert store.find(where="created_at>=now") == []
    assert len(store.find(where="created_at>=2020-01-01")) == 5
    assert len(store.find(where="created_at>=2020-01-01T00:00+02:00")) == 5
    assert len(store.find(where="created_at>=today")) in (0, 5)  # 0 only just past midnight


def test_a_name_limits_the_search_to_its_versions(store: Store) -> None:
    assert refs(store.find("g", where="metrics.acc>=0.9")) == ["g:2", "g:3"]
    with pytest.raises(VersionNotFoundError, match="no model named 'gg'"):
        store.find("gg")


# --- sort and limit -------------------------------------------------------------------------


def test_sort_descending_puts_missing_fields_last(store: Store) -> None:
    # ties (g:2, g:3 at 0.95) keep the listing order
    assert refs(store.find(sort="-metrics.acc")) == ["h:1", "g:2", "g:3", "g:1", "g:4"]
    assert refs(store.find(sort="metrics.acc")) == ["g:1", "g:2", "g:3", "h:1", "g:4"]


def test_later_sort_keys_break_ties(store: Store) -> None:
    expected = ["h:1", "g:3", "g:2", "g:1", "g:4"]

    assert refs(store.find(sort="-metrics.acc,-version")) == expected
    assert refs(store.find(sort=["-metrics.acc", "-version"])) == expected


def test_sorting_mixed_values_puts_numbers_before_text(store: Store) -> None:
    assert refs(store.find("g", sort="params.C")) == ["g:1", "g:2", "g:3", "g:4"]


def test_limit_keeps_the_first_versions_in_order(store: Store) -> None:
    assert refs(store.find(sort="-metrics.acc", limit=2)) == ["h:1", "g:2"]
    assert store.find(limit=0) == []


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("metrix.acc>1", "unknown field 'metrix.acc'; did you mean 'metrics'"),
        ("metrics.acc>high", "'high' is not one"),
        ("created_at>7d", ">=now-7d"),
        ("created_at>=yesterday", "'yesterday' is not a time"),
        ("metrics.acc>=", "no value"),
        ("aliases>prod", "takes only = and !="),
        ("=3", "cannot read"),
        ("metrics.", "unknown field"),
    ],
)
def test_a_bad_clause_is_named_and_the_valid_forms_are_shown(
    store: Store, where: str, says: str
) -> None:
    with pytest.raises(QueryError) as caught:
        store.find(where=where)
    text = str(caught.value)
    assert says in text
    assert repr(where) in text or repr(where.split(">")[0].split("=")[0]) in text
    assert caught.value.hint


@pytest.mark.parametrize("sort", ["-", "metrix.acc", "acc"])
def test_a_bad_sort_key_is_refused(store: Store, sort: str) -> None:
    with pytest.raises(QueryError, match="field"):
        store.find(sort=sort)


@pytest.mark.parametrize("limit", [-1, 1.5, True])
def test_a_limit_that_is_not_a_whole_number_is_refused(store: Store, limit: Any) -> None:
    with pytest.raises(QueryError, match="limit"):
        store.find(limit=limit)


def test_a_damaged_version_is_listed_but_matches_no_clause(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    for acc in (0.5, 0.7):
        store.save({"w": acc}, "m", backend="pickle", metrics={"acc": acc}, lineage=False)
    (tmp_path / "store" / "m" / "1" / "persistkit.json").write_text("{not json")

    assert [v.damaged is not None for v in store.find("m")] == [True, False]
    assert refs(store.find("m", where="metrics.acc>0")) == ["m:2"]
    assert refs(store.find("m", where="version>=1")) == ["m:1", "m:2"]
    assert refs(store.find("m", sort="-metrics.acc")) == ["m:2", "m:1"]


def test_a_number_too_large_for_a_float_still_sorts(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    for acc in (0.5, 0.7):
        store.save({"w": acc}, "m", backend="pickle", metrics={"acc": acc}, lineage=False)
    path = tmp_path / "store" / "m" / "1" / "persistkit.json"
    path.write_text(path.read_text().replace('"acc": 0.5', '"acc": 1' + "0" * 400))

    assert refs(store.find("m", sort="-metrics.acc")) == ["m:1", "m:2"]
    assert refs(store.find("m", where="metrics.acc>1e300")) == ["m:1"]


# --- refs: name@best:METRIC, name@min:METRIC ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("g@best:acc", Ref("g", metric="acc")),
        ("g@max:val_acc", Ref("g", metric="val_acc")),
        ("g@min:loss", Ref("g", metric="loss", lowest=True)),
        ("g@best", Ref("g", alias="best")),  # without ':' it is still an alias
    ],
)
def test_metric_refs_parse(text: str, ref: Ref) -> None:
    assert parse_ref(text) == ref


def test_a_metric_ref_prints_in_its_canonical_form() -> None:
    assert str(parse_ref("g@best:acc")) == "g@max:acc"
    assert str(parse_ref("g@min:loss")) == "g@min:loss"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("g@worst:acc", "neither an alias nor a metric selector"),
        ("g@best:", "empty"),
        ("g@best:val acc", "not a valid metric name"),
    ],
)
def test_a_bad_metric_ref_is_refused(text: str, says: str) -> None:
    with pytest.raises(RefError, match=says):
        parse_ref(text)


def test_best_picks_the_highest_and_the_newest_of_a_tie(store: Store) -> None:
    assert store.resolve("g@best:acc") == ("g", 3)
    assert store.resolve("g@max:loss") == ("g", 1)
    assert store.resolve("g@min:loss") == ("g", 2)


def test_a_metric_no_version_records_is_not_found_naming_those_recorded(store: Store) -> None:
    with pytest.raises(VersionNotFoundError, match=r"records the metric 'f1'.*acc, loss"):
        store.resolve("g@best:f1")
    with pytest.raises(VersionNotFoundError, match="no model named"):
        store.resolve("nope@best:acc")


def test_load_and_predict_take_a_metric_ref(store: Store) -> None:
    model = persistkit.load("g@best:acc", store=store)
    assert model([1.0])[0] == 3.0
    assert persistkit.predict("g@min:loss", [1.0], store=store)[0] == 2.0


def test_serve_loads_the_version_a_metric_ref_picks(store: Store) -> None:
    from persistkit.server.repository import ModelRepository

    repository = ModelRepository(["g@best:acc"], store=store.url)
    repository.load()

    assert [(m.name, m.version) for m in repository.models()] == [("g", 3)]


@pytest.mark.parametrize("kind", KINDS)
def test_queries_and_metric_refs_work_on_every_store_kind(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    url = store_url(kind, request, tmp_path)
    store = Store(url)
    fill(store, monkeypatch)

    found = store.find("g", where=["tags.stage=prod", "saved_by=bob"], sort="-metrics.acc")
    assert refs(found) == ["g:2"]
    assert found[0].manifest is not None and found[0].manifest.params == {"C": 1, "kernel": "rbf"}
    assert store.resolve("g@best:acc") == ("g", 3)
    assert Store(url).manifest("h@best:acc").lineage == {"data": DATA}


# --- the CLI ----------------------------------------------------------------------------------


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_ls_where_sort_limit_in_the_cli(store: Store) -> None:
    result = run(
        "ls", "g", "--store", store.url, "--where", "tags.stage=prod", "--sort", "-metrics.acc",
        "--limit", "5", "--json",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert [(r["name"], r["version"]) for r in records] == [("g", 2), ("g", 1)]
    assert records[0]["metrics"] == {"acc": 0.95, "loss": 0.3}
    assert records[0]["params"] == {"C": 1, "kernel": "rbf"}
    assert records[0]["saved_by"] == "bob"
    assert {"name", "version", "backend", "created_at", "aliases", "tags"} <= set(records[0])


def test_ls_repeats_where_as_and_and_shows_metric_columns(store: Store) -> None:
    result = run(
        "ls", "--store", store.url, "--where", "saved_by=alice", "--where", "metrics.acc>0.9",
        "--sort", "-metrics.loss",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    header, _, *rows = result.output.splitlines()
    assert header.split() == [
        "name", "version", "aliases", "backend", "created", "size", "loss", "acc", "tags",
    ]  # fmt: skip
    assert [row.split()[:2] for row in rows] == [["g", "3"], ["h", "1"]]  # h has no loss
    assert rows[0].split()[6:8] == ["0.4", "0.95"]
    assert rows[1].split()[6:8] == ["-", "0.99"]


def test_ls_says_when_nothing_matches(store: Store) -> None:
    result = run("ls", "--store", store.url, "--where", "saved_by=carol")

    assert result.exit_code == 0
    assert result.output.strip() == "no versions match"


@pytest.mark.parametrize(
    ("option", "value"), [("--where", "metrics.acc>high"), ("--sort", "-metrix.acc")]
)
def test_a_bad_clause_is_a_usage_error_naming_it(store: Store, option: str, value: str) -> None:
    result = run("ls", "--store", store.url, option, value)

    assert result.exit_code == 2
    assert option in result.output and repr(value) in result.output


def test_show_takes_a_metric_ref(store: Store) -> None:
    result = run("show", "g@best:acc", "--store", store.url)

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "name:       g:3"
    assert "metrics:    acc=0.95, loss=0.4" in result.output


# --- the documentation's examples run as written ---------------------------------------------


def _docs_section() -> str:
    text = (Path(__file__).parent.parent / "docs" / "store.md").read_text()
    start = text.index("## Metrics, lineage and queries")
    return text[start : text.index("\n## ", start + 1)]


def test_the_docs_python_example_runs_and_prints_what_it_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = re.search(r"```python\n(.*?)```", _docs_section(), re.S)
    assert code is not None
    exec(compile(code.group(1), "docs/store.md", "exec"), {})

    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "[(3, 0.9733333333333334), (2, 0.96)]",
        "('iris', 3)",
        "('iris', 1)",
        "3",
    ]
    commands = re.findall(r"^\$ persistkit (.*)$", _docs_section(), re.M)
    assert len(commands) == 3
    for command in commands:
        result = run(*shlex.split(command))
        assert result.exit_code == 0, (command, result.output)
    listed = run(*shlex.split(commands[0])).output.splitlines()
    assert [line.split()[:2] for line in listed[2:]] == [["iris", "3"]]


# --- properties: clauses and sorting agree with plain Python --------------------------------

_OPS = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}
_VALUES = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False), st.integers(-100, 100))


def _versions(values: list[Any]) -> list[VersionInfo]:
    return [
        VersionInfo("m", i, Manifest("pickle", [], metrics={} if v is None else {"x": v}), "d")
        for i, v in enumerate(values, start=1)
    ]


@given(values=st.lists(_VALUES, max_size=12), op=st.sampled_from(list(_OPS)), bound=_VALUES)
def test_a_metric_clause_keeps_exactly_the_versions_python_would(
    values: list[Any], op: str, bound: Any
) -> None:
    bound = 0.5 if bound is None else bound
    clause = parse_where(f"metrics.x{op}{bound!r}")

    kept = [v.version for v in _versions(values) if clause.matches(v)]

    expected = [i for i, v in enumerate(values, 1) if v is not None and _OPS[op](v, bound)]
    assert kept == expected


@given(values=st.lists(_VALUES, max_size=12), descending=st.booleans())
def test_sorting_orders_by_value_keeps_ties_in_order_and_puts_missing_last(
    values: list[Any], descending: bool
) -> None:
    keys = parse_sort(("-" if descending else "") + "metrics.x")

    ordered = [v.version for v in sort_versions(_versions(values), keys)]

    present = [(v, i) for i, v in enumerate(values, 1) if v is not None]
    present.sort(key=lambda pair: pair[0], reverse=descending)  # stable, like the query's
    assert ordered == [i for _, i in present] + [i for i, v in enumerate(values, 1) if v is None]
