"""A store: named, versioned artifacts with aliases and tags, on any fsspec file system.

Layout under the store's root (a local folder, ``memory://...`` or ``s3://bucket/prefix``)::

    <name>/<version>/persistkit.json   the manifest; a version exists once this exists
    <name>/<version>/tags.json         tags added after publication (merged over the manifest's)
    <name>/<version>/DELETED           tombstone of a deleted version (its number is never reused)
    <name>/aliases/<alias>.json        {"version": N}; moved by one atomic replace
    local stores:   <name>/<version>/<payload files>
    remote stores:  <name>/.payload/<hex>/<payload files>, <hex> being the version's digest

Publication (the manifest is always last, so a version is visible only when complete):

* local folder: backends write into ``<root>/.staging/<name>.<host>.<pid>.<id>``; the manifest
  is written there, then the folder is renamed onto ``<name>/<version>``. ``rename`` fails when
  that version exists, and the writer tries the next number, so racing writers never share one.
* remote (S3, memory): the payload is uploaded under ``<name>/.payload/<digest>/``, a prefix no
  other save uses (the digest covers the manifest's creation time and every file's sha256),
  then the version is claimed by creating ``<name>/<version>/persistkit.json`` with a
  conditional write (``If-None-Match: *``); a writer that loses the race tries the next number.

The digest of a version (``name@sha256:<hex>``) is the sha256 of its manifest's sealed bytes
(:meth:`Manifest.sealed_bytes`: every field but name, version, tags and seal), so it is the
same in every store a version is copied to, and tags never change it.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from persistkit import cache, config
from persistkit.artifact import fsync_directory, fsync_tree, write_manifest
from persistkit.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    Command,
    ListModels,
    ManifestError,
    Option,
    PersistkitError,
    RefError,
    StoreError,
    VersionNotFoundError,
)
from persistkit.manifest import MANIFEST_NAME, Manifest, utc_now
from persistkit.payload import open_payload, read_artifact_manifest
from persistkit.progress import Progress
from persistkit.records import Artifact
from persistkit.refs import Ref, did_you_mean, parse_ref, typo_of, validate_name

STALE_SECONDS = 3600
TAGS_NAME = "tags.json"
TOMBSTONE_NAME = "DELETED"
_STAGING = ".staging"
_PAYLOAD = ".payload"
_ALIASES = "aliases"
_MAX_TAG_VALUE = 1024
_MAX_CLAIMS = 10_000
_MEMORY_CREATE_LOCK = threading.Lock()


def manifest_digest(manifest: Manifest) -> str:
    """``sha256:<hex>`` of the manifest's sealed bytes: the identity of a saved version."""
    return "sha256:" + hashlib.sha256(manifest.sealed_bytes()).hexdigest()


@dataclass(frozen=True)
class VersionInfo:
    """One published version: its manifest (tags merged in), digest and the aliases on it.

    ``location`` is the version's folder (local path or URL). A version whose
    ``persistkit.json`` cannot be read or parsed is still listed: ``damaged`` holds the reason,
    ``manifest`` and ``digest`` are ``None``, and ``location`` is that damaged file. Loading
    it raises :class:`ManifestError`; :meth:`Store.delete` removes it.
    """

    name: str
    version: int
    manifest: Manifest | None
    digest: str | None
    aliases: builtins.list[str] = field(default_factory=list)
    damaged: str | None = None
    location: str = ""

    @property
    def tags(self) -> dict[str, str]:
        return self.manifest.tags if self.manifest is not None else {}

    def to_dict(self) -> dict[str, Any]:
        """The ``ls --json`` record of this version (``damaged``: null, or the reason)."""
        m = self.manifest
        return {
            "name": self.name,
            "version": self.version,
            "backend": m.backend if m else None,
            "created_at": m.created_at if m else None,
            "aliases": self.aliases,
            "tags": self.tags,
            "digest": self.digest,
            "size_bytes": m.total_size if m else None,
            "class": m.model_class if m else None,
            "damaged": self.damaged,
            "location": self.location,
        }


@dataclass(frozen=True)
class CopiedVersion:
    """One version copied by :meth:`Store.copy_versions`: where it came from, the new version
    in the destination, the aliases set on it there, and the source's aliases left behind."""

    source_version: int
    artifact: Artifact
    aliases: builtins.list[str] = field(default_factory=list)
    aliases_not_copied: builtins.list[str] = field(default_factory=list)


