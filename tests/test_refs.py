"""Refs and names: what parses, what is refused, and that no name leaves the store's root."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistkit.errors import PersistkitError, RefError
from persistkit.refs import (
    MAX_NAME_LENGTH,
    Ref,
    looks_like_location,
    normalise_name,
    parse_ref,
    validate_name,
)
from persistkit.store import Store
from store_helpers import use_slow_bytes

NAME_RULE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
names = st.from_regex(NAME_RULE, fullmatch=True).filter(lambda n: ".." not in n)


@given(names)
def test_every_name_following_the_rule_is_accepted(name: str) -> None:
    assert validate_name(name) == name


@given(st.text(max_size=200))
def test_any_text_breaking_the_rule_is_a_ref_error(text: str) -> None:
    if NAME_RULE.fullmatch(text) and ".." not in text:
        assert validate_name(text) == text
    else:
        with pytest.raises(RefError):
            validate_name(text)


@pytest.mark.parametrize(
    "bad",
    ["", "..", "a/b", "a\\b", "a\x00b", "x" * 1000, "Upper", ".hidden", "a..b", "-x", "model\n"],
)
def test_path_tricks_and_oversized_names_are_refused(bad: str) -> None:
    with pytest.raises(RefError):
        validate_name(bad)


@pytest.mark.parametrize(
    "ref", ["m@sha256:abcdef\n", "m@sha256:abcde", "m@sha256:ABCDEF", "m@best:acc\n", "m@prod\n"]
)
def test_a_selector_breaking_its_rule_is_refused(ref: str) -> None:
    with pytest.raises(RefError):
        parse_ref(ref)


def test_the_longest_name_is_128_characters() -> None:
    validate_name("a" * MAX_NAME_LENGTH)
    with pytest.raises(RefError, match="129 characters"):
        validate_name("a" * (MAX_NAME_LENGTH + 1))


@given(
    names,
    st.one_of(
        st.none(),
        st.integers(min_value=1, max_value=10**9).map(lambda v: ("version", v)),
        names.filter(lambda a: a != "latest").map(lambda a: ("alias", a)),
        st.from_regex(r"[0-9a-f]{6,64}", fullmatch=True).map(lambda h: ("digest", "sha256:" + h)),
    ),
)
def test_every_ref_round_trips_through_its_text(name: str, selector: object) -> None:
    ref = Ref(name) if selector is None else Ref(name, **{selector[0]: selector[1]})  # type: ignore[index]
    assert parse_ref(str(ref)) == ref


def test_the_ref_forms() -> None:
    assert parse_ref("digits") == Ref("digits")
    assert parse_ref("digits:latest") == Ref("digits")
    assert parse_ref("digits:3") == Ref("digits", version=3)
    assert parse_ref("digits@prod") == Ref("digits", alias="prod")
    assert parse_ref("digits@sha256:abcdef") == Ref("digits", digest="sha256:abcdef")


@pytest.mark.parametrize(
    "bad", ["m:0", "m:-1", "m:one", "m:", "m@", "m@sha256:xyz", "m@sha256:abc", "m:٣", "@prod"]
)
def test_malformed_refs_are_ref_errors(bad: str) -> None:
    with pytest.raises(RefError):
        parse_ref(bad)


@given(st.text(max_size=60))
def test_normalised_names_are_always_valid(text: str) -> None:
    validate_name(normalise_name(text))


@pytest.mark.parametrize(
    ("text", "is_location"),
    [
        ("digits", False),
        ("digits:3", False),
        ("digits@prod", False),
        ("./digits", True),
        ("/tmp/x", True),
        ("~/m", True),
        ("a/b", True),
        ("s3://bucket/m/1", True),
    ],
)
def test_locations_are_told_from_refs(text: str, is_location: bool) -> None:
    assert looks_like_location(text) is is_location


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.text(max_size=40),
        names,
        st.sampled_from(["..", "../x", "a/../../b", "/abs", "~", ".", "x\x00y", "a\\..\\b"]),
    )
)
def test_nothing_is_ever_written_outside_the_store_root(tmp_path: Path, text: str) -> None:
    use_slow_bytes(chunks=1)
    root = tmp_path / "root"
    outside_before = {p for p in tmp_path.rglob("*") if root not in p.parents and p != root}
    with contextlib.suppress(PersistkitError):
        Store(root).save(b"x", text, backend="slowbytes")
    outside_after = {p for p in tmp_path.rglob("*") if root not in p.parents and p != root}
    assert outside_after == outside_before
