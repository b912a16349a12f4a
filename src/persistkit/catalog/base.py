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
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

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

    def listing(self, name: str) -> builtins.list[tuple[int, Manifest | Damaged, str | None]]:
        """Every published version of ``name``, ascending, with its manifest (tags merged)
        and digest (None for a damaged one): what ``ls NAME`` shows."""
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
