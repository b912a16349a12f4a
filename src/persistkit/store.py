"""A store: named, versioned artifacts with aliases and tags.

Its bookkeeping goes through a :class:`~persistkit.catalog.Catalog`, of one of two kinds:

* files beside the payloads (:mod:`persistkit.catalog.files`): a local folder, ``memory://...``
  or ``s3://bucket/prefix``; the layout and how versions are claimed are described there;
* a database (:mod:`persistkit.catalog.sql`): ``sqlite:///path/catalog.db`` (payloads in
  ``path/catalog.blobs/`` unless ``blobs=`` says otherwise) or ``postgresql://...`` with
  ``blobs=`` (or ``$PERSISTKIT_BLOBS``) naming a folder or ``s3://`` prefix for the payloads.

Either way a version is visible only when complete (its payload is stored first, the claim of
its number is last), two writers never share a number, and a deleted number is never reused.

The digest of a version (``name@sha256:<hex>``) is the sha256 of its manifest's sealed bytes
(:meth:`Manifest.sealed_bytes`: every field but name, version, tags and seal), so it is the
same in every store a version is copied to, and tags never change it.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persistkit import config
from persistkit.catalog import Catalog, Orphan, open_catalog
from persistkit.catalog.base import Damaged, Listed, Summary, manifest_digest
from persistkit.catalog.files import FileCatalog, Listing, merge_tags_over
from persistkit.catalog.space import FileSpace
from persistkit.collector import collection_paused
from persistkit.errors import (
    ArtifactNotFoundError,
    Command,
    ListModels,
    ManifestError,
    Option,
    RefError,
    StoreError,
    VersionNotFoundError,
)
from persistkit.manifest import MANIFEST_NAME, Manifest
from persistkit.records import Artifact
from persistkit.refs import MAX_NAME_LENGTH, Ref, did_you_mean, parse_ref, typo_of, validate_name

__all__ = [
    "CopiedVersion",
    "Store",
    "VersionInfo",
    "fetch_url",
    "manifest_at_url",
    "manifest_digest",
]

STALE_SECONDS = 3600
_MAX_TAG_VALUE = 1024


class VersionInfo:
    """One published version: its manifest (tags merged in), digest and the aliases on it.

    ``location`` is the version's folder (local path or URL), or its row in a database
    catalog. A version whose manifest cannot be read or parsed is still listed: ``damaged``
    holds the reason, ``manifest``, ``summary`` and ``digest`` are ``None``, and ``location``
    is that damaged file. Loading it raises :class:`ManifestError`; :meth:`Store.delete`
    removes it.

    ``summary`` holds what a listing shows (backend, created_at, size, class, tags, metrics,
    params, lineage, saved_by). A database catalog lists versions from their summaries and
    parses a ``manifest`` only when a caller first reads it (``manifest`` may be given as a
    function returning it); read ``summary`` when it is enough.
    """

    __slots__ = (
        "_manifest",
        "_summary",
        "aliases",
        "damaged",
        "digest",
        "location",
        "name",
        "version",
    )

    def __init__(
        self,
        name: str,
        version: int,
        manifest: Manifest | Callable[[], Manifest] | None,
        digest: str | None,
        aliases: builtins.list[str] | None = None,
        damaged: str | None = None,
        location: str = "",
        *,
        summary: Summary | None = None,
    ) -> None:
        self.name: str = name
        self.version: int = version
        self.digest: str | None = digest
        self.aliases: builtins.list[str] = [] if aliases is None else aliases
        self.damaged: str | None = damaged
        self.location: str = location
        self._manifest = manifest
        if summary is None and isinstance(manifest, Manifest):
            summary = Summary.of(manifest)
        self._summary = summary

    @property
    def manifest(self) -> Manifest | None:
        """The whole manifest, tags merged (parsed now if it was listed from a summary)."""
        if self._manifest is None or isinstance(self._manifest, Manifest):
            return self._manifest
        self._manifest = self._manifest()
        return self._manifest

    @property
    def summary(self) -> Summary | None:
        """What a listing shows of this version, without parsing its whole manifest."""
        return self._summary

    @property
    def tags(self) -> dict[str, str]:
        return self._summary.tags if self._summary is not None else {}

    def to_dict(self) -> dict[str, Any]:
        """The ``ls --json`` record of this version (``damaged``: null, or the reason)."""
        s = self._summary
        return {
            "name": self.name,
            "version": self.version,
            "backend": s.backend if s else None,
            "created_at": s.created_at if s else None,
            "aliases": self.aliases,
            "tags": self.tags,
            "digest": self.digest,
            "size_bytes": s.size if s else None,
            "class": s.model_class if s else None,
            "damaged": self.damaged,
            "location": self.location,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VersionInfo):
            return NotImplemented
        return self._key() == other._key()

    def _key(self) -> tuple[Any, ...]:
        return (
            self.name,
            self.version,
            self.digest,
            self.aliases,
            self.damaged,
            self.location,
            self.manifest,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: aliases is a list

    def __repr__(self) -> str:
        state = f"damaged={self.damaged!r}" if self.damaged else f"digest={self.digest!r}"
        return f"VersionInfo({self.name!r}, {self.version}, {state}, aliases={self.aliases!r})"


@dataclass(frozen=True)
class CopiedVersion:
    """One version copied by :meth:`Store.copy_versions`: where it came from, the new version
    in the destination, the aliases set on it there, and the source's aliases left behind."""

    source_version: int
    artifact: Artifact
    aliases: builtins.list[str] = field(default_factory=list)
    aliases_not_copied: builtins.list[str] = field(default_factory=list)


