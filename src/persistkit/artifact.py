"""Artifact directories on local disk: hashing payload files (while they are written),
checking them, publishing."""

from __future__ import annotations

import _thread
import mmap
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from persistkit.digests import hash_descriptor, new_hasher, save_algorithm
from persistkit.errors import ArtifactError
from persistkit.manifest import MANIFEST_NAME, FileEntry, Manifest, check_relative_path
from persistkit.payload import PayloadFiles, not_regular, open_payload, refuse_special_entries
from persistkit.verified import (
    FileIdentity,
    fine_ctime_after_stat,
    rehash_forced,
    remember_verified,
)
from persistkit.writer import WriterRegistry

if TYPE_CHECKING:
    from persistkit.digests import Hasher

# 1 MiB reads stay in the CPU cache between the page-cache copy and the hash (measured fastest)
# how long the save-time hasher sleeps when it has caught up with the writer, how often it
# looks for new files, and the least it hashes at once (the rest waits for the end)
# (measured on 2 cores, 200 MB torch/safetensors saves: 5 ms / 4 MiB saved the most time)
_POLL_SECONDS = 0.005
_RESCAN_SECONDS = 0.02
_MIN_BATCH = 4 * 1024 * 1024
# how far behind the first hole of a preallocated file the hasher stays (larger than any
# file-system block or huge page that could be reported as data while partly written)
_PREALLOCATION_LAG = 4 * 1024 * 1024


def hash_file(path: Path, algorithm: str = "sha256") -> tuple[int, str]:
    """Return ``(size, hex digest)`` of a regular file in ``algorithm`` (``sha256`` or
    ``blake3``), reading it in large chunks (a link or special file at ``path`` is refused,
    see :mod:`persistkit.payload`)."""
    with open_payload(path) as opened:
        return hash_descriptor(algorithm, opened.fd, opened.size)


def file_entries(
    directory: Path, names: Iterable[str], algorithm: str | None = None
) -> list[FileEntry]:
    """Hash each listed file of ``directory`` into manifest entries (in the given order), in
    ``algorithm`` (by default :func:`persistkit.digests.save_algorithm`)."""
    algorithm = algorithm or save_algorithm()
    entries = []
    for name in names:
        path = _listed_file(directory, name)
        size, digest = hash_file(path, algorithm)
        entries.append(FileEntry.of(name, size, algorithm, digest))
    return entries


def _listed_file(directory: Path, name: str) -> Path:
    check_relative_path(name)
    path = directory / name
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is None or stat.S_ISDIR(mode):
        raise ArtifactError(f"the backend reported writing {name!r} but it is not there")
    if not stat.S_ISREG(mode):
        raise not_regular(name, mode, where="the artifact being saved")
    return path


def unreported_files(directory: Path, reported: Iterable[str]) -> list[str]:
    """Regular files under ``directory`` that are not in ``reported`` (relative names,
    sorted), so that everything saved into an artifact is listed and hashed — e.g. the
    companion ``.npy`` files an old joblib writes beside its pickle. A link or special file
    written into the artifact is refused."""
    refuse_special_entries(directory)
    known = set(reported)
    root = os.fspath(directory)
    return sorted(
        name
        for name in (
            os.path.relpath(p, root).replace(os.sep, "/") for p in _regular_files(directory)
        )
        if name not in known
    )


@dataclass
class _Tail:
    """A file being hashed while it grows: an open descriptor, the digest so far, and how far
    it has got."""

    fd: int
    digest: Hasher
    pos: int = 0
    broken: bool = False


@dataclass(frozen=True)
class HashedFile:
    """A payload file's manifest entry plus the identity its bytes were hashed under."""

    entry: FileEntry
    identity: FileIdentity
    stat_started_ns: int


