"""Model names and refs: ``name``, ``name:3``, ``name:latest``, ``name@alias``,
``name@sha256:<hex>``, ``name@best:METRIC`` (also ``name@max:METRIC``) and
``name@min:METRIC``; and the rule that tells a ref from a path or URL.

Names (and aliases): 1–128 characters of lowercase letters, digits, ``.``, ``-`` and ``_``,
starting with a letter or digit. So a name can never be ``..``, hold a separator or a NUL, and
never leaves the store's root. Keys of metrics and parameters (:func:`validate_key`) may also
hold capitals and start with ``_``; an alias never holds ``:``, so ``name@best:accuracy``
(the version with the highest ``accuracy`` metric; ties go to the newest) can never be an
alias.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from persistkit.errors import RefError
from persistkit.values import Value

MAX_NAME_LENGTH = 128
# the characters of each rule, checked as sets (a ``^...$`` pattern would also let a trailing
# newline through: ``$`` matches before one)
_LOWER_DIGITS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_NAME_REST = _LOWER_DIGITS | frozenset("._-")
_KEY_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_KEY_REST = _KEY_FIRST | frozenset("0123456789.-")
_HEX = frozenset("0123456789abcdef")
NAME_RULE = (
    "names are 1-128 characters: lowercase letters, digits, '.', '-' and '_', "
    "starting with a letter or digit"
)
KEY_RULE = (
    "keys are 1-128 characters: letters, digits, '.', '-' and '_', starting with a letter or '_'"
)
#: ``name@<selector>:METRIC`` -> whether the lowest value wins
METRIC_SELECTORS = {"best": False, "max": False, "min": True}


def validate_name(name: str, *, what: str = "model name") -> str:
    """Return ``name`` if it follows the naming rule, else raise :class:`RefError`."""
    if not isinstance(name, str) or not name:
        raise RefError(f"the {what} is empty", hint=NAME_RULE)
    if len(name) > MAX_NAME_LENGTH:
        raise RefError(f"the {what} is {len(name)} characters long", hint=NAME_RULE)
    if name[0] not in _LOWER_DIGITS or not _NAME_REST.issuperset(name) or ".." in name:
        raise RefError(f"{name[:80]!r} is not a valid {what}", hint=NAME_RULE)
    return name


def validate_key(key: str, *, what: str = "metric name") -> str:
    """Return ``key`` if it follows the rule for metric and parameter keys
    (:data:`KEY_RULE`), else raise :class:`RefError`."""
    if not isinstance(key, str) or not key:
        raise RefError(f"the {what} is empty", hint=KEY_RULE)
    if len(key) > MAX_NAME_LENGTH or key[0] not in _KEY_FIRST or not _KEY_REST.issuperset(key):
        raise RefError(f"{key[:80]!r} is not a valid {what}", hint=KEY_RULE)
    return key


def normalise_name(text: str) -> str:
    """Turn a class name or free text into a valid name (``RandomForest`` -> ``randomforest``)."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip(".-_")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)[:MAX_NAME_LENGTH].strip(".-_")
    return cleaned or "model"


class Ref(Value):
    """A parsed ref. At most one of ``version``, ``alias``, ``digest``, ``metric`` is set;
    none means the latest. ``metric`` picks the version with the highest value of that
    metric (the lowest when ``lowest``)."""

    _fields = ("name", "version", "alias", "digest", "metric", "lowest")
    __slots__ = _fields
    name: str
    version: int | None
    alias: str | None
    digest: str | None
    metric: str | None
    lowest: bool

    def __init__(
        self,
        name: str,
        version: int | None = None,
        alias: str | None = None,
        digest: str | None = None,
        metric: str | None = None,
        lowest: bool = False,
    ) -> None:
        self._set(name, version, alias, digest, metric, lowest)

    def __str__(self) -> str:
        if self.metric is not None:
            return f"{self.name}@{'min' if self.lowest else 'max'}:{self.metric}"
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        if self.digest is not None:
            return f"{self.name}@{self.digest}"
        return self.name


def parse_ref(text: str) -> Ref:
    """Parse a ref, validating the name and the version/alias/digest part."""
    if not isinstance(text, str) or not text:
        raise RefError(
            "the ref is empty",
            hint="use name, name:3, name:latest, name@alias or name@best:METRIC",
        )
    if "@" in text:
        name, _, selector = text.partition("@")
        validate_name(name)
        if selector.startswith("sha256:"):
            digits = selector.removeprefix("sha256:")
            if not (6 <= len(digits) <= 64 and _HEX.issuperset(digits)):
                raise RefError(
                    f"{selector[:80]!r} is not a sha256 digest",
                    hint="use name@sha256:<hex>, with at least 6 lowercase hex digits",
                )
            return Ref(name, digest=selector)
        kind, colon, metric = selector.partition(":")
        if colon:
            if kind not in METRIC_SELECTORS:
                raise RefError(
                    f"{selector[:80]!r} is neither an alias nor a metric selector",
                    hint="use name@alias, name@best:METRIC (highest; also name@max:METRIC) "
                    "or name@min:METRIC (lowest)",
                )
            lowest = METRIC_SELECTORS[kind]
            return Ref(name, metric=validate_key(metric), lowest=lowest)
        return Ref(name, alias=validate_name(selector, what="alias"))
    if ":" in text:
        name, _, selector = text.partition(":")
        validate_name(name)
        if selector == "latest":
            return Ref(name)
        if selector.isdigit() and selector.isascii() and int(selector) > 0:
            return Ref(name, version=int(selector))
        raise RefError(
            f"{selector[:80]!r} is not a version",
            hint="versions are positive whole numbers (name:3) or 'latest'",
        )
    return Ref(validate_name(text))


def looks_like_location(text: str) -> bool:
    """The DESIGN rule: a URL scheme, a leading ``/ . ~``, or a path separator means a path."""
    if "://" in text:
        return True
    if text.startswith(("/", ".", "~")):
        return True
    return os.sep in text or "/" in text or (os.altsep is not None and os.altsep in text)


def close_names(word: str, choices: Iterable[str], *, n: int = 3) -> list[str]:
    """The names among ``choices`` that ``word`` is probably a misspelling of, best first
    (for "did you mean ...?")."""
    import difflib  # only when a name was not found: it costs ~8 ms to import

    return difflib.get_close_matches(word, sorted(set(choices)), n=n, cutoff=0.6)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """``did you mean 'prod'?`` (or ``'a' or 'b'``), or None when nothing is close."""
    close = close_names(word, choices)
    if not close:
        return None
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"


def typo_of(word: str, existing: Iterable[str]) -> str | None:
    """The existing name that a *new* name ``word`` most likely mistypes, or None.

    Stricter than :func:`close_names`, since creating a name is refused on it: the two must
    be very close (``prdo`` for ``prod``), and names differing only in their digits
    (``v1``/``v2``, ``canary``/``canary2``) are deliberate, never typos.
    """
    import difflib

    others = [e for e in set(existing) if e != word]
    for candidate in difflib.get_close_matches(word, sorted(others), n=5, cutoff=0.75):
        if _without_digits(candidate) != _without_digits(word):
            return candidate
    return None


def _without_digits(text: str) -> str:
    return re.sub(r"[0-9]+", "", text)