class _Damaged(Exception):
    """A version's manifest that cannot be read or parsed (internal; raised as ManifestError)."""

    def __init__(self, name: str, version: int, reason: str, location: str) -> None:
        super().__init__(reason)
        self.name, self.version, self.reason, self.location = name, version, reason, location

    def error(self) -> ManifestError:
        ref = f"{self.name}:{self.version}"
        return ManifestError(
            f"{ref} is damaged: {self.reason} (at {self.location})",
            hint=f"restore that file from a backup, or remove the version: persistkit rm {ref}",
        )


@dataclass
class _Listing:
    published: builtins.list[int]
    highest: int
    payloads: dict[str, float] = field(default_factory=dict)  # digest hex -> newest mtime


class Store:
    """Named, versioned models under one root: a local folder, ``memory://`` or ``s3://``.

    ``url=None`` means ``$PERSISTKIT_STORE``, else the per-user store folder. For S3 the
    endpoint and credentials come from the usual ``AWS_*`` environment variables (including
    ``AWS_ENDPOINT_URL``) or from ``storage_options`` (passed to s3fs).
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        raw = config.default_store_url() if url is None else os.fspath(url)
        raw = raw.removeprefix("file://")
        # the per-user store nobody named: missing until the first save, which is no mistake
        self.is_default = url is None and not os.environ.get("PERSISTKIT_STORE")
        self.stale_after: float = STALE_SECONDS
        self._fs: Any = None
        if "://" not in raw:
            self._local_root = Path(raw).expanduser().absolute()
            self.url = str(self._local_root)
            self._root = self.url
            return
        protocol = raw.split("://", 1)[0]
        options = dict(storage_options or {})
        if protocol in ("s3", "s3a"):
            # other processes write to the same bucket: never answer from a stale listing
            options.setdefault("use_listings_cache", False)
        try:
            import fsspec

            self._fs, root = fsspec.core.url_to_fs(raw, **options)
        except ImportError as exc:
            raise StoreError(
                f"the {protocol}:// store needs the package {exc.name or 'for it'}",
                hint='pip install "persistkit[s3]"' if protocol.startswith("s3") else None,
            ) from None
        except ValueError as exc:
            raise StoreError(
                f"cannot open the store {raw}: {exc}",
                hint="use a folder, memory://..., or s3://bucket/prefix",
            ) from None
        self._local_root = Path()
        self.url = raw.rstrip("/")
        self._root = str(root).rstrip("/")

    @property
    def is_local(self) -> bool:
        return self._fs is None

    @property
    def _shown_url(self) -> str | None:
        """The URL hints name (``--store URL``), or None for the per-user default store."""
        return None if self.is_default else self.url

    def exists(self) -> bool:
        """Whether there is a store at this location, however empty: a local folder that
        exists, a ``memory://`` root something was saved under, an S3 bucket that exists
        (a prefix in it needs no creating). A store is made by the first save into it."""
        with self._storage_errors():
            if self.is_local:
                return self._local_root.is_dir()
            if "memory" in _protocols(self._fs):
                return bool(self._fs.isdir(self._root or "/"))
            bucket = self._root.split("/", 1)[0]
            return bool(self._fs.exists(bucket))

    def missing(self) -> StoreError:
        """The error for reading from a store that does not exist (see :meth:`exists`)."""
        where = "bucket" if not self.is_local and "memory" not in _protocols(self._fs) else ""
        return StoreError(
            f"no store at {self.url}" + (f" (the {where} does not exist)" if where else ""),
            hint="check the location; a store is made by the first save into it",
            remedies=[Option("store", purpose="to name another store")],
        )

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
        parent = self._local_root / _STAGING if self.is_local else config.cache_dir() / _STAGING
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / f"{name}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return path

    def publish(
        self, staging: Path, name: str, manifest: Manifest, *, durable: bool = False
    ) -> Artifact:
        """Give the staged artifact the next free version of ``name`` and make it visible.

        The staged folder is consumed. ``durable=True`` also fsyncs every file and folder
        (local stores; object stores acknowledge a write only once it is durable).
        """
        validate_name(name)
        self._clean_staging(staging.parent)
        with self._storage_errors():
            if self.is_local:
                return self._publish_local(staging, name, manifest, durable)
            return self._publish_remote(staging, name, manifest)

    def _publish_local(
        self, staging: Path, name: str, manifest: Manifest, durable: bool
    ) -> Artifact:
        folder = self._local_root / name
        created = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        if durable and created:
            fsync_directory(self._local_root)
        version = self._scan(name).highest + 1
        for _ in range(_MAX_CLAIMS):
            manifest = replace(manifest, name=name, version=version)
            write_manifest(staging, manifest, durable=durable)
            if durable:
                fsync_tree(staging)
            try:
                os.rename(staging, folder / str(version))
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    version = max(version + 1, self._scan(name).highest + 1)
                    continue
                raise
            if durable:
                fsync_directory(folder)
            path = folder / str(version)
            return Artifact(
                uri=f"{name}:{version}", path=path, manifest=manifest, name=name, version=version
            )
        raise StoreError(f"could not claim a version of {name} after {_MAX_CLAIMS} tries")

    def _publish_remote(self, staging: Path, name: str, manifest: Manifest) -> Artifact:
        # the digest is computed from the manifest as readers will parse it
        digest = manifest_digest(Manifest.from_json(manifest.to_json()))
        listing = self._scan(name)
        self._clean_payloads(name, listing)
        prefix = self._path(f"{name}/{_PAYLOAD}/{digest[7:]}")
        with Progress(f"upload {name}", manifest.total_size) as bar:
            for entry in manifest.files:
                self._fs.put_file(
                    str(staging / entry.path),
                    f"{prefix}/{entry.path}",
                    callback=cache._callback(bar),
                )
        version = listing.highest + 1
        for _ in range(_MAX_CLAIMS):
            manifest = replace(manifest, name=name, version=version)
            if self._create(f"{name}/{version}/{MANIFEST_NAME}", manifest.to_json().encode()):
                break
            version = max(version + 1, self._scan(name).highest + 1)
        else:
            raise StoreError(f"could not claim a version of {name} after {_MAX_CLAIMS} tries")
        write_manifest(staging, manifest)
        path = cache.adopt(staging, digest)
        shutil.rmtree(staging, ignore_errors=True)
        return Artifact(
            uri=f"{name}:{version}", path=path, manifest=manifest, name=name, version=version
        )

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
            if self.is_local:
                if not self._local_root.is_dir():
                    return []
                candidates = [p.name for p in self._local_root.iterdir() if p.is_dir()]
                return sorted(n for n in candidates if _is_name(n) and self._scan(n).published)
            names = set()
            for rel in self._find(""):
                parts = rel.split("/")
                if len(parts) == 3 and parts[1].isdigit() and parts[2] == MANIFEST_NAME:
                    names.add(parts[0])
            return sorted(n for n in names if _is_name(n))

    def versions(self, name: str) -> builtins.list[VersionInfo]:
        """Every published version of ``name``, oldest first, with tags and aliases.

        A version whose manifest is damaged is listed too, with ``damaged`` set to the reason
        (one damaged version never hides the others).
        """
        validate_name(name)
        with self._storage_errors():
            numbers = self._scan(name).published
            manifests = self._read_manifests(name, numbers)
            by_version: dict[int, builtins.list[str]] = {}
            for alias, version in self.aliases(name).items():
                by_version.setdefault(version, []).append(alias)
            infos = []
            for v, m in zip(numbers, manifests):
                aliases = sorted(by_version.get(v, []))
                if isinstance(m, _Damaged):
                    infos.append(VersionInfo(name, v, None, None, aliases, m.reason, m.location))
                else:
                    where = self._location(f"{name}/{v}")
                    infos.append(VersionInfo(name, v, m, manifest_digest(m), aliases, None, where))
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
            numbers = self._scan(parsed.name).published
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
            return bool(self._scan(name).published)

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
            rel = f"{name}/{version}/{MANIFEST_NAME}"
            if self.is_local:
                path = self._local_root / name / str(version)
                try:  # not through a link, never a FIFO
                    manifest = read_artifact_manifest(path)
                except ArtifactError as exc:
                    raise self._damaged(name, version, exc.message).error() from None
                return path, self._with_tags(name, version, manifest), name, version
            raw = self._read(rel)
            if raw is None:
                raise VersionNotFoundError(f"{name}:{version} was deleted")
            manifest = self._parse_manifest(name, version, raw)
            digest = manifest_digest(manifest)
            prefix = self._path(f"{name}/{_PAYLOAD}/{digest[7:]}")
            path = cache.fetch(self._fs, prefix, manifest, raw, digest)
            return path, self._with_tags(name, version, manifest), name, version

    def digest(self, ref: str | Ref) -> str:
        """``sha256:<hex>`` identifying the version ``ref`` points at (see module docs)."""
        return manifest_digest(self.manifest(ref))

    # -- aliases and tags ------------------------------------------------------------------
    def aliases(self, name: str) -> dict[str, int]:
        """Every alias of ``name`` and the version it points at."""
        validate_name(name)
        with self._storage_errors():
            found: dict[str, int] = {}
            names = [n for n in self._listdir(f"{name}/{_ALIASES}") if n.endswith(".json")]
            blobs = self._read_many([f"{name}/{_ALIASES}/{n}" for n in names])
            for rel, data in blobs.items():
                alias = rel.rsplit("/", 1)[1].removesuffix(".json")
                version = _json_object(data).get("version")
                if _is_name(alias) and isinstance(version, int):
                    found[alias] = version
            return dict(sorted(found.items()))

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
        record = {"version": version, "updated_at": utc_now()}
        with self._storage_errors():
            self._replace(f"{name}/{_ALIASES}/{alias}.json", _dumps(record), durable=durable)
        return version

    def remove_alias(self, name: str, alias: str) -> None:
        """Delete ``name@alias`` (the version it pointed at stays)."""
        validate_name(name)
        validate_name(alias, what="alias")
        if alias not in self.aliases(name):
            raise VersionNotFoundError(f"{name} has no alias {alias!r}")
        with self._storage_errors():
            self._remove(f"{name}/{_ALIASES}/{alias}.json")

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
        rel = f"{name}/{version}/{TAGS_NAME}"
        with self._storage_errors():
            added = {k: str(v) for k, v in _json_object(self._read(rel)).items()}
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
            self._replace(rel, _dumps(added), durable=durable)
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
                self._remove(f"{name}/{_ALIASES}/{alias}.json")
            manifest = self._read_manifests(name, [version], merge_tags=False)[0]
            self._replace(f"{name}/{version}/{TOMBSTONE_NAME}", b"deleted " + utc_now().encode())
            self._remove(f"{name}/{version}/{MANIFEST_NAME}")
            if self.is_local:
                folder = self._local_root / name / str(version)
                for child in folder.iterdir():
                    if child.name != TOMBSTONE_NAME:
                        self._remove(f"{name}/{version}/{child.name}")
            else:
                self._remove(f"{name}/{version}/{TAGS_NAME}")
                if isinstance(manifest, _Damaged):
                    return version  # its payload is unknown: left to _clean_payloads
                digest = manifest_digest(manifest)
                others = self._read_manifests(name, self._scan(name).published, merge_tags=False)
                # a copy may share the payload; a damaged version might, too
                if all(isinstance(m, Manifest) and manifest_digest(m) != digest for m in others):
                    self._remove(f"{name}/{_PAYLOAD}/{digest[7:]}")
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
            numbers = self._scan(parsed.name).published
            if not numbers:
                self.resolve(parsed)  # raises the usual "no model named" error
        else:
            numbers = [self.resolve(parsed)[1]]
        name = parsed.name
        with self._storage_errors():
            damaged = [
                m
                for m in self._read_manifests(name, numbers, merge_tags=False)
                if isinstance(m, _Damaged)
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
            if aliases:
                record = _dumps({"version": artifact.version, "updated_at": utc_now()})
                for alias in names:  # set as in the source: no typo check, no resolving again
                    target._replace(f"{name}/{_ALIASES}/{alias}.json", record, durable=durable)
            report.append(
                CopiedVersion(version, artifact, names if aliases else [], [] if aliases else names)
            )
        return report

    # -- internals: names, versions, manifests ---------------------------------------------
    def _scan(self, name: str) -> _Listing:
        """Published versions of ``name``, the highest number ever claimed, payload prefixes."""
        published: set[int] = set()
        claimed: set[int] = set()
        payloads: dict[str, float] = {}
        if self.is_local:
            folder = self._local_root / name
            if folder.is_dir():
                for child in folder.iterdir():
                    if child.name.isdigit() and child.name.isascii():
                        claimed.add(int(child.name))
                        if (child / MANIFEST_NAME).is_file():
                            published.add(int(child.name))
        else:
            for rel, info in self._find(name).items():
                parts = rel.split("/")
                if len(parts) == 3 and parts[1].isdigit() and parts[1].isascii():
                    claimed.add(int(parts[1]))
                    if parts[2] == MANIFEST_NAME:
                        published.add(int(parts[1]))
                elif len(parts) >= 4 and parts[1] == _PAYLOAD:
                    payloads[parts[2]] = max(payloads.get(parts[2], 0.0), _mtime(info))
        return _Listing(sorted(published), max(claimed, default=0), payloads)

    def _manifests(
        self, name: str, numbers: builtins.list[int], *, merge_tags: bool = True
    ) -> builtins.list[Manifest]:
        """The manifests of these versions; a damaged one raises :class:`ManifestError`
        naming it."""
        manifests = []
        for m in self._read_manifests(name, numbers, merge_tags=merge_tags):
            if isinstance(m, _Damaged):
                raise m.error()
            manifests.append(m)
        return manifests

    def _read_manifests(
        self, name: str, numbers: builtins.list[int], *, merge_tags: bool = True
    ) -> builtins.list[Manifest | _Damaged]:
        """The manifest of each version, or why it cannot be read (a deleted one raises)."""
        rels = [f"{name}/{v}/{MANIFEST_NAME}" for v in numbers]
        blobs: dict[str, bytes | _Damaged] = {}
        if self.is_local:
            for v, rel in zip(numbers, rels):
                try:
                    data = self._read(rel)
                except FileNotFoundError:
                    data = None
                except ArtifactError as exc:  # a link or special file in its place
                    blobs[rel] = self._damaged(name, v, exc.message)
                    continue
                except OSError as exc:
                    blobs[rel] = self._damaged(name, v, f"cannot read it: {exc.strerror}")
                    continue
                if data is not None:
                    blobs[rel] = data
        else:
            blobs.update(self._read_many(rels))
        tag_blobs = (
            self._read_many([f"{name}/{v}/{TAGS_NAME}" for v in numbers]) if merge_tags else {}
        )
        manifests: builtins.list[Manifest | _Damaged] = []
        for v, rel in zip(numbers, rels):
            if rel not in blobs:
                raise VersionNotFoundError(f"{name}:{v} was deleted")
            blob = blobs[rel]
            if isinstance(blob, _Damaged):
                manifests.append(blob)
                continue
            parsed = self._parse_or_damage(name, v, blob)
            if isinstance(parsed, _Damaged):
                manifests.append(parsed)
                continue
            manifest = _merge_tags(parsed, tag_blobs.get(f"{name}/{v}/{TAGS_NAME}"))
            manifests.append(replace(manifest, name=name, version=v))
        return manifests

    def _parse_manifest(self, name: str, version: int, raw: bytes) -> Manifest:
        """Parse a version's manifest; a damaged one raises :class:`ManifestError` naming it."""
        parsed = self._parse_or_damage(name, version, raw)
        if isinstance(parsed, _Damaged):
            raise parsed.error()
        return parsed

    def _parse_or_damage(self, name: str, version: int, raw: bytes) -> Manifest | _Damaged:
        try:
            return Manifest.from_json(raw)
        except ManifestError as exc:
            return self._damaged(name, version, exc.message)

    def _damaged(self, name: str, version: int, reason: str) -> _Damaged:
        return _Damaged(name, version, reason, self._location(f"{name}/{version}/{MANIFEST_NAME}"))

    def _location(self, rel: str) -> str:
        """Where ``rel`` is, for messages: a local path or the store's URL plus ``rel``."""
        return str(self._local_root / rel) if self.is_local else f"{self.url}/{rel}"

    def _with_tags(self, name: str, version: int, manifest: Manifest) -> Manifest:
        return _merge_tags(manifest, self._read(f"{name}/{version}/{TAGS_NAME}"))

    def _alias_target(self, name: str, alias: str, numbers: builtins.list[int]) -> int:
        data = self._read(f"{name}/{_ALIASES}/{alias}.json")
        if data is None:
            existing = self.aliases(name)
            known = ", ".join(existing) or "none"
            guess = did_you_mean(alias, existing)
            raise VersionNotFoundError(
                f"{name} has no alias {alias!r}"
                + (f"; {guess}" if guess else "")
                + f" (aliases: {known})",
                remedies=[self._set_alias(name, alias, "to set it")],
            )
        version = _json_object(data).get("version")
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
        matches = [
            v
            for v, m in zip(numbers, self._read_manifests(name, numbers, merge_tags=False))
            if not isinstance(m, _Damaged)  # its digest is unknown: it matches nothing
            and manifest_digest(m).startswith(digest)
        ]
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

    # -- internals: stale staging ----------------------------------------------------------
    def _clean_staging(self, parent: Path) -> None:
        """Remove staging folders left by dead writers on this host, or older than
        ``stale_after`` seconds (a writer on another host, or a reused pid); never this
        process's own."""
        if not parent.is_dir():
            return
        now = time.time()
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
            if dead or age > self.stale_after:
                shutil.rmtree(child, ignore_errors=True)

    def _clean_payloads(self, name: str, listing: _Listing) -> None:
        """Remove payload prefixes no version points at, older than ``stale_after``."""
        if len(listing.payloads) <= len(listing.published):
            return
        now = time.time()
        stale = {d for d, mtime in listing.payloads.items() if now - mtime > self.stale_after}
        if not stale:
            return
        manifests = self._read_manifests(name, listing.published, merge_tags=False)
        if any(isinstance(m, _Damaged) for m in manifests):
            return  # which payload a damaged version points at is unknown: keep them all
        stale -= {manifest_digest(m)[7:] for m in manifests if isinstance(m, Manifest)}
        for digest in stale:
            self._remove(f"{name}/{_PAYLOAD}/{digest}")

    # -- internals: storage primitives (paths relative to the root) --------------------------
    def _path(self, rel: str) -> str:
        return f"{self._root}/{rel}" if self._root else rel

    def _rel(self, full: str) -> str:
        return full[len(self._root) :].lstrip("/") if self._root else full.lstrip("/")

    def _find(self, rel: str) -> dict[str, Any]:
        """Every file under ``rel`` (relative path -> the file system's details)."""
        try:
            found = self._fs.find(self._path(rel) if rel else (self._root or "/"), detail=True)
        except FileNotFoundError:
            self._check_bucket()
            return {}
        return {self._rel(k): v for k, v in found.items()}

    def _read(self, rel: str) -> bytes | None:
        if self.is_local:
            try:  # a regular file only: a link or FIFO planted in the store is refused
                with open_payload(self._local_root / rel) as opened:
                    return opened.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                return None
        try:
            return bytes(self._fs.cat_file(self._path(rel)))
        except FileNotFoundError:
            return None

    def _read_many(self, rels: builtins.list[str]) -> dict[str, bytes]:
        if self.is_local or not rels:
            return {rel: data for rel in rels if (data := self._read(rel)) is not None}
        blobs = self._fs.cat([self._path(r) for r in rels], on_error="omit")
        if not isinstance(blobs, dict):  # a single path answers with bare bytes
            blobs = {self._path(rels[0]): blobs}
        return {self._rel(k): bytes(v) for k, v in blobs.items() if isinstance(v, bytes)}

    def _listdir(self, rel: str) -> builtins.list[str]:
        if self.is_local:
            folder = self._local_root / rel
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        try:
            return sorted(
                p.rstrip("/").rsplit("/", 1)[-1] for p in self._fs.ls(self._path(rel), detail=False)
            )
        except FileNotFoundError:
            return []

    def _replace(self, rel: str, data: bytes, *, durable: bool = False) -> None:
        """Write a small file so readers see the old or the new content, never a mix."""
        if not self.is_local:
            self._fs.pipe_file(self._path(rel), data)  # one PUT: atomic on object stores
            return
        final = self._local_root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        if durable:
            fsync_directory(final.parent)

    def _create(self, rel: str, data: bytes) -> bool:
        """Create a file only if absent (a conditional write); False if it already exists."""
        try:
            if "memory" in _protocols(self._fs):
                # the in-process memory file system checks and creates in two steps
                with _MEMORY_CREATE_LOCK:
                    self._fs.pipe_file(self._path(rel), data, mode="create")
            else:
                self._fs.pipe_file(self._path(rel), data, mode="create")
        except FileExistsError:
            return False
        return True

    def _remove(self, rel: str) -> None:
        if self.is_local:
            path = self._local_root / rel
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            return
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm(self._path(rel), recursive=True)

    def _check_bucket(self) -> None:
        """On S3, raise a :class:`StoreError` naming the bucket if it does not exist."""
        if self.is_local or not {"s3", "s3a"} & set(_protocols(self._fs)):
            return
        bucket = self._root.split("/", 1)[0]
        try:
            exists = bool(self._fs.exists(bucket))
        except Exception:  # the original error is the better one then
            return
        if not exists:
            endpoint = (
                getattr(self._fs, "endpoint_url", None)
                or (getattr(self._fs, "client_kwargs", None) or {}).get("endpoint_url")
                or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL")
                or "AWS S3"
            )
            raise StoreError(
                f"no bucket {bucket!r} at {endpoint} (or no access to it); create it first",
                hint=f"e.g. `aws s3 mb s3://{bucket}` (with --endpoint-url for another service), "
                "or check the store URL and the AWS_* settings",
            )

    @contextlib.contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """Turn the storage library's errors into one :class:`StoreError` with a hint."""
        try:
            yield
        except PersistkitError:
            raise
        except PermissionError as exc:
            raise StoreError(
                f"permission denied in the store {self.url}: {exc}",
                hint="check the folder's permissions or your credentials",
            ) from exc
        except Exception as exc:
            if not (isinstance(exc, OSError) or _from_storage_library(exc)):
                raise
            if isinstance(exc, FileNotFoundError):
                self._check_bucket()  # a missing bucket is named as such
            raise StoreError(
                f"the store {self.url} failed: {type(exc).__name__}: {exc}",
                hint="check the URL, that the storage is reachable, and the AWS_* settings",
            ) from exc