class PayloadHasher:
    """Hashes the files a backend writes into ``directory`` *while* it writes them.

    With ``follow=True`` a background thread tails every regular file that appears under the
    directory and feeds its bytes to the hash as soon as they reach the page cache, so the one
    hashing pass overlaps serialization on the second core instead of following it, and no
    byte is copied in memory beyond a 1 MiB read buffer. That is correct only for backends
    that write each file front to back and never seek back to patch it
    (``BackendInfo.append_only``); a file that shrinks, or that the thread could not follow,
    is hashed again from the start by :meth:`entries`. With ``follow=False`` every file is
    hashed after the backend returns.

    Every file is hashed with ``algorithm`` (by default
    :func:`persistkit.digests.save_algorithm`, chosen once for the whole save).

    Use as a context manager around the backend's save, then call :meth:`entries`.
    """

    def __init__(self, directory: Path, *, follow: bool, algorithm: str | None = None) -> None:
        self.directory = directory
        self.follow = follow
        self.algorithm = algorithm or save_algorithm()
        self._tails: dict[tuple[int, int], _Tail] = {}
        self._stop = threading.Event()
        self._running: _thread.LockType | None = None
        self._failed = False
        # files a backend writes through persistkit.payload_writer hash themselves (writer.py)
        self._writers = WriterRegistry(self.algorithm)

    def __enter__(self) -> PayloadHasher:
        self._writers.__enter__()
        if self.follow:
            # a bare thread: threading.Thread.start() would wait (ms, on a busy machine) until
            # the new thread runs, and small saves would pay that for nothing
            self._running = _thread.allocate_lock()
            self._running.acquire()
            _thread.start_new_thread(self._run, ())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._writers.__exit__(*exc_info)
        self._halt()
        if exc_info[0] is not None:
            self._close()

    def entries(self, names: Iterable[str]) -> list[HashedFile]:
        """Finish hashing the listed files (relative names) and return their entries."""
        self._halt()
        try:
            hashed = [self._finish(name) for name in names]
        finally:
            self._close()
        if hashed:  # learn, while still in the staging folder, if fresh records can be kept
            fine_ctime_after_stat(self.directory, hashed[0].identity.dev)
        return hashed

    # -- the follower thread ---------------------------------------------------------------
    def _run(self) -> None:
        running = self._running
        try:
            next_scan = 0.0
            while not self._stop.is_set():
                if not self._tails or time.monotonic() >= next_scan:
                    self._discover()
                    next_scan = time.monotonic() + _RESCAN_SECONDS
                if not self._advance_all():
                    self._stop.wait(_POLL_SECONDS)
        except Exception:
            # never let a follower problem cost correctness: hash everything afterwards
            self._failed = True
        finally:
            if running is not None:
                running.release()

    # Every system call gives up the GIL, and winning it back from a backend busy in Python
    # (joblib's pickler is pure Python) can take a whole switch interval (5 ms) and stalls
    # the backend too. So the loop makes few calls: it rescans the folder only now and then,
    # checks each known file with one fstat, and hashes only worthwhile batches.
    def _discover(self) -> None:
        for path in _regular_files(self.directory):
            self._tail_for(path)

    def _advance_all(self) -> bool:
        progressed = False
        for key, tail in list(self._tails.items()):
            if tail.broken or self._writers.is_written_by_writer(key):
                continue
            st = os.fstat(tail.fd)
            if st.st_size < tail.pos:
                tail.broken = True  # truncated and rewritten: hash it from scratch later
                continue
            if st.st_size - tail.pos < _MIN_BATCH:
                continue
            written = _written_prefix(tail.fd, st, tail.pos)
            if written - tail.pos >= _MIN_BATCH:
                tail.pos = _hash_mapped(tail.fd, tail.digest, tail.pos, written)
                progressed = True
        return progressed

    def _tail_for(self, path: str) -> _Tail | None:
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        key = (st.st_dev, st.st_ino)
        if self._writers.is_written_by_writer(key):
            return None  # hashed from memory by its writer
        tail = self._tails.get(key)
        if tail is not None and os.fstat(tail.fd).st_nlink > 0:
            return tail
        if tail is not None:  # deleted, and its inode number reused by a new file
            os.close(tail.fd)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != key:
            os.close(fd)
            return None
        tail = self._tails[key] = _Tail(fd, new_hasher(self.algorithm))
        return tail

    def _halt(self) -> None:
        self._stop.set()
        if self._running is not None:
            self._running.acquire()  # released by the thread when it ends
            self._running = None

    def _close(self) -> None:
        for tail in self._tails.values():
            os.close(tail.fd)
        self._tails.clear()

    # -- finishing ---------------------------------------------------------------------------
    def _finish(self, name: str) -> HashedFile:
        path = _listed_file(self.directory, name)
        written = self._writers.written(path)
        if written is not None and written.algorithm == self.algorithm:
            # hashed from memory while written, and unchanged since
            entry = FileEntry.of(name, written.size, written.algorithm, written.digest)
            return HashedFile(entry, written.identity, written.stat_ns)
        started = time.time_ns()
        st = os.stat(path)
        tail = None if self._failed else self._tails.get((st.st_dev, st.st_ino))
        if tail is not None and not tail.broken and os.fstat(tail.fd).st_nlink > 0:
            # the writer is done: the stat above is the identity the finished hash belongs to
            pos = _hash_mapped(tail.fd, tail.digest, tail.pos, st.st_size)
            if pos == st.st_size == os.fstat(tail.fd).st_size:
                entry = FileEntry.of(name, pos, self.algorithm, tail.digest.hexdigest())
                return HashedFile(entry, FileIdentity.of(st), started)
        size, digest = hash_file(path, self.algorithm)
        return HashedFile(
            FileEntry.of(name, size, self.algorithm, digest), FileIdentity.of(st), started
        )


