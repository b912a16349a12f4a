"""What the installed distributions declare, remembered between processes until something is
installed or removed: persistkit's entry points and the versions a load asks for.

Reading them through ``importlib.metadata`` walks every ``*.dist-info`` folder on ``sys.path``
(~5 ms with ~140 distributions, plus ~10 ms to import ``importlib.metadata`` itself) in every
process that loads a model. The answers only change when a distribution is installed,
upgraded or removed, and every installer does that by creating or deleting a ``*.dist-info``
folder in a ``sys.path`` folder, which changes that folder's modification time. So the
answers are kept in ``$PERSISTKIT_HOME/discovery/<environment>.json`` together with the
modification time (ns) of every ``sys.path`` entry, and reused only while all of those are
unchanged. Entries whose time is less than :data:`SETTLE_SECONDS` old are not trusted to be
final (a coarse clock could give a later change the same time), so nothing is remembered
until they settle.

Not seen: a ``dist-info`` folder edited in place by hand (installers never do that). Set
``PERSISTKIT_DISCOVERY_CACHE=0`` to always ask ``importlib.metadata``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from persistkit.config import home

ENTRY_POINT_GROUP = "persistkit"
#: a ``sys.path`` folder changed more recently than this is not yet trusted as a cache key
SETTLE_SECONDS = 2.0
_FORMAT = 1


def _enabled() -> bool:
    return os.environ.get("PERSISTKIT_DISCOVERY_CACHE", "1").strip() not in ("0", "false", "no")


def _path_key() -> tuple[list[list[Any]], bool]:
    """Each ``sys.path`` entry with its modification time (``None`` when absent), and whether
    all of them are settled (old enough to be a reliable key)."""
    settled_before = time.time_ns() - int(SETTLE_SECONDS * 1e9)
    settled = True
    key: list[list[Any]] = []
    for entry in sys.path:
        try:
            mtime = os.stat(entry or ".").st_mtime_ns
        except OSError:
            mtime = None
        if mtime is not None and mtime > settled_before:
            settled = False
        key.append([os.path.abspath(entry or "."), mtime])
    return key, settled


def _record_file() -> Path:
    """One record per interpreter and ``sys.path`` (several virtual environments can share
    one ``PERSISTKIT_HOME``)."""
    where = json.dumps([sys.executable, [os.path.abspath(p or ".") for p in sys.path]])
    return home() / "discovery" / f"{hashlib.sha256(where.encode()).hexdigest()[:24]}.json"


class _Record:
    """The remembered answers for the current ``sys.path`` state (empty when stale)."""

    def __init__(self) -> None:
        self.key, self.settled = _path_key()
        self.path = _record_file()
        self.data: dict[str, Any] = {}
        if not _enabled():
            return
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return
        if isinstance(data, dict) and data.get("format") == _FORMAT and data.get("key") == self.key:
            self.data = data

    def save(self) -> None:
        """Write the record atomically, if the key is settled (else the next process asks
        ``importlib.metadata`` again and may remember then)."""
        if not (_enabled() and self.settled):
            return
        self.data.update(format=_FORMAT, key=self.key)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps(self.data), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only home only costs the next process the scan


def entry_points() -> list[tuple[str, str]]:
    """``(name, value)`` of every entry point in persistkit's group, in the order
    ``importlib.metadata`` gives them (first distribution on ``sys.path`` wins)."""
    record = _Record()
    found = record.data.get("entry_points")
    if isinstance(found, list) and all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)
        for pair in found
    ):
        return [(name, value) for name, value in found]
    import importlib.metadata  # ~10 ms to import: only when nothing is remembered

    pairs = [(ep.name, ep.value) for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    record.data["entry_points"] = [list(pair) for pair in pairs]
    record.save()
    return pairs


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None`` when it is not installed.

    Versions found are remembered under the same key as the entry points; a distribution not
    found is always asked again (so a ``pip install`` is seen even in a settled folder)."""
    record = _Record()
    versions = record.data.get("versions")
    if not isinstance(versions, dict):
        versions = {}
    known = versions.get(distribution)
    if isinstance(known, str):
        return known
    import importlib.metadata

    try:
        found = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    if found:
        versions[distribution] = found
        record.data["versions"] = versions
        record.save()
    return found


def load_entry_point(value: str) -> Any:
    """Import what an entry point's ``value`` names (``module`` or ``module:attr.attr``,
    extras in brackets ignored), as ``importlib.metadata.EntryPoint.load`` does."""
    import importlib

    target = value.split("[", 1)[0].strip()
    module_name, _, attrs = target.partition(":")
    obj: Any = importlib.import_module(module_name.strip())
    for attr in filter(None, attrs.strip().split(".")):
        obj = getattr(obj, attr)
    return obj
