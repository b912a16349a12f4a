"""Finding versions in a store by what they record: ``--where``, ``--sort``, ``--limit``.

A clause is ``FIELD OP VALUE``, or a bare ``FIELD`` (the version has it)::

    tags.stage=prod            metrics.accuracy>=0.9       params.kernel=rbf
    saved_by=alice             backend!=pickle             created_at>=2026-11-01
    created_at>=now-7d         lineage.data=sha256:9f2c... lineage.git.commit=4be1...
    aliases=prod               metrics.loss                version>3

``OP`` is one of ``= != > >= < <=``. Fields:

=====================================  ===================================================
``name``, ``backend``, ``class``,      text; ``>``/``<`` compare numbers when both sides
``family``, ``saved_by``, ``digest``,  are numbers, else text
``tags.KEY``
``version``, ``size`` (bytes),         numbers: the value must be a number
``metrics.KEY``
``created_at`` (or ``created``)        a time: ``2026-11-01`` (its midnight),
                                       ``2026-11-01T12:30`` (UTC unless it says
                                       ``Z``/``+02:00``), ``now``, ``today``, ``now-7d``
                                       (``s m h d w``)
``aliases`` (or ``alias``)             ``=``/``!=``: the version has (not) that alias
``params.KEY``, ``lineage.PATH``,      compared as what was recorded: a number, text
``metadata.PATH``                      or ``true``/``false`` (``PATH``: keys joined by
                                       dots, ``lineage.git.commit``); a ``None`` recorded
                                       counts as missing
=====================================  ===================================================

Several clauses must all hold. **A field a version lacks never matches**, whatever the
operator (``tags.stage!=prod`` skips versions with no ``stage`` tag), and sorts last in
either direction. ``--sort`` takes fields, ``-`` in front for descending, several
separated by commas or given again; ties keep the listing order (name, then version).

:func:`find` is written over :meth:`Store.list` and :meth:`Store.versions`, so it works on
every store kind; a store that can answer a query itself may do so behind the same signature.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from persistkit.collector import collection_paused
from persistkit.errors import QueryError, VersionNotFoundError

if TYPE_CHECKING:
    from persistkit.catalog import Summary
    from persistkit.manifest import Manifest
    from persistkit.store import Store, VersionInfo

Clauses = str | Iterable[str]

OPERATORS = ("!=", ">=", "<=", "==", "=", ">", "<")
_CLAUSE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(?:(!=|>=|<=|==|=|>|<)\s*(.*?))?\s*$")
_DURATION = re.compile(r"^now\s*-\s*(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MISSING: Any = object()
_NUMBER_TEXT = re.compile(r"^\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*$")


def _of_manifest(read: Callable[[Manifest], Any]) -> Callable[[VersionInfo], Any]:
    """A reader of a manifest field (a damaged version has no manifest: missing)."""
    return lambda v: _MISSING if v.manifest is None else read(v.manifest)


def _of_summary(read: Callable[[Summary], Any]) -> Callable[[VersionInfo], Any]:
    """A reader of a field a listing holds without parsing the manifest (a damaged version
    has none: missing)."""
    return lambda v: _MISSING if v.summary is None else read(v.summary)


# field -> (kind, reader of the version's value)
_TEXT, _NUMBER, _TIME, _LIST, _ANY = "text", "number", "time", "list", "any"
_PLAIN: dict[str, tuple[str, Callable[[VersionInfo], Any]]] = {
    "name": (_TEXT, lambda v: v.name),
    "version": (_NUMBER, lambda v: v.version),
    "aliases": (_LIST, lambda v: v.aliases),
    "digest": (_TEXT, lambda v: v.digest),
    "backend": (_TEXT, _of_summary(lambda s: s.backend)),
    "class": (_TEXT, _of_summary(lambda s: s.model_class)),
    "family": (_TEXT, _of_summary(lambda s: s.family)),
    "saved_by": (_TEXT, _of_summary(lambda s: s.saved_by)),
    "created_at": (_TIME, _of_summary(lambda s: s.created_at)),
    "size": (_NUMBER, _of_summary(lambda s: s.size)),
}
_SYNONYMS = {"created": "created_at", "alias": "aliases"}
# prefix -> (kind, the version's mapping; only metadata needs the whole manifest parsed)
_KEYED: dict[str, tuple[str, Callable[[VersionInfo], Any]]] = {
    "tags": (_TEXT, _of_summary(lambda s: s.tags)),
    "metrics": (_NUMBER, _of_summary(lambda s: s.metrics)),
    "params": (_ANY, _of_summary(lambda s: s.params)),
    "lineage": (_ANY, _of_summary(lambda s: s.lineage)),
    "metadata": (_ANY, _of_manifest(lambda m: m.metadata)),
}
FIELDS_HELP = (
    "fields: name, version, backend, class, family, saved_by, digest, size, created_at, "
    "aliases, tags.KEY, metrics.KEY, params.KEY, lineage.PATH, metadata.PATH"
)
WHERE_HELP = (
    "a clause is FIELD OP VALUE with OP one of = != > >= < <= (or a bare FIELD: it is "
    "recorded), e.g. tags.stage=prod, metrics.accuracy>=0.9, params.C=1.0, saved_by=alice, "
    "created_at>=2026-11-01, created_at>=now-7d; " + FIELDS_HELP
)
TIME_HELP = (
    "times are 2026-11-01, 2026-11-01T12:30 (UTC unless it has Z or +hh:mm), now, today, "
    "or now-7d (units s m h d w)"
)


@dataclass(frozen=True)
class Field:
    """A field a clause or sort key names: ``metrics.accuracy``, ``created_at``, ..."""

    text: str
    kind: str
    read: Callable[[VersionInfo], Any]

    def value(self, info: VersionInfo) -> Any:
        """The version's value of this field, or :data:`_MISSING` (a damaged version has
        only its name, version and aliases)."""
        value = self.read(info)
        if value is None or value is _MISSING:
            return _MISSING
        if self.kind == _TIME:
            return _recorded_time(value)
        if self.kind == _NUMBER and not _is_number(value):
            return _MISSING
        return value


def parse_field(text: str, *, clause: str | None = None) -> Field:
    """The :class:`Field` ``text`` names; :class:`QueryError` for an unknown one."""
    where = f"in {clause!r}: " if clause else ""
    name = _SYNONYMS.get(text, text)
    if name in _PLAIN:
        kind, read = _PLAIN[name]
        return Field(name, kind, read)
    prefix, dot, path = name.partition(".")
    if dot and path and prefix in _KEYED:
        kind, mapping = _KEYED[prefix]
        return Field(name, kind, lambda v: _dig_in(mapping(v), path))
    guess = _guess(prefix if dot else name)
    raise QueryError(
        f"{where}unknown field {text!r}" + (f"; did you mean {guess!r}?" if guess else ""),
        hint=FIELDS_HELP,
    )


@dataclass(frozen=True)
class Clause:
    """One parsed ``--where`` clause; :meth:`matches` tells whether a version satisfies it."""

    text: str
    field: Field
    op: str | None  # None: the field is recorded
    value: Any = None

    def matches(self, info: VersionInfo) -> bool:
        have = self.field.value(info)
        if have is _MISSING:
            return False
        if self.op is None:
            return True
        if self.field.kind == _LIST:
            return (self.value in have) == (self.op == "=")
        if self.field.kind == _ANY:
            have, want = _as_recorded(have, self.value)
            if want is _MISSING:  # text against a number, say: never equal
                return self.op == "!="
        else:
            want = self.value
        if self.field.kind == _TEXT or (self.field.kind == _ANY and isinstance(have, str)):
            have, want = _text_pair(str(have), want)
            if isinstance(want, float) and isinstance(have, str) and self.op not in ("=", "!="):
                return False  # text is neither above nor below a number
        return _compare(have, self.op, want)


def parse_where(text: str) -> Clause:
    """Parse one clause (see the module's documentation); :class:`QueryError` names the
    clause and shows the valid forms when it cannot be read."""
    if not isinstance(text, str):
        raise QueryError(f"a where clause must be text, not {type(text).__name__}", hint=WHERE_HELP)
    match = _CLAUSE.match(text)
    if not match:
        raise QueryError(f"cannot read the where clause {text!r}", hint=WHERE_HELP)
    name, op, raw = match.groups()
    field = parse_field(name, clause=text)
    if op is None:
        return Clause(text, field, None)
    op = "=" if op == "==" else op
    value = _unquote(raw)
    if value == "":
        raise QueryError(
            f"the where clause {text!r} has no value after {op!r}",
            hint=f"give one ({name}{op}VALUE), or the bare field {name!r} for versions "
            "that record it",
        )
    if field.kind == _NUMBER:
        number = _parse_number(value)
        if number is None:
            raise QueryError(
                f"in {text!r}: {field.text} is a number, and {value!r} is not one",
                hint=f"e.g. {field.text}{op}0.9",
            )
        return Clause(text, field, op, number)
    if field.kind == _TIME:
        return Clause(text, field, op, _parse_time(value, text))
    if field.kind == _LIST and op not in ("=", "!="):
        raise QueryError(
            f"in {text!r}: {field.text} takes only = and != (the version has that alias)",
            hint=f"e.g. {field.text}=prod",
        )
    return Clause(text, field, op, value)


@dataclass(frozen=True)
class SortKey:
    """One ``--sort`` key: a field, highest first when ``descending``."""

    field: Field
    descending: bool = False


def parse_sort(text: str) -> list[SortKey]:
    """``-metrics.accuracy`` or ``-metrics.accuracy,version`` as sort keys."""
    keys = []
    for part in str(text).split(","):
        item = part.strip()
        descending = item.startswith("-")
        name = item.lstrip("+-").strip()
        if not name:
            raise QueryError(
                f"the sort key {text!r} names no field",
                hint="e.g. --sort -metrics.accuracy (descending) or --sort created_at; "
                + FIELDS_HELP,
            )
        keys.append(SortKey(parse_field(name, clause=text), descending))
    return keys


def find(
    store: Store,
    name: str | None = None,
    *,
    where: Clauses = (),
    sort: Clauses = (),
    limit: int | None = None,
) -> list[VersionInfo]:
    """The versions of ``name`` (of every model when ``None``) in ``store`` that match every
    ``where`` clause, ordered by ``sort``, at most ``limit`` of them.

    Clauses are checked before the store is read: a bad one raises :class:`QueryError`. A
    ``name`` the store does not hold raises :class:`VersionNotFoundError`.
    """
    clauses = [parse_where(w) for w in _texts(where)]
    keys = [k for s in _texts(sort) for k in parse_sort(s)]
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise QueryError(f"limit must be a whole number >= 0, not {limit!r}")
    names = [name] if name is not None else store.list()
    infos = [info for n in names for info in store.versions(n)]
    if name is not None and not infos:
        store.resolve(name)  # raises "no model named ..." with a did-you-mean
    with collection_paused():  # many small acyclic values: no cyclic garbage to find
        matched = [info for info in infos if all(c.matches(info) for c in clauses)]
        ordered = sort_versions(matched, keys)
    return ordered if limit is None else ordered[:limit]


def sort_versions(infos: list[VersionInfo], keys: list[SortKey]) -> list[VersionInfo]:
    """``infos`` ordered by ``keys`` (the first decides, the next break ties); numbers come
    before text and versions missing a key's field after the others, in either direction."""
    ordered = list(infos)
    for key in reversed(keys):  # stable sorts, least significant key first
        values = [(info, key.field.value(info)) for info in ordered]
        present = [(info, value) for info, value in values if value is not _MISSING]
        numeric_text = key.field.kind == _TEXT  # tags.epochs: 9 before 10, as --where reads it
        ranked = [(info, _sort_value(value, numeric_text=numeric_text)) for info, value in present]
        ranked.sort(key=lambda pair: pair[1], reverse=key.descending)
        ranked.sort(key=lambda pair: pair[1][0])  # numbers, then text, in either direction
        present = ranked
        ordered = [info for info, _ in present]
        ordered += [info for info, value in values if value is _MISSING]
    return ordered


def best_version(store: Store, name: str, metric: str, *, lowest: bool = False) -> int:
    """The version of ``name`` with the highest value of ``metric`` (the lowest when
    ``lowest``); ties go to the newest. Raises :class:`VersionNotFoundError` when no
    version records it, naming the metrics they do record."""
    order = ("" if lowest else "-") + f"metrics.{metric}"
    found = find(store, name, where=[f"metrics.{metric}"], sort=[order, "-version"], limit=1)
    if found:
        return found[0].version
    recorded = sorted(
        {k for v in store.versions(name) if v.summary is not None for k in v.summary.metrics}
    )
    from persistkit.refs import did_you_mean

    guess = did_you_mean(metric, recorded)
    raise VersionNotFoundError(
        f"no version of {name} records the metric {metric!r}"
        + (f"; {guess}" if guess else "")
        + f" (metrics recorded: {', '.join(recorded) or 'none'})",
        hint="save with metrics={...} to record metrics (persistkit.save(..., "
        "metrics={'accuracy': 0.97}))",
    )


def record(info: VersionInfo) -> dict[str, Any]:
    """The ``ls --json`` record of a version: :meth:`VersionInfo.to_dict` plus what its
    training recorded (``metrics``, ``params``, ``lineage``, ``saved_by``); from the
    version's summary, so listing parses no manifest."""
    s = info.summary
    return {
        **info.to_dict(),
        "metrics": s.metrics if s else {},
        "params": s.params if s else {},
        "lineage": s.lineage if s else {},
        "saved_by": s.saved_by if s else None,
    }


# --- values ----------------------------------------------------------------------------------


def _texts(values: Clauses) -> list[str]:
    return [values] if isinstance(values, str) else list(values)


def _dig_in(mapping: Any, path: str) -> Any:
    """:func:`_dig`, or missing when the version has no such mapping (damaged)."""
    return _MISSING if mapping is _MISSING else _dig(mapping, path)


def _dig(mapping: dict[str, Any], path: str) -> Any:
    """``mapping[path]``, else down the dotted ``path`` (``git.commit``): a key may hold dots."""
    if path in mapping:
        return mapping[path]
    head, dot, rest = path.partition(".")
    while dot:
        inner = mapping.get(head)
        if isinstance(inner, dict):
            found = _dig(inner, rest)
            if found is not _MISSING:
                return found
        more, dot, rest = rest.partition(".")
        head = f"{head}.{more}"
    return _MISSING


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_number(text: str) -> float | None:
    """A decimal number written plainly (``3``, ``-0.5``, ``1e-3``); None for anything else,
    including what only Python reads as one (``1_000``, non-ASCII digits) and inf/nan."""
    if not _NUMBER_TEXT.match(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def _as_recorded(have: Any, want: str) -> tuple[Any, Any]:
    """A clause value read as the type of what was recorded (params, lineage, metadata)."""
    if isinstance(have, bool):
        lowered = want.lower()
        return have, (lowered == "true") if lowered in ("true", "false") else _MISSING
    if _is_number(have):
        number = _parse_number(want)
        return have, _MISSING if number is None else number
    if isinstance(have, str):
        return have, want
    return have, _MISSING  # a list or mapping: only a bare field (it is recorded) matches


def _text_pair(have: str, want: str) -> tuple[Any, Any]:
    """Text compared as numbers when both sides are numbers (``tags.epochs>=10``); a
    number against other text is returned as a float, which no text orders against."""
    a, b = _parse_number(have), _parse_number(want)
    if b is None:
        return have, want
    return (a, b) if a is not None else (have, b)


def _compare(have: Any, op: str, want: Any) -> bool:
    try:
        if op == "=":
            return bool(have == want)
        if op == "!=":
            return bool(have != want)
        if op == ">":
            return bool(have > want)
        if op == ">=":
            return bool(have >= want)
        if op == "<":
            return bool(have < want)
        return bool(have <= want)
    except TypeError:  # text against a number: not comparable, so no match
        return False


def _sort_value(value: Any, *, numeric_text: bool = False) -> tuple[int, Any]:
    """Numbers before text before anything else, so mixed values still sort; with
    ``numeric_text`` (text fields: tags), text that is a number sorts as that number."""
    if numeric_text and isinstance(value, str) and (number := _parse_number(value)) is not None:
        return (0, number)
    if _is_number(value) or isinstance(value, bool):
        return (0, value)  # not float(): a huge int from a manifest would overflow
    if isinstance(value, datetime):
        return (0, value.timestamp())
    if isinstance(value, str):
        return (1, value)
    if isinstance(value, list):
        return (1, ",".join(map(str, value)))
    return (2, str(value))


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _parse_time(text: str, clause: str) -> datetime:
    lowered = text.lower()
    now = datetime.now(timezone.utc)
    if lowered == "now":
        return now
    if lowered == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    match = _DURATION.match(lowered)
    if match:
        try:
            return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
        except OverflowError:  # further back than datetime reaches (the year 1)
            raise QueryError(
                f"in {clause!r}: {text!r} reaches back before the year 1",
                hint="give a shorter span, or leave the clause out to match every time",
            ) from None
    parsed = _recorded_time(text)
    if parsed is _MISSING:
        relative = re.match(r"^(\d+(?:\.\d+)?)\s*([smhdw])$", lowered)
        hint = TIME_HELP + (
            f" (the last {relative.group(1)}{relative.group(2)} is >=now-{lowered})"
            if relative
            else ""
        )
        raise QueryError(f"in {clause!r}: {text!r} is not a time", hint=hint)
    return parsed


def _recorded_time(text: Any) -> Any:
    """An ISO 8601 date or time as an aware UTC datetime (naive ones are UTC)."""
    if not isinstance(text, str):
        return _MISSING
    text = text.strip()
    if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not read a "Z"
        text = text[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return _MISSING
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _guess(word: str) -> str | None:
    from persistkit.refs import close_names

    close = close_names(word, [*_PLAIN, *_SYNONYMS, *_KEYED])
    return close[0] if close else None