class Store:
    """Named, versioned models: a folder, ``memory://``, ``s3://``, or a database catalog
    (``sqlite:///...``, ``postgresql://...``) whose payloads live in ``blobs``.

    ``url=None`` means ``$PERSISTKIT_STORE``, else the per-user store folder. ``blobs=None``
    means a ``?blobs=`` in the URL, else ``$PERSISTKIT_BLOBS`` (PostgreSQL), else (SQLite)
    a folder beside the database file. For S3
    the endpoint and credentials come from the usual ``AWS_*`` environment variables
    (including ``AWS_ENDPOINT_URL``) or from ``storage_options`` (passed to s3fs).
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        blobs: str | os.PathLike[str] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        raw = config.default_store_url() if url is None else os.fspath(url)
        # the per-user store nobody named: missing until the first save, which is no mistake
        self.is_default = url is None and not os.environ.get("PERSISTKIT_STORE")
        self._catalog: Catalog = open_catalog(
            raw, blobs=None if blobs is None else os.fspath(blobs), storage_options=storage_options
        )
        self._space: FileSpace = self._catalog.space
        self._catalog.stale_after = STALE_SECONDS
        self.url: str = getattr(self._catalog, "url", None) or self._space.url
        # what opens this store, payloads and all, in another process (``url`` is for
        # people: a password hidden, a ``blobs=`` argument left out)
        self._reopen_url: str = getattr(self._catalog, "reopen_url", None) or self._space.url

    @property
    def kind(self) -> str:
        """``folder``, ``memory``, ``s3``, ``sqlite`` or ``postgresql``."""
        return self._catalog.kind

    @property
    def catalog(self) -> Catalog:
        """The bookkeeping behind this store (see :mod:`persistkit.catalog`)."""
        return self._catalog

    @property
    def stale_after(self) -> float:
        """Seconds after which a staging folder or unreferenced payload counts as left by a
        dead writer (cleaned up by saves and ``gc``)."""
        return self._catalog.stale_after

    @stale_after.setter
    def stale_after(self, seconds: float) -> None:
        self._catalog.stale_after = seconds

    @property
    def is_local(self) -> bool:
        """Whether the payloads are in a local folder (loaded in place, no cache)."""
        return self._space.is_local

    @property
    def _shown_url(self) -> str | None:
        """The URL hints name (``--store URL``), or None for the per-user default store."""
        return None if self.is_default else self.url

    def exists(self) -> bool:
        """Whether there is a store at this location, however empty: a local folder that
        exists, a ``memory://`` root something was saved under, an S3 bucket that exists
        (a prefix in it needs no creating), a database with the catalog's tables. A store
        is made by the first save into it."""
        with self._storage_errors():
            return self._catalog.exists()

    def missing(self) -> StoreError:
        """The error for reading from a store that does not exist (see :meth:`exists`)."""
        if isinstance(self._catalog, FileCatalog):
            return self._space.missing()
        return StoreError(
            f"no store at {self.url} (the database has no persistkit catalog yet)",
            hint="check the URL; a store is made by the first save into it",
            remedies=[Option("store", purpose="to name another store")],
        )

    def close(self) -> None:
        """Release the database connections of a database-backed store (no-op otherwise)."""
        self._catalog.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- saving ----------------------------------------------------------------------------
    def save(self, model: Any, name: str | None = None, **save_options: Any) -> Artifact:
        """Save ``model`` as a new version of ``name`` (a name, never a path).

        Takes the same options as :func:`persistkit.save`; returns the new version's
        :class:`Artifact`, whose ``path`` is a local folder.
        """
        from persistkit.api import save

        if name is not None:
            validate_name(name)
        return save(model, name, store=self, **save_options)

    def stage(self, name: str) -> Path:
        """A new, empty local folder for a backend to write a version of ``name`` into."""
        validate_name(name)
        parent = self._space.staging_parent()
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / f"{name}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return path

    def publish(
        self,
        staging: Path,
        name: str,
        manifest: Manifest,
        *,
        durable: bool = False,
        version: int | None = None,
    ) -> Artifact:
        """Give the staged artifact the next free version of ``name`` (or exactly
        ``version``, refused if taken) and make it visible.

        The staged folder is consumed. ``durable=True`` also fsyncs every file and folder
        (local stores; object stores acknowledge a write only once it is durable).
        """
        validate_name(name)
        _check_tags(manifest.tags)
        self._clean_staging(staging.parent)
        with self._storage_errors():
            return self._catalog.publish(staging, name, manifest, durable=durable, version=version)

    # -- reading ---------------------------------------------------------------------------
    def load(self, ref: str, **load_options: Any) -> Any:
        """Load the version ``ref`` points at (``name``, ``name:3``, ``name@prod``, ...).

        Takes the same options as :func:`persistkit.load`. Remote versions are downloaded
        into the local cache once.
        """
        from persistkit.api import load

        parse_ref(ref)
        return load(ref, store=self, **load_options)

    def list(self) -> builtins.list[str]:
        """Names with at least one published version, sorted."""
        with self._storage_errors():
            return self._catalog.names()

    def versions(self, name: str) -> builtins.list[VersionInfo]:
        """Every published version of ``name``, oldest first, with tags and aliases.

        A version whose manifest is damaged is listed too, with ``damaged`` set to the reason
        (one damaged version never hides the others).
        """
        validate_name(name)
        # thousands of small acyclic records: a cyclic collection midway finds no garbage
        with self._storage_errors(), collection_paused():
            listing = self._catalog.listing(name)
            by_version: dict[int, builtins.list[str]] = {}
            for alias, version in self.aliases(name).items():
                by_version.setdefault(version, []).append(alias)
            infos = []
            for v, m, digest in listing:
                aliases = sorted(by_version.get(v, []))
                if isinstance(m, Damaged):
                    infos.append(VersionInfo(name, v, None, None, aliases, m.reason, m.location))
                    continue
                where = self._catalog.location(name, v)
                if isinstance(m, Listed):  # the manifest is parsed only if asked for
                    info = VersionInfo(
                        name, v, m.manifest, digest, aliases, None, where, summary=m.summary
                    )
                else:
                    info = VersionInfo(name, v, m, digest, aliases, None, where)
                infos.append(info)
            return infos

    def find(
        self,
        name: str | None = None,
        *,
        where: str | builtins.list[str] | tuple[str, ...] = (),
        sort: str | builtins.list[str] | tuple[str, ...] = (),
        limit: int | None = None,
    ) -> builtins.list[VersionInfo]:
        """The versions of ``name`` (of every model when ``None``) matching every ``where``
        clause (``"tags.stage=prod"``, ``"metrics.accuracy>=0.9"``), ordered by ``sort``
        (``"-metrics.accuracy"``), at most ``limit``: see :mod:`persistkit.query`."""
        from persistkit.query import find

        return find(self, name, where=where, sort=sort, limit=limit)

    def resolve(self, ref: str | Ref) -> tuple[str, int]:
        """The ``(name, version)`` that ``ref`` points at now."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        with self._storage_errors():
            numbers = self._catalog.numbers(parsed.name)
            if not numbers:
                raise self._no_model(parsed.name)
            if parsed.version is not None:
                if parsed.version not in numbers:
                    raise VersionNotFoundError(
                        f"{parsed.name} has no version {parsed.version} "
                        f"(it has {_ranges(numbers)})",
                        remedies=[ListModels(self._shown_url, parsed.name)],
                    )
                return parsed.name, parsed.version
            if parsed.alias is not None:
                return parsed.name, self._alias_target(parsed.name, parsed.alias, numbers)
            if parsed.digest is not None:
                return parsed.name, self._digest_target(parsed.name, parsed.digest, numbers)
            if parsed.metric is not None:  # name@best:accuracy, name@min:loss
                from persistkit.query import best_version

                best = best_version(self, parsed.name, parsed.metric, lowest=parsed.lowest)
                return parsed.name, best
            return parsed.name, numbers[-1]

    def has(self, name: str) -> bool:
        """Whether ``name`` has at least one published version here."""
        if not _is_name(name):
            return False
        with self._storage_errors():
            return bool(self._catalog.numbers(name))

    def _no_model(self, name: str) -> VersionNotFoundError:
        """The error for a name without versions: no store at all, or which names are near."""
        if not self.is_default and not self.exists():
            missing = self.missing()
            return VersionNotFoundError(
                f"no model named {name!r}: {missing.message}",
                hint=missing.advice,
                remedies=missing.remedies,
            )
        guess = did_you_mean(name, self.list())
        return VersionNotFoundError(
            f"no model named {name!r} in the store {self.url}",
            hint=guess,
            remedies=[
                ListModels(self._shown_url),
                Option("store", purpose="to pick another store"),
            ],
        )

    def manifest(self, ref: str | Ref) -> Manifest:
        """The manifest of the version ``ref`` points at, tags merged in; no payload read."""
        name, version = self.resolve(ref)
        with self._storage_errors():
            return self._manifests(name, [version])[0]

    def fetch(self, ref: str | Ref) -> tuple[Path, Manifest, str, int]:
        """A local folder holding the version ``ref`` points at, its manifest, name, version.

        Local stores answer with the version's own folder; remote versions are downloaded
        into the content-addressed cache (or served from it when intact).
        """
        name, version = self.resolve(ref)
        with self._storage_errors():
            path, manifest = self._catalog.fetch(name, version)
            added = self._catalog.added_tags(name, version)
            return path, merge_tags_over(manifest, added), name, version

    def digest(self, ref: str | Ref) -> str:
        """``sha256:<hex>`` identifying the version ``ref`` points at (see module docs)."""
        return manifest_digest(self.manifest(ref))

    # -- aliases and tags ------------------------------------------------------------------
    def aliases(self, name: str) -> dict[str, int]:
        """Every alias of ``name`` and the version it points at."""
        validate_name(name)
        with self._storage_errors():
            return self._catalog.aliases(name)

    def alias(self, ref: str | Ref, alias: str, *, durable: bool = False, new: bool = False) -> int:
        """Point ``name@alias`` at the version ``ref`` resolves to (atomic move).

        Returns that version number. A new alias that looks like a typo of an existing one
        (``prdo`` beside ``prod``) is refused unless ``new=True``.
        """
        validate_name(alias, what="alias")
        if alias == "latest":
            raise RefError("'latest' always means the newest version", hint="pick another alias")
        name, version = self.resolve(ref)
        existing = self.aliases(name)
        meant = None if new or alias in existing else typo_of(alias, existing)
        if meant is not None:
            raise RefError(
                f"{name}@{alias} would be a new alias, and {alias!r} looks like a typo of "
                f"{name}@{meant} (-> {name}:{existing[meant]}): did you mean {meant!r}? "
                "Nothing was changed",
                hint=f"to move {meant!r}, give that name",
                remedies=[Option("new", purpose=f"to create {alias!r} as a new alias")],
            )
        with self._storage_errors():
            self._catalog.set_alias(name, alias, version, durable=durable)
        return version

    def remove_alias(self, name: str, alias: str) -> None:
        """Delete ``name@alias`` (the version it pointed at stays)."""
        validate_name(name)
        validate_name(alias, what="alias")
        if alias not in self.aliases(name):
            raise VersionNotFoundError(f"{name} has no alias {alias!r}")
        with self._storage_errors():
            self._catalog.remove_alias(name, alias)

    def tags(self, ref: str | Ref) -> dict[str, str]:
        """The tags of the version ``ref`` points at (saved ones and those added later)."""
        return self.manifest(ref).tags

    def tag(
        self, ref: str | Ref, key: str, value: str | None, *, durable: bool = False
    ) -> dict[str, str]:
        """Set tag ``key`` to ``value`` on a version (``None`` removes it); returns all its tags.

        Tags live beside the sealed manifest, which is never rewritten. Two processes tagging
        the same version at the same moment: the last write wins.
        """
        _check_tag(key, value)
        name, version = self.resolve(ref)
        with self._storage_errors():
            added = self._catalog.added_tags(name, version)
            base = self._manifests(name, [version], merge_tags=False)[0].tags
            if value is None:
                if key in base:
                    raise StoreError(
                        f"tag {key!r} of {name}:{version} was set at save time, in the "
                        "manifest, which is never rewritten",
                        hint="set it to another value instead",
                    )
                if key not in added:
                    raise StoreError(f"{name}:{version} has no tag {key!r}")
                del added[key]
            else:
                added[key] = value
            self._catalog.set_added_tags(name, version, added, durable=durable)
            return {**base, **added}

    # -- deleting and copying --------------------------------------------------------------
    def delete(self, ref: str | Ref, *, force: bool = False) -> int:
        """Delete the version ``ref`` points at; returns its number (never reused).

        Refuses while an alias points at it, unless ``force=True`` (which removes those
        aliases too). The version disappears at once (its manifest goes first). A version
        whose manifest is damaged is deleted the same way; on object stores its payload,
        whose digest is unknown, is left to the cleanup of unreferenced payloads (next save
        after ``stale_after``).
        """
        name, version = self.resolve(ref)
        pointing = [a for a, v in self.aliases(name).items() if v == version]
        if pointing and not force:
            raise StoreError(
                f"{name}:{version} is aliased as {', '.join(pointing)}",
                remedies=[
                    self._set_alias(name, pointing[0], "moves the alias first"),
                    Option("force", purpose="to delete it and its aliases"),
                ],
            )
        with self._storage_errors():
            for alias in pointing:
                self._catalog.remove_alias(name, alias)
            self._catalog.delete(name, version)
        return version

    def copy(
        self,
        ref: str,
        dest: Store | str,
        *,
        durable: bool = False,
        aliases: bool = False,
        force: bool = False,
    ) -> builtins.list[Artifact]:
        """Copy one version (``name:3``, ``name@prod``) or every version (bare ``name``) of a
        model into the store ``dest``, where each becomes a new version (numbered by ``dest``).

        Content, tags and digests are kept. Aliases are copied only with ``aliases=True``:
        see :meth:`copy_versions`, which also reports what was copied.
        """
        copied = self.copy_versions(ref, dest, durable=durable, aliases=aliases, force=force)
        return [c.artifact for c in copied]

    def copy_versions(
        self,
        ref: str,
        dest: Store | str,
        *,
        durable: bool = False,
        aliases: bool = False,
        force: bool = False,
    ) -> builtins.list[CopiedVersion]:
        """:meth:`copy`, reporting for each version its source number and its aliases.

        With ``aliases=True`` every alias of the source that points at a copied version is
        set in ``dest`` on that version's copy: for ``name:3`` (or ``name@prod``) the aliases
        on version 3, for a bare ``name`` every alias of the name. An alias that already
        exists in ``dest`` is refused (nothing is copied) unless ``force=True``, which moves
        it. Without ``aliases=True`` the source's aliases are listed in
        ``aliases_not_copied``. Every version to copy is read first: a damaged one stops the
        copy before anything is written.
        """
        target = dest if isinstance(dest, Store) else Store(dest)
        parsed = parse_ref(ref)
        everything = ":" not in ref and "@" not in ref
        if everything:
            numbers = self._catalog.numbers(parsed.name)
            if not numbers:
                self.resolve(parsed)  # raises the usual "no model named" error
        else:
            numbers = [self.resolve(parsed)[1]]
        name = parsed.name
        with self._storage_errors():
            damaged = [
                m
                for m in self._catalog.records(name, numbers, merge_tags=False)
                if isinstance(m, Damaged)
            ]
        if damaged:
            bad = ", ".join(f"{d.name}:{d.version}" for d in damaged)
            healthy = [f"{name}:{v}" for v in numbers if v not in {d.version for d in damaged}]
            raise ManifestError(
                f"cannot copy {ref}: {damaged[0].error().message}"
                + (f"; also damaged: {bad}" if len(damaged) > 1 else ""),
                hint=(f"copy the others one by one ({', '.join(healthy)}) or " if healthy else "")
                + f"remove the damaged version first (persistkit rm {damaged[0].name}:"
                f"{damaged[0].version})",
            )
        on_version: dict[int, builtins.list[str]] = {}
        for alias, version in self.aliases(name).items():
            if version in numbers:
                on_version.setdefault(version, []).append(alias)
        if aliases and not force:
            wanted = sorted(a for names in on_version.values() for a in names)
            existing = target.aliases(name) if wanted else {}
            clash = [a for a in wanted if a in existing]
            if clash:
                raise StoreError(
                    f"{target.url} already has the alias "
                    + ", ".join(f"{name}@{a} (-> {name}:{existing[a]})" for a in clash)
                    + "; nothing was copied",
                    hint="--force (force=True) moves it to the copy; or copy without "
                    "--aliases and move aliases yourself (persistkit alias)",
                )
        copies = []
        for version in numbers:
            folder, manifest, _, _ = self.fetch(Ref(name, version=version))
            staging = target.stage(name)
            try:
                for entry in manifest.files:
                    (staging / entry.path).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(folder / entry.path, staging / entry.path)
                artifact = target.publish(staging, name, manifest, durable=durable)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            copies.append((version, artifact))
        report = []
        for version, artifact in copies:
            names = sorted(on_version.get(version, []))
            if aliases and artifact.version is not None:
                for alias in names:  # set as in the source: no typo check, no resolving again
                    target._catalog.set_alias(name, alias, artifact.version, durable=durable)
            report.append(
                CopiedVersion(version, artifact, names if aliases else [], [] if aliases else names)
            )
        return report

    # -- cleaning up -----------------------------------------------------------------------
    def gc(self, *, grace: float | None = None, dry_run: bool = False) -> builtins.list[Orphan]:
        """Remove what killed writers left: payloads no version points at and staging
        folders, unchanged for ``grace`` seconds (default: ``stale_after``). Returns what
        was (or, with ``dry_run=True``, would be) removed."""
        older_than = self.stale_after if grace is None else grace
        if not 0 <= older_than < float("inf"):  # negative: saves in flight would count as old
            raise StoreError(
                f"the grace period must be 0 seconds or more, not {older_than!r}",
                hint="give the age in seconds below which leftovers may be saves in flight "
                "(default: an hour)",
            )
        with self._storage_errors():
            found = self._catalog.orphans(older_than)
            found += _stale_staging(self._space.staging_parent(), older_than)
            if not dry_run:
                for orphan in found:
                    if orphan.kind == "staging":
                        shutil.rmtree(orphan.rel, ignore_errors=True)
                    else:
                        self._space.remove(orphan.rel)
        return found

    # -- internals: names, versions, manifests ---------------------------------------------
    def _manifests(
        self, name: str, numbers: builtins.list[int], *, merge_tags: bool = True
    ) -> builtins.list[Manifest]:
        """The manifests of these versions; a damaged one raises :class:`ManifestError`
        naming it."""
        manifests = []
        for m in self._catalog.records(name, numbers, merge_tags=merge_tags):
            if isinstance(m, Damaged):
                raise m.error()
            manifests.append(m)
        return manifests

    def _alias_target(self, name: str, alias: str, numbers: builtins.list[int]) -> int:
        version = self._catalog.alias_version(name, alias)
        if version is None:
            existing = self.aliases(name)
            known = ", ".join(existing) or "none"
            guess = did_you_mean(alias, existing)
            raise VersionNotFoundError(
                f"{name} has no alias {alias!r}"
                + (f"; {guess}" if guess else "")
                + f" (aliases: {known})",
                remedies=[self._set_alias(name, alias, "to set it")],
            )
        if not isinstance(version, int) or version not in numbers:
            raise VersionNotFoundError(
                f"{name}@{alias} points at version {version}, which no longer exists",
                remedies=[self._set_alias(name, alias, "moves it")],
            )
        return version

    def _set_alias(self, name: str, alias: str, purpose: str) -> Command:
        store = "" if self.is_default else f" --store {self.url}"
        opened = "" if self.is_default else repr(self.url)
        return Command(
            python=f"persistkit.Store({opened}).alias({name + ':N'!r}, {alias!r})",
            cli=f"persistkit alias {name}:N {alias}{store}",
            purpose=purpose,
        )

    def _digest_target(self, name: str, digest: str, numbers: builtins.list[int]) -> int:
        known = self._catalog.digests(name, numbers)  # a damaged version's is unknown
        matches = [v for v in numbers if known.get(v, "").startswith(digest)]
        if not matches:
            raise VersionNotFoundError(
                f"no version of {name} has the digest {digest}",
                hint=f"`persistkit ls {name} --json` prints each version's digest",
            )
        if len(matches) > 1:
            raise RefError(
                f"{digest} matches versions {', '.join(map(str, matches))} of {name}",
                hint="give more hex digits of the digest",
            )
        return matches[0]

    def _clean_staging(self, parent: Path) -> None:
        """Remove staging folders left by dead writers on this host, or older than
        ``stale_after`` seconds (a writer on another host, or a reused pid); never this
        process's own."""
        for orphan in _stale_staging(parent, self.stale_after):
            shutil.rmtree(orphan.rel, ignore_errors=True)

    @contextlib.contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """Turn the storage library's errors into one :class:`StoreError` with a hint."""
        with self._space.errors(self.url):
            yield

    # -- the files of a folder store, for tests that damage one on purpose -------------------
    @property
    def _fs(self) -> Any:
        return self._space.fs

    def _path(self, rel: str) -> str:
        return self._space.path(rel)

    def _read(self, rel: str) -> bytes | None:
        return self._space.read(rel)

    def _replace(self, rel: str, data: bytes) -> None:
        self._space.replace(rel, data)

    def _scan(self, name: str) -> Listing:
        if not isinstance(self._catalog, FileCatalog):
            raise StoreError(f"{self.url} keeps its versions in a database, not in files")
        return self._catalog.scan(name)


