"""A local, content-addressed cache of artifacts fetched from remote stores.

Entries live in ``$PERSISTKIT_HOME/cache/artifacts/<hex>/``, where ``<hex>`` is the artifact's
digest (sha256 of its manifest's sealed bytes, which include the digest of every payload file),
so one entry serves every store and version holding the same artifact. An entry is complete
when it exists: downloads go into a temporary folder, are hashed against the manifest, and are
renamed into place. Every use re-checks the files (``check_files``; unchanged files are not
re-hashed, see :mod:`persistkit.verified`), and a damaged entry is deleted and fetched again.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from persistkit import config
from persistkit.artifact import check_files
from persistkit.errors import FormatError, IntegrityError
from persistkit.manifest import MANIFEST_NAME, Manifest
from persistkit.progress import Progress


def artifacts_root() -> Path:
    return config.cache_dir() / "artifacts"


def entry_path(digest: str) -> Path:
    """Where the artifact with this digest (``sha256:<hex>`` or ``<hex>``) is cached."""
    return artifacts_root() / digest.removeprefix("sha256:")


def lookup(digest: str, manifest: Manifest) -> Path | None:
    """The cached folder for ``digest`` if present and intact; a damaged entry is removed."""
    path = entry_path(digest)
    if not (path / MANIFEST_NAME).is_file():
        return None
    try:
        check_files(path, manifest)
    except (IntegrityError, FormatError):  # damaged, or a link or special file put there
        _discard(path)
        return None
    return path


def fetch(
    fs: Any, payload_prefix: str, manifest: Manifest, manifest_bytes: bytes, digest: str
) -> Path:
    """The local folder of an artifact whose files are under ``payload_prefix`` on ``fs``.

    Served from the cache when an intact entry exists, else downloaded (with a progress bar
    on a terminal), checked against the manifest's file digests, and added to the cache.
    Raises :class:`IntegrityError` if the remote files do not match the manifest.
    """
    cached = lookup(digest, manifest)
    if cached is not None:
        return cached
    tmp = _temporary_folder()
    try:
        with Progress(f"download {digest[7:19]}", manifest.total_size) as bar:
            for entry in manifest.files:
                local = tmp / entry.path
                local.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f"{payload_prefix}/{entry.path}", str(local), callback=_callback(bar))
        try:
            # hashes every file, and records them as verified so the load that follows
            # need not hash them again (records survive the rename into the cache)
            check_files(tmp, manifest)
        except IntegrityError as exc:
            raise IntegrityError(
                f"the copy under {payload_prefix} is damaged: {exc.message}",
                hint="restore the version from another store, or save the model again",
            ) from None
        (tmp / MANIFEST_NAME).write_bytes(manifest_bytes)
        return _install(tmp, digest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def adopt(folder: Path, digest: str) -> Path:
    """Move a complete local artifact folder (just uploaded) into the cache; return its entry."""
    return _install(folder, digest)


def _install(folder: Path, digest: str) -> Path:
    """Rename ``folder`` into the cache and return the entry (one already there is kept)."""
    final = entry_path(digest)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(folder, final)
    except OSError:
        if (final / MANIFEST_NAME).is_file():
            # another process cached the same digest first; its entry is checked on each use
            return final
        _discard(final)  # a damaged leftover without a manifest: replace it
        os.rename(folder, final)
    return final


def _discard(path: Path) -> None:
    trash = path.with_name(f".trash-{uuid.uuid4().hex}")
    try:
        os.rename(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _temporary_folder() -> Path:
    root = artifacts_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
    path.mkdir()
    return path


def _callback(bar: Progress) -> Any:
    from fsspec.callbacks import Callback

    class _BarCallback(Callback):
        def __init__(self) -> None:
            super().__init__()
            self._seen = 0

        def call(self, *args: Any, **kwargs: Any) -> None:
            bar.update(self.value - self._seen)
            self._seen = self.value

    return _BarCallback()
