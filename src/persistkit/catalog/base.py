"""The catalog: the bookkeeping of a store (names, versions and their claims, manifests, aliases,
tags, tombstones), apart from the payload files it points at.

Two kinds implement :class:`Catalog`: :class:`~persistkit.catalog.files.FileCatalog` keeps it
in files beside the payloads (a folder, ``memory://``, ``s3://``) and
:class:`~persistkit.catalog.sql.SqlCatalog` in a database (SQLite, PostgreSQL), the payloads
in a :class:`~persistkit.catalog.space.FileSpace`. :class:`persistkit.Store` validates names,
resolves refs and words the errors; a catalog only answers and records.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from persistkit.catalog.space import FileSpace
from persistkit.errors import ManifestError
from persistkit.manifest import Manifest
from persistkit.records import Artifact


def manifest_digest(manifest: Manifest) -> str:
    """``sha256:<hex>`` of the manifest's sealed bytes: the identity of a saved version."""
    return "sha256:" + hashlib.sha256(manifest.sealed_bytes()).hexdigest()


class Damaged(Exception):
    """A version's manifest that cannot be read or parsed (raised as ManifestError)."""

    def __init__(self, name: str, version: int, reason: str, location: str) -> None:
        super().__init__(reason)
        self.name, self.version, self.reason, self.location = name, version, reason, location

    def error(self) -> ManifestError:
        ref = f"{self.name}:{self.version}"
        return ManifestError(
            f"{ref} is damaged: {self.reason} (at {self.location})",
            hint=f"restore that file from a backup, or remove the version: persistkit rm {ref}",
        )


