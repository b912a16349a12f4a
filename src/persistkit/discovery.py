"""What the installed distributions declare, remembered between processes until something is
installed or removed: persistkit's entry points and the versions a load asks for.

Reading them through ``importlib.metadata`` walks every ``*.dist-info`` folder on ``sys.path``
(~5 ms with ~140 distributions, plus ~10 ms to import ``importlib.metadata`` itself) in every
process that loads a model. The answers only change when a distribution is installed,
upgraded or removed, and every installer does that by creating or deleting a ``*.dist-info``
(or ``*.egg-info``) folder. So the answers are kept in
``$PERSISTKIT_HOME/discovery/<environment>.json`` together with the name, inode and
modification time of every such folder on ``sys.path``, and reused only while all of those
are unchanged (a reinstall of the same version makes a new folder: a new inode and time).
A ``sys.path`` entry whose own modification time has not changed is not listed again (one
``stat``). Anything less than :data:`SETTLE_SECONDS` old is not trusted to be final (a
coarse clock could give a later change the same time): nothing is remembered, and no
shortcut taken, until it settles.

Not seen: a ``dist-info`` folder edited in place by hand (installers never do that). Set
``PERSISTKIT_DISCOVERY_CACHE=0`` to always ask ``importlib.metadata``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from persistkit.config import home

_METADATA_SUFFIXES = (".dist-info", ".egg-info")
#: a ``sys.path`` folder changed more recently than this is not yet trusted as a cache key
SETTLE_SECONDS = 2.0
_FORMAT = 2


def _enabled() -> bool:
    return os.environ.get("PERSISTKIT_DISCOVERY_CACHE", "1").strip() not in ("0", "false", "no")


def _distributions_in(folder: str, settled_before: int) -> tuple[Any, bool]:
    """The metadata folders of the distributions in ``folder`` (name, inode, modification
    time; for a zip file on ``sys.path``, its modification time), and whether they are all
    settled."""
    try:
        names = sorted(os.listdir(folder))
    except NotADirectoryError:
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            return None, True
        return mtime, mtime <= settled_before
    except OSError:
        return None, True
    found: list[list[Any]] = []
    settled = True
    for name in names:
        if not name.endswith(_METADATA_SUFFIXES):
            continue
        try:
            st = os.stat(os.path.join(folder, name))
        except OSError:
            continue
        found.append([name, st.st_ino, st.st_mtime_ns])
        settled = settled and st.st_mtime_ns <= settled_before
    return found, settled


def _path_key(old_key: Any, old_mtimes: Any) -> tuple[list[Any], list[int | None], bool]:
    """For each ``sys.path`` entry, its distributions (see :func:`_distributions_in`); the
    entries' own modification times; and whether all of it is settled.

    An entry whose modification time is settled and the same as when ``old_key`` was taken
    cannot have gained, lost or replaced a distribution folder, so its part of ``old_key`` is
    reused without listing it. Other entries are listed again, and only their distribution
    folders count: a script's own folder, where models get saved, does not make the record
    stale."""
    settled_before = time.time_ns() - int(SETTLE_SECONDS * 1e9)
    settled = True
    key: list[Any] = []
    mtimes: list[int | None] = []
    for i, entry in enumerate(sys.path):
        folder = os.path.abspath(entry or ".")
        try:
            mtime: int | None = os.stat(folder).st_mtime_ns
        except OSError:
            mtime = None
        if mtime is not None and mtime > settled_before:
            mtime = None  # not settled: never a shortcut for a later process
        if (
            mtime is not None
            and isinstance(old_mtimes, list)
            and isinstance(old_key, list)
            and i < min(len(old_mtimes), len(old_key))
            and old_mtimes[i] == mtime
            and isinstance(old_key[i], list)
            and old_key[i][:1] == [folder]
        ):
            key.append(old_key[i])
        else:
            found, ok = _distributions_in(folder, settled_before)
            settled = settled and ok
            key.append([folder, found])
        mtimes.append(mtime)
    return key, mtimes, settled


_record_files: dict[tuple[str, tuple[str, ...], Path], Path] = {}
#: the last record read or written in this process: (file, its stat signature, its data)
_last_read: tuple[Path, tuple[int, int, int], dict[str, Any]] | None = None


def _record_file() -> Path:
    """One record per interpreter and ``sys.path`` (several virtual environments can share
    one ``PERSISTKIT_HOME``); worked out once per process for each ``sys.path``."""
    where_key = (sys.executable, tuple(sys.path), home())
    found = _record_files.get(where_key)
    if found is None:
        import hashlib

        where = json.dumps([sys.executable, [os.path.abspath(p or ".") for p in sys.path]])
        digest = hashlib.sha256(where.encode()).hexdigest()[:24]
        found = _record_files[where_key] = where_key[2] / "discovery" / f"{digest}.json"
    return found


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _read_stored(path: Path) -> Any:
    """The record in ``path`` (``{}`` when absent or unreadable); parsed again only when the
    file changed since this process last read or wrote it (a load asks several times)."""
    global _last_read
    try:
        with open(path, "rb") as fh:
            signature = _signature(os.fstat(fh.fileno()))
            if _last_read is not None and _last_read[:2] == (path, signature):
                return _last_read[2]
            stored = json.loads(fh.read())
    except (OSError, ValueError):
        return {}
    if isinstance(stored, dict):
        _last_read = (path, signature, stored)
    return stored


class _Record:
    """The remembered answers for the current ``sys.path`` state (empty when stale)."""

    def __init__(self) -> None:
        self.path = _record_file()
        self.data: dict[str, Any] = {}
        stored: Any = _read_stored(self.path) if _enabled() else {}
        if not isinstance(stored, dict) or stored.get("format") != _FORMAT:
            stored = {}
        self.key, self.mtimes, self.settled = _path_key(stored.get("key"), stored.get("mtimes"))
        if stored and stored.get("key") == self.key:
            # callers add entries one level down: copies, never the dicts shared in the cache
            self.data = {k: dict(v) if isinstance(v, dict) else v for k, v in stored.items()}

    def save(self) -> None:
        """Write the record atomically, if the key is settled (else the next process asks
        ``importlib.metadata`` again and may remember then)."""
        if not (_enabled() and self.settled):
            return
        import uuid

        self.data.update(format=_FORMAT, key=self.key, mtimes=self.mtimes)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps(self.data), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only home only costs the next process the scan


def entry_points(group: str) -> list[tuple[str, str]]:
    """``(name, value)`` of every entry point in ``group``, in the order
    ``importlib.metadata`` gives them (first distribution on ``sys.path`` wins)."""
    return entry_points_of([group])[group]


def entry_points_of(groups: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """:func:`entry_points` of each of ``groups``, checked against one record."""
    record = _Record()
    remembered = record.data.get("entry_points")
    if not isinstance(remembered, dict):
        remembered = record.data["entry_points"] = {}
    result: dict[str, list[tuple[str, str]]] = {}
    asked = False
    for group in groups:
        found = remembered.get(group)
        if isinstance(found, list) and all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)
            for pair in found
        ):
            result[group] = [(name, value) for name, value in found]
            continue
        import importlib.metadata  # ~10 ms to import: only when nothing is remembered

        pairs = [(ep.name, ep.value) for ep in importlib.metadata.entry_points(group=group)]
        remembered[group] = [list(pair) for pair in pairs]
        result[group] = pairs
        asked = True
    if asked:
        record.save()
    return result


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None`` when it is not installed.

    Versions found are remembered under the same key as the entry points; a distribution not
    found is always asked again (so a ``pip install`` is seen even in a settled folder)."""
    return installed_versions([distribution])[distribution]


def installed_versions(distributions: Iterable[str]) -> dict[str, str | None]:
    """:func:`installed_version` of each of ``distributions``, checked against one record."""
    record = _Record()
    versions = record.data.get("versions")
    if not isinstance(versions, dict):
        versions = {}
    result: dict[str, str | None] = {}
    learned = False
    for distribution in distributions:
        known = versions.get(distribution)
        if isinstance(known, str):
            result[distribution] = known
            continue
        import importlib.metadata

        try:
            found = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            result[distribution] = None
            continue
        result[distribution] = found
        if found:
            versions[distribution] = found
            learned = True
    if learned:
        record.data["versions"] = versions
        record.save()
    return result


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
