"""Artifact directories on local disk: hashing payload files, checking them, publishing."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from persistkit.errors import ArtifactError, IntegrityError
from persistkit.manifest import MANIFEST_NAME, FileEntry, Manifest, check_relative_path

_CHUNK = 4 * 1024 * 1024


def hash_file(path: Path) -> tuple[int, str]:
    """Return ``(size, sha256 hex)`` of a file, reading it in large chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            digest.update(view[:n])
            size += n
    return size, digest.hexdigest()


def file_entries(directory: Path, names: Iterable[str]) -> list[FileEntry]:
    """Hash each listed file of ``directory`` into manifest entries (in the given order)."""
    entries = []
    for name in names:
        check_relative_path(name)
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"the backend reported writing {name!r} but it is not there")
        size, digest = hash_file(path)
        entries.append(FileEntry(path=name, size=size, sha256=digest))
    return entries


def check_files(directory: Path, manifest: Manifest) -> None:
    """Raise :class:`IntegrityError` naming the first file whose size or sha256 is wrong."""
    for entry in manifest.files:
        path = directory / entry.path
        try:
            actual_size = path.stat().st_size
        except FileNotFoundError:
            raise IntegrityError(
                f"{entry.path!r} is listed in the manifest but missing from {directory}",
                hint="the artifact is incomplete; restore it from its store or save again",
            ) from None
        if actual_size != entry.size:
            raise IntegrityError(
                f"{entry.path!r} is {actual_size} bytes but the manifest says {entry.size}: "
                "the file is truncated or was modified",
                hint="restore the artifact from its store or save the model again",
            )
        if _already_verified(path, entry):
            continue
        _size, digest = hash_file(path)
        if digest != entry.sha256:
            raise IntegrityError(
                f"{entry.path!r} does not match its sha256 in the manifest "
                f"(expected {entry.sha256[:12]}…, got {digest[:12]}…): it was modified",
                hint="do not load a tampered file; restore it or save the model again",
            )
        _remember_verified(path, entry)


def _already_verified(path: Path, entry: FileEntry) -> bool:
    from persistkit.verified import already_verified

    return already_verified(path, entry.sha256)


def _remember_verified(path: Path, entry: FileEntry) -> None:
    from persistkit.verified import remember_verified

    remember_verified(path, entry.sha256)


def write_manifest(directory: Path, manifest: Manifest, *, durable: bool = False) -> None:
    """Write ``persistkit.json`` atomically (temp file + rename); it is always written last."""
    final = directory / MANIFEST_NAME
    tmp = directory / f".{MANIFEST_NAME}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(manifest.to_json())
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, final)
    if durable:
        fsync_directory(directory)


def fsync_tree(directory: Path) -> None:
    """fsync every file and folder under ``directory`` (for ``durable=True``)."""
    for root, _dirs, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(Path(root))


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def staging_directory(parent: Path, label: str) -> Path:
    """A fresh, hidden folder beside the destination, so the final rename is atomic."""
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f".staging-{label}-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def publish_directory(staging: Path, final: Path) -> None:
    """Atomically move a complete artifact into place; refuse to replace an existing one."""
    if final.exists():
        shutil.rmtree(staging, ignore_errors=True)
        raise ArtifactError(
            f"{final} already exists; persistkit never overwrites a saved artifact",
            hint="save to a new path, or into a store where each save makes a new version",
        )
    try:
        os.rename(staging, final)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArtifactError(f"could not publish the artifact at {final}: {exc}") from exc