@dataclass(frozen=True)
class Summary:
    """What a listing shows of a version (``ls``, ``ls --json``, ``--where`` on these fields),
    read from its manifest (tags merged in) but without the rest of it: a database catalog
    keeps it in a column, so a listing never parses a whole manifest."""

    backend: str
    created_at: str
    size: int
    model_class: str | None = None
    family: str | None = None
    saved_by: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, manifest: Manifest) -> Summary:
        """The summary of a parsed manifest."""
        return cls(
            manifest.backend,
            manifest.created_at,
            manifest.total_size,
            manifest.model_class,
            manifest.family,
            manifest.saved_by,
            manifest.tags,
            manifest.metrics,
            manifest.params,
            manifest.lineage,
        )

    def to_json(self) -> str:
        """Compact JSON, as a database catalog's ``summary`` column holds it."""
        return json.dumps(
            [
                self.backend,
                self.created_at,
                self.size,
                self.model_class,
                self.family,
                self.saved_by,
                self.tags,
                self.metrics,
                self.params,
                self.lineage,
            ],
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Summary:
        """The summary :meth:`to_json` wrote; ``ValueError`` when it is not one."""
        fields = json.loads(text)
        if not isinstance(fields, list) or len(fields) != 10:
            raise ValueError("not a version summary")
        backend, created_at, size, model_class, family, saved_by, tags, metrics, params, lineage = (
            fields
        )
        valid = (  # spelled out: this runs once per listed version
            type(backend) is str
            and type(created_at) is str
            and type(size) is int
            and (model_class is None or type(model_class) is str)
            and (family is None or type(family) is str)
            and (saved_by is None or type(saved_by) is str)
            and type(tags) is dict
            and type(metrics) is dict
            and type(params) is dict
            and type(lineage) is dict
        )
        if not valid:
            raise ValueError("not a version summary")
        return cls(
            backend, created_at, size, model_class, family, saved_by, tags, metrics, params, lineage
        )

    def with_tags(self, added: dict[str, str]) -> Summary:
        """This summary with the tags added after the save merged over its own."""
        if not added:
            return self
        return replace(self, tags={**self.tags, **added})


@dataclass(frozen=True)
class Listed:
    """A version a catalog lists from its summary; ``manifest()`` parses the whole manifest
    (tags merged in) when a caller asks for more than the summary holds."""

    summary: Summary
    manifest: Callable[[], Manifest]


@dataclass(frozen=True)
class Orphan:
    """What a killed writer left, found by ``gc``: a ``payload`` no version points at
    (``rel``: its path in the store's file space) or a local ``staging`` folder (``rel``:
    its absolute path)."""

    location: str
    rel: str
    age_s: float
    kind: str = "payload"


class Catalog(ABC):
    """What a store records about its versions. Names given are already validated.

    ``space`` is where the payload files live; ``kind`` names the implementation for
    messages and figures (``folder``, ``memory``, ``s3``, ``sqlite``, ``postgresql``).
    """

    kind: str
    space: FileSpace
    stale_after: float = 3600.0  # seconds after which unreferenced leftovers are garbage

    @abstractmethod
    def exists(self) -> bool:
        """Whether the store exists (however empty); it is made by the first save."""

    @abstractmethod
    def names(self) -> builtins.list[str]:
        """Names with at least one published version, sorted."""

    @abstractmethod
    def every_name(self) -> builtins.list[str]:
        """Names that ever had a number, those whose every version was deleted too, sorted."""

    @abstractmethod
    def numbers(self, name: str) -> builtins.list[int]:
        """The published (visible, not deleted) versions of ``name``, ascending."""

    @abstractmethod
    def tombstones(self, name: str) -> builtins.list[int]:
        """The numbers of deleted versions of ``name`` (never reused), ascending."""

    @abstractmethod
    def records(
        self, name: str, numbers: builtins.list[int], *, merge_tags: bool = True
    ) -> builtins.list[Manifest | Damaged]:
        """The manifest of each version (tags added later merged in with ``merge_tags``),
        or why it cannot be read. A version that is not published raises
        :class:`~persistkit.errors.VersionNotFoundError`."""

    def listing(
        self, name: str
    ) -> builtins.list[tuple[int, Manifest | Listed | Damaged, str | None]]:
        """Every published version of ``name``, ascending, with its manifest (tags merged;
        or a :class:`Listed` summary that parses it on demand) and digest (None for a
        damaged one): what ``ls NAME`` shows."""
        numbers = self.numbers(name)
        return [
            (v, m, None if isinstance(m, Damaged) else manifest_digest(m))
            for v, m in zip(numbers, self.records(name, numbers))
        ]

    def digests(self, name: str, numbers: builtins.list[int]) -> dict[int, str]:
        """The digest of each of these versions (a damaged one has none: left out)."""
        return {
            v: manifest_digest(m)
            for v, m in zip(numbers, self.records(name, numbers, merge_tags=False))
            if isinstance(m, Manifest)
        }

    @abstractmethod
    def location(self, name: str, version: int) -> str:
        """Where a version is, for messages and ``ls --json``."""

    @abstractmethod
    def aliases(self, name: str) -> dict[str, int]:
        """Every alias of ``name`` and the version it points at, sorted by alias."""

    @abstractmethod
    def alias_version(self, name: str, alias: str) -> object:
        """The version recorded for ``name@alias`` (None when there is no such alias)."""

    @abstractmethod
    def set_alias(self, name: str, alias: str, version: int, *, durable: bool = False) -> None:
        """Point ``name@alias`` at ``version`` in one atomic step."""

    @abstractmethod
    def remove_alias(self, name: str, alias: str) -> None:
        """Forget ``name@alias``."""

    @abstractmethod
    def added_tags(self, name: str, version: int) -> dict[str, str]:
        """The tags set on a version after it was saved (the manifest's own excluded)."""

    @abstractmethod
    def set_added_tags(
        self, name: str, version: int, tags: dict[str, str], *, durable: bool = False
    ) -> None:
        """Replace the tags set on a version after it was saved."""

    @abstractmethod
    def publish(
        self,
        staging: Path,
        name: str,
        manifest: Manifest,
        *,
        durable: bool = False,
        version: int | None = None,
    ) -> Artifact:
        """Store the staged artifact's payload, then claim a version number and make it
        visible (last). ``version=None`` claims the next free number; a given number is
        claimed exactly or refused with a :class:`~persistkit.errors.StoreError`. The
        staged folder is consumed."""

    @abstractmethod
    def fetch(self, name: str, version: int) -> tuple[Path, Manifest]:
        """A local folder holding the version's payload files, and its manifest (tags not
        merged); remote payloads are downloaded into the cache."""

    @abstractmethod
    def delete(self, name: str, version: int) -> None:
        """Leave a tombstone for the version (hidden at once) and remove its payload when
        no other version shares it. Aliases on it are the caller's to remove first."""

    @abstractmethod
    def tombstone(self, name: str, version: int) -> None:
        """Record a deleted number that was never published here (moving a store)."""

    @abstractmethod
    def orphans(self, older_than: float) -> builtins.list[Orphan]:
        """Payloads no version points at, unchanged for ``older_than`` seconds."""

    @abstractmethod
    def close(self) -> None:
        """Release connections, if any."""