# --- helpers -----------------------------------------------------------------------------


def _stale_staging(parent: Path, older_than: float) -> builtins.list[Orphan]:
    """Staging folders under ``parent`` left by dead writers on this host, or older than
    ``older_than`` seconds (a writer on another host, or a reused pid); never this
    process's own (``rel`` is the folder's absolute path)."""
    if not parent.is_dir():
        return []
    now = time.time()
    found = []
    for child in parent.iterdir():
        parts = child.name.rsplit(".", 3)
        if len(parts) != 4 or not parts[2].isdigit():
            continue
        _, host, pid, _ = parts
        try:
            age = now - child.stat().st_mtime
        except OSError:
            continue
        if host == _host() and int(pid) == os.getpid():
            continue  # this process's own saves (other threads) are in flight
        dead = host == _host() and not _pid_alive(int(pid))
        if dead or age > older_than:
            found.append(Orphan(str(child), str(child), age, kind="staging"))
    return found


def _is_name(text: str) -> bool:
    try:
        validate_name(text)
    except RefError:
        return False
    return True


def _check_tag(key: str, value: str | None) -> None:
    """A tag :meth:`Store.tag` sets (``value=None``: removing it): a key by the rule of names,
    text every kind of store holds."""
    _check_storable_tag(key, "" if value is None else value)
    validate_name(key.lower(), what="tag key")
    if value is not None and len(value) > _MAX_TAG_VALUE:
        raise RefError(
            f"the value of tag {key!r} must be text of at most {_MAX_TAG_VALUE} characters",
            hint="store long or structured data in metadata= at save time",
        )