# --- helpers -----------------------------------------------------------------------------


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _from_storage_library(exc: BaseException) -> bool:
    module = type(exc).__module__.split(".")[0]
    return module in {"botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "urllib3"}


def _is_name(text: str) -> bool:
    try:
        validate_name(text)
    except RefError:
        return False
    return True


def _check_tag(key: str, value: str | None) -> None:
    validate_name(key.lower(), what="tag key")
    if value is not None and (not isinstance(value, str) or len(value) > _MAX_TAG_VALUE):
        raise RefError(
            f"the value of tag {key!r} must be text of at most {_MAX_TAG_VALUE} characters",
            hint="store long or structured data in metadata= at save time",
        )


def _json_object(data: bytes | None) -> dict[str, Any]:
    if not data:
        return {}
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _merge_tags(manifest: Manifest, tags_blob: bytes | None) -> Manifest:
    """``manifest`` with the tags added after publication (a ``tags.json``) merged over its own."""
    added = _json_object(tags_blob)
    if not added:
        return manifest
    return replace(manifest, tags={**manifest.tags, **{str(k): str(v) for k, v in added.items()}})


def _dumps(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _mtime(info: dict[str, Any]) -> float:
    for key in ("LastModified", "mtime", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
    return time.time()


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
    with folder._storage_errors():
        path = cache.fetch(folder._fs, folder._root, manifest, raw, manifest_digest(manifest))
    return path, manifest


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
) -> tuple[Store, bytes, Manifest]:
    """A remote artifact folder outside any store: the folder, its manifest's bytes, parsed."""
    folder = Store(url.rstrip("/"), storage_options=storage_options)
    with folder._storage_errors():
        raw = folder._read(MANIFEST_NAME)
        if raw is None:
            raise ArtifactNotFoundError(
                f"{url} holds no {MANIFEST_NAME}, so it is not a persistkit artifact",
                hint="give the URL of an artifact folder, or a store and a ref (--store URL)",
            )
        return folder, raw, Manifest.from_json(raw)
