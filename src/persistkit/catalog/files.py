"""The catalog kept in files beside the payloads: a local folder, ``memory://`` or ``s3://``.

Layout under the store's root::

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
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persistkit import cache
from persistkit.artifact import fsync_directory, fsync_tree, write_manifest
from persistkit.catalog.base import Catalog, Damaged, Orphan, manifest_digest
from persistkit.catalog.space import FileSpace, mtime
from persistkit.errors import (
    ArtifactError,
    ManifestError,
    RefError,
    StoreError,
    VersionNotFoundError,
)
from persistkit.manifest import MANIFEST_NAME, Manifest, utc_now
from persistkit.payload import read_artifact_manifest
from persistkit.records import Artifact
from persistkit.refs import validate_name

TAGS_NAME = "tags.json"
TOMBSTONE_NAME = "DELETED"
PAYLOAD = ".payload"
ALIASES = "aliases"
MAX_CLAIMS = 10_000


@dataclass
class Listing:
    """What a scan of one name's folder found."""

    published: builtins.list[int]
    highest: int
    payloads: dict[str, float] = field(default_factory=dict)  # digest hex -> newest mtime
    claimed: builtins.list[int] = field(default_factory=list)


class FileCatalog(Catalog):
    """The catalog of a folder, ``memory://`` or ``s3://`` store (see the module docs)."""

    def __init__(self, space: FileSpace) -> None:
        self.space = space
        self.stale_after: float = 3600.0
        if space.is_local:
            self.kind = "folder"
        else:
            self.kind = "memory" if space.is_memory else "s3"

    def exists(self) -> bool:
        return self.space.exists()

    def close(self) -> None:
        """Nothing to release: files are opened per call."""

    # -- listing -----------------------------------------------------------------------------
    def _local_names(self, published: bool) -> builtins.list[str]:
        """The names in a local folder with a published (else any claimed) number."""
        root = self.space.local_root
        if not root.is_dir():
            return []
        candidates = [p.name for p in root.iterdir() if p.is_dir() and _is_name(p.name)]
        listings = {n: self.scan(n) for n in candidates}
        return sorted(n for n, x in listings.items() if (x.published if published else x.claimed))

    def names(self) -> builtins.list[str]:
        space = self.space
        if space.is_local:
            return self._local_names(published=True)
        names = set()
        for rel in space.find(""):
            parts = rel.split("/")
            if len(parts) == 3 and parts[1].isdigit() and parts[2] == MANIFEST_NAME:
                names.add(parts[0])
        return sorted(n for n in names if _is_name(n))

    def every_name(self) -> builtins.list[str]:
        space = self.space
        if space.is_local:
            return self._local_names(published=False)
        names = {rel.split("/")[0] for rel in space.find("") if _is_version_file(rel)}
        return sorted(n for n in names if _is_name(n))

    def numbers(self, name: str) -> builtins.list[int]:
        return self.scan(name).published

    def tombstones(self, name: str) -> builtins.list[int]:
        listing = self.scan(name)
        return sorted(set(listing.claimed) - set(listing.published))

    def scan(self, name: str) -> Listing:
        """Published versions of ``name``, the highest number ever claimed, payload prefixes."""
        published: set[int] = set()
        claimed: set[int] = set()
        payloads: dict[str, float] = {}
        if self.space.is_local:
            folder = self.space.local_root / name
            if folder.is_dir():
                for child in folder.iterdir():
                    if child.name.isdigit() and child.name.isascii():
                        claimed.add(int(child.name))
                        if (child / MANIFEST_NAME).is_file():
                            published.add(int(child.name))
        else:
            for rel, info in self.space.find(name).items():
                parts = rel.split("/")
                if len(parts) == 3 and parts[1].isdigit() and parts[1].isascii():
                    claimed.add(int(parts[1]))
                    if parts[2] == MANIFEST_NAME:
                        published.add(int(parts[1]))
                elif len(parts) >= 4 and parts[1] == PAYLOAD:
                    payloads[parts[2]] = max(payloads.get(parts[2], 0.0), mtime(info))
        return Listing(sorted(published), max(claimed, default=0), payloads, sorted(claimed))

    def records(
        self, name: str, numbers: builtins.list[int], *, merge_tags: bool = True
    ) -> builtins.list[Manifest | Damaged]:
        space = self.space
        rels = [f"{name}/{v}/{MANIFEST_NAME}" for v in numbers]
        blobs: dict[str, bytes | Damaged] = {}
        if space.is_local:
            for v, rel in zip(numbers, rels):
                try:
                    data = space.read(rel)
                except FileNotFoundError:
                    data = None
                except ArtifactError as exc:  # a link or special file in its place
                    blobs[rel] = self.damaged(name, v, exc.message)
                    continue
                except OSError as exc:
                    blobs[rel] = self.damaged(name, v, f"cannot read it: {exc.strerror}")
                    continue
                if data is not None:
                    blobs[rel] = data
        else:
            blobs.update(space.read_many(rels))
        tag_blobs = (
            space.read_many([f"{name}/{v}/{TAGS_NAME}" for v in numbers]) if merge_tags else {}
        )
        manifests: builtins.list[Manifest | Damaged] = []
        for v, rel in zip(numbers, rels):
            if rel not in blobs:
                raise VersionNotFoundError(f"{name}:{v} was deleted")
            blob = blobs[rel]
            if isinstance(blob, Damaged):
                manifests.append(blob)
                continue
            parsed = self.parse(name, v, blob)
            if isinstance(parsed, Damaged):
                manifests.append(parsed)
                continue
            added = json_object(tag_blobs.get(f"{name}/{v}/{TAGS_NAME}"))
            manifest = merge_tags_over(parsed, added)
            if manifest.name != name or manifest.version != v:  # as published, usually
                manifest = manifest.replace(name=name, version=v)
            manifests.append(manifest)
        return manifests

    def parse(self, name: str, version: int, raw: bytes) -> Manifest | Damaged:
        try:
            return Manifest.from_json(raw)
        except ManifestError as exc:
            return self.damaged(name, version, exc.message)

    def damaged(self, name: str, version: int, reason: str) -> Damaged:
        where = self.space.location(f"{name}/{version}/{MANIFEST_NAME}")
        return Damaged(name, version, reason, where)

    def location(self, name: str, version: int) -> str:
        return self.space.location(f"{name}/{version}")

    # -- aliases and tags --------------------------------------------------------------------
    def aliases(self, name: str) -> dict[str, int]:
        found: dict[str, int] = {}
        names = [n for n in self.space.listdir(f"{name}/{ALIASES}") if n.endswith(".json")]
        blobs = self.space.read_many([f"{name}/{ALIASES}/{n}" for n in names])
        for rel, data in blobs.items():
            alias = rel.rsplit("/", 1)[1].removesuffix(".json")
            version = json_object(data).get("version")
            if _is_name(alias) and isinstance(version, int):
                found[alias] = version
        return dict(sorted(found.items()))

    def alias_version(self, name: str, alias: str) -> object:
        data = self.space.read(f"{name}/{ALIASES}/{alias}.json")
        return None if data is None else json_object(data).get("version")

    def set_alias(self, name: str, alias: str, version: int, *, durable: bool = False) -> None:
        record = {"version": version, "updated_at": utc_now()}
        self.space.replace(f"{name}/{ALIASES}/{alias}.json", dumps(record), durable=durable)

    def remove_alias(self, name: str, alias: str) -> None:
        self.space.remove(f"{name}/{ALIASES}/{alias}.json")

    def added_tags(self, name: str, version: int) -> dict[str, str]:
        data = self.space.read(f"{name}/{version}/{TAGS_NAME}")
        return {str(k): str(v) for k, v in json_object(data).items()}

    def set_added_tags(
        self, name: str, version: int, tags: dict[str, str], *, durable: bool = False
    ) -> None:
        self.space.replace(f"{name}/{version}/{TAGS_NAME}", dumps(tags), durable=durable)

    # -- publishing and fetching -------------------------------------------------------------
    def publish(
        self,
        staging: Path,
        name: str,
        manifest: Manifest,
        *,
        durable: bool = False,
        version: int | None = None,
    ) -> Artifact:
        if self.space.is_local:
            return self._publish_local(staging, name, manifest, durable, version)
        return self._publish_remote(staging, name, manifest, version)

    def _publish_local(
        self, staging: Path, name: str, manifest: Manifest, durable: bool, exact: int | None
    ) -> Artifact:
        root = self.space.local_root
        folder = root / name
        created = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        if durable and created:
            fsync_directory(root)
        version = exact or self.scan(name).highest + 1
        for _ in range(MAX_CLAIMS):
            manifest = manifest.replace(name=name, version=version)
            write_manifest(staging, manifest, durable=durable)
            if durable:
                fsync_tree(staging)
            try:
                os.rename(staging, folder / str(version))
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    if exact:
                        raise _taken(name, exact) from None
                    version = max(version + 1, self.scan(name).highest + 1)
                    continue
                raise
            if durable:
                fsync_directory(folder)
            path = folder / str(version)
            return Artifact(
                uri=f"{name}:{version}", path=path, manifest=manifest, name=name, version=version
            )
        raise StoreError(f"could not claim a version of {name} after {MAX_CLAIMS} tries")

    def _publish_remote(
        self, staging: Path, name: str, manifest: Manifest, exact: int | None
    ) -> Artifact:
        # the digest is computed from the manifest as readers will parse it
        digest = manifest_digest(Manifest.from_json(manifest.to_json()))
        listing = self.scan(name)
        self._clean_payloads(name, listing)
        self.space.upload(staging, f"{name}/{PAYLOAD}/{digest[7:]}", manifest, name)
        version = exact or listing.highest + 1
        for _ in range(MAX_CLAIMS):
            manifest = manifest.replace(name=name, version=version)
            if self.space.create(f"{name}/{version}/{MANIFEST_NAME}", manifest.to_json().encode()):
                break
            if exact:
                raise _taken(name, exact)
            version = max(version + 1, self.scan(name).highest + 1)
        else:
            raise StoreError(f"could not claim a version of {name} after {MAX_CLAIMS} tries")
        write_manifest(staging, manifest)
        path = cache.adopt(staging, digest)
        shutil.rmtree(staging, ignore_errors=True)
        return Artifact(
            uri=f"{name}:{version}", path=path, manifest=manifest, name=name, version=version
        )

    def fetch(self, name: str, version: int) -> tuple[Path, Manifest]:
        space = self.space
        if space.is_local:
            path = space.local_root / name / str(version)
            try:  # not through a link, never a FIFO
                manifest = read_artifact_manifest(path)
            except ArtifactError as exc:
                raise self.damaged(name, version, exc.message).error() from None
            return path, manifest
        raw = space.read(f"{name}/{version}/{MANIFEST_NAME}")
        if raw is None:
            raise VersionNotFoundError(f"{name}:{version} was deleted")
        parsed = self.parse(name, version, raw)
        if isinstance(parsed, Damaged):
            raise parsed.error()
        digest = manifest_digest(parsed)
        return space.download(f"{name}/{PAYLOAD}/{digest[7:]}", parsed, raw, digest), parsed

    # -- deleting and cleaning up ------------------------------------------------------------
    def delete(self, name: str, version: int) -> None:
        space = self.space
        manifest = self.records(name, [version], merge_tags=False)[0]
        self.tombstone(name, version)
        space.remove(f"{name}/{version}/{MANIFEST_NAME}")
        if space.is_local:
            folder = space.local_root / name / str(version)
            for child in folder.iterdir():
                if child.name != TOMBSTONE_NAME:
                    space.remove(f"{name}/{version}/{child.name}")
            return
        space.remove(f"{name}/{version}/{TAGS_NAME}")
        if isinstance(manifest, Damaged):
            return  # its payload is unknown: left to _clean_payloads
        digest = manifest_digest(manifest)
        others = self.records(name, self.scan(name).published, merge_tags=False)
        # a copy may share the payload; a damaged version might, too
        if all(isinstance(o, Manifest) and manifest_digest(o) != digest for o in others):
            space.remove(f"{name}/{PAYLOAD}/{digest[7:]}")

    def tombstone(self, name: str, version: int) -> None:
        self.space.replace(f"{name}/{version}/{TOMBSTONE_NAME}", b"deleted " + utc_now().encode())

    def _clean_payloads(self, name: str, listing: Listing) -> None:
        """Remove payload prefixes no version points at, older than ``stale_after``."""
        if len(listing.payloads) <= len(listing.published):
            return
        now = time.time()
        stale = {d for d, t in listing.payloads.items() if now - t > self.stale_after}
        for digest in stale & self._unreferenced(name, listing):
            self.space.remove(f"{name}/{PAYLOAD}/{digest}")

    def _unreferenced(self, name: str, listing: Listing) -> set[str]:
        """Payload prefixes of ``name`` no version points at (none while one is damaged:
        which payload it points at is unknown)."""
        manifests = self.records(name, listing.published, merge_tags=False)
        if any(isinstance(m, Damaged) for m in manifests):
            return set()
        used = {manifest_digest(m)[7:] for m in manifests if isinstance(m, Manifest)}
        return set(listing.payloads) - used

    def orphans(self, older_than: float) -> builtins.list[Orphan]:
        if self.space.is_local:
            return []  # a local version's payload is in its own folder, renamed in whole
        now = time.time()
        found = []
        names = {rel.split("/", 1)[0] for rel in self.space.find("") if "/" in rel}
        for name in sorted(n for n in names if _is_name(n)):
            listing = self.scan(name)
            for digest in sorted(self._unreferenced(name, listing)):
                age = now - listing.payloads[digest]
                if age >= older_than:
                    rel = f"{name}/{PAYLOAD}/{digest}"
                    found.append(Orphan(self.space.location(rel), rel, age))
        return found


# --- helpers -----------------------------------------------------------------------------


def _taken(name: str, version: int) -> StoreError:
    return StoreError(
        f"{name}:{version} already exists in the destination (or was deleted there)",
        hint="move into an empty store to keep version numbers",
    )


def _is_version_file(rel: str) -> bool:
    """Whether ``rel`` is a file in a version's folder: ``<name>/<number>/<file>``."""
    parts = rel.split("/")
    return len(parts) == 3 and parts[1].isdigit() and parts[1].isascii()


def _is_name(text: str) -> bool:
    try:
        validate_name(text)
    except RefError:
        return False
    return True


def json_object(data: bytes | None) -> dict[str, Any]:
    if not data:
        return {}
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def merge_tags_over(manifest: Manifest, added: dict[str, Any]) -> Manifest:
    """``manifest`` with the tags added after publication merged over its own."""
    if not added:
        return manifest
    return manifest.replace(tags={**manifest.tags, **{str(k): str(v) for k, v in added.items()}})


def dumps(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