def _check_storable_tag(key: Any, value: Any) -> None:
    """A tag every kind of store holds and reads back as it was given: text (a folder store
    would publish a manifest it cannot read back), no NUL or lone surrogate (SQLite and
    PostgreSQL refuse them), a key of at most 128 characters (a database column)."""
    if not isinstance(key, str) or not key or len(key) > MAX_NAME_LENGTH:
        shown = repr(key) if len(repr(key)) <= 40 else f"{repr(key)[:40]}..."
        raise RefError(
            f"a tag key must be text of 1 to {MAX_NAME_LENGTH} characters, not {shown}",
            hint="tag keys are names such as stage or reviewed_by",
        )
    if not isinstance(value, str):
        raise RefError(
            f"the value of tag {key!r} must be text, not {type(value).__name__} {value!r}",
            hint="write a number as text (tags={'epochs': '10'}), or record it in params= "
            "or metadata= at save time",
        )
    if any("\x00" in text or not _encodable(text) for text in (key, value)):
        raise RefError(
            f"the tag {key!r} holds a NUL character or a lone surrogate, which a database "
            "store cannot hold",
            hint="leave it out (or encode the value, e.g. as hex)",
        )


def _check_tags(tags: dict[str, Any]) -> None:
    """The tags a version is published with can be held by every kind of store (checked
    before anything is stored: a folder store would publish a version it cannot read back,
    a database store would fail with the payload stored). Not the rule of names for keys:
    versions saved before may be copied or moved with theirs."""
    for key, value in tags.items():
        _check_storable_tag(key, value)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _host() -> str:
    return socket.gethostname().replace(".", "-") or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ranges(numbers: builtins.list[int]) -> str:
    """``version 3`` or ``versions 1, 3-5`` (sorted numbers; deleted ones leave gaps)."""
    if len(numbers) == 1:
        return f"version {numbers[0]}"
    runs: builtins.list[builtins.list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return "versions " + ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def fetch_url(url: str, *, storage_options: dict[str, Any] | None = None) -> tuple[Path, Manifest]:
    """Download the artifact at a remote URL into the cache: its local folder and manifest.

    ``url`` is a version inside a store (``s3://bucket/prefix/<name>/<version>``) or any
    folder holding ``persistkit.json`` beside its payload files.
    """
    in_store = _store_version(url, storage_options)
    if in_store is not None:
        with contextlib.suppress(VersionNotFoundError):
            path, manifest, _, _ = in_store[0].fetch(in_store[1])
            return path, manifest
    folder, raw, manifest = _artifact_folder(url, storage_options)
    with folder.errors():
        return folder.download("", manifest, raw, manifest_digest(manifest)), manifest


def manifest_at_url(url: str, *, storage_options: dict[str, Any] | None = None) -> Manifest:
    """The manifest :func:`fetch_url` would return, without downloading the payload."""
    in_store = _store_version(url, storage_options)
    if in_store is not None:
        with contextlib.suppress(VersionNotFoundError):
            return in_store[0].manifest(in_store[1])
    return _artifact_folder(url, storage_options)[2]


def _store_version(url: str, storage_options: dict[str, Any] | None) -> tuple[Store, Ref] | None:
    """The store and version named by a URL shaped ``<store>/<name>/<version>``, else None."""
    head, _, version = url.rstrip("/").rpartition("/")
    root, _, name = head.rpartition("/")
    if version.isdigit() and _is_name(name) and not root.endswith(":/"):
        return Store(root, storage_options=storage_options), Ref(name, version=int(version))
    return None


def _artifact_folder(
    url: str, storage_options: dict[str, Any] | None
) -> tuple[FileSpace, bytes, Manifest]:
    """A remote artifact folder outside any store: the folder, its manifest's bytes, parsed."""
    folder = FileSpace(url.rstrip("/"), storage_options)
    with folder.errors():
        raw = folder.read(MANIFEST_NAME)
        if raw is None:
            raise ArtifactNotFoundError(
                f"{url} holds no {MANIFEST_NAME}, so it is not a persistkit artifact",
                hint="give the URL of an artifact folder, or a store and a ref (--store URL)",
            )
        return folder, raw, Manifest.from_json(raw)