def _hash_mapped(fd: int, digest: Hasher, start: int, stop: int) -> int:
    """Feed ``digest`` bytes ``start:stop`` of ``fd`` straight from the page cache (no copy).

    One ``update`` call covers everything written so far, and hashlib (and blake3) releases
    the GIL for all of it, so hashing proceeds on the other core even while a backend holds
    the GIL in a long C call; small reads would each have to win the GIL back first. Only for
    files in a private staging folder whose writer never shrinks them: reading a mapped page
    beyond the end of a truncated file kills the process (SIGBUS), which is why loads use
    ``preadv``.
    """
    if stop <= start:
        return start
    base = start - start % mmap.ALLOCATIONGRANULARITY
    with (
        mmap.mmap(fd, stop - base, offset=base, access=mmap.ACCESS_READ) as mapped,
        memoryview(mapped) as view,
        view[start - base :] as part,
    ):
        digest.update(part)
    return stop


def _written_prefix(fd: int, st: os.stat_result, pos: int) -> int:
    """How far an append-only writer has surely written ``fd``.

    Usually the size. But some writers first extend the file to its final size (``ftruncate``,
    as safetensors does) and then fill it in order: the unwritten rest is a hole, so stop
    ``_PREALLOCATION_LAG`` short of the first hole (or of the allocated bytes, where holes
    cannot be seen) — the block being filled right now may be only partly written.
    """
    size = st.st_size
    try:
        hole = os.lseek(fd, pos, os.SEEK_HOLE)
    except (OSError, AttributeError):
        hole = size
    allocated = st.st_blocks * 512
    frontier = min(hole, allocated)
    if frontier >= size:
        return size
    return max(pos, frontier - _PREALLOCATION_LAG)


def _regular_files(directory: Path) -> list[str]:
    found = []
    stack = [os.fspath(directory)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for item in it:
                    if item.is_dir(follow_symlinks=False):
                        stack.append(item.path)
                    elif item.is_file(follow_symlinks=False):
                        found.append(item.path)
        except FileNotFoundError:
            continue
    return found


def remember_saved(directory: Path, hashed: Iterable[HashedFile]) -> None:
    """After publishing, record the files hashed while saving as verified, so the first load
    of a fresh save does not hash them again (only if they are unchanged since)."""
    if rehash_forced():
        return
    for item in hashed:
        remember_verified(
            directory / item.entry.path,
            item.entry.labelled,
            item.identity,
            stat_started_ns=item.stat_started_ns,
        )


def check_files(directory: Path, manifest: Manifest, *, rehash: bool = False) -> None:
    """Raise :class:`IntegrityError` naming the first file whose size or digest is wrong, and
    :class:`FormatError` for a link or special file in the artifact.

    A file verified earlier and unchanged since (see :mod:`persistkit.verified`) is not hashed
    again, unless ``rehash`` (or ``PERSISTKIT_REHASH=1``) asks for every byte to be read.
    Loads do not use this: they keep the files open (:class:`PayloadFiles`) and read what
    they checked.
    """
    with PayloadFiles.open_artifact(directory, manifest) as files:
        files.verify(rehash=rehash)


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


def refuse_existing(final: Path) -> None:
    """Raise :class:`ArtifactError` if ``final`` exists: saved artifacts are never replaced."""
    if final.exists():
        raise ArtifactError(
            f"{final} already exists; persistkit never overwrites a saved artifact",
            hint="save to a new path, or into a store where each save makes a new version",
        )


def publish_directory(staging: Path, final: Path) -> None:
    """Atomically move a complete artifact into place; refuse to replace an existing one."""
    try:
        refuse_existing(final)  # checked again: another writer may have published meanwhile
    except ArtifactError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.rename(staging, final)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArtifactError(f"could not publish the artifact at {final}: {exc}") from exc
