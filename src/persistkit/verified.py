"""A per-user record of files whose digest was already checked, so loads need not re-hash them.

A record names the digest with its algorithm (``blake3:<hex>`` or ``sha256:<hex>``, see
:attr:`persistkit.manifest.FileEntry.labelled`), so a record made under one algorithm never
vouches for an entry in another.

A file counts as verified only while its identity — device, inode, size, mtime and ctime (ns) —
is exactly what it was when its bytes were hashed. Any write through the file system sets ctime
(which no user can set back), and a replaced file has a new inode, so an ordinary modification
always forces a re-hash. Two races are closed on purpose:

* the identity is taken *before* hashing and must be unchanged *after* it, so a write during
  hashing is never recorded as verified;
* a write in the same clock tick as the last one could leave ctime unchanged on a file system
  with coarse timestamps, so a file is recorded only when its timestamps are settled: either
  its ctime is older than the tick (``_SETTLE_NS``), or the file system gives a fresh,
  fine-grained ctime to any change after a stat (Linux >= 6.13 "multigrain" timestamps on
  ext4, xfs, btrfs, tmpfs), which is probed once per device.

What it does not protect against (see ``docs/performance.md``): root resetting the clock,
writes to the raw block device, storage bit rot, a process that had the file mapped writable
when it was verified, and anyone who can write to the record itself (``$PERSISTKIT_HOME``).
Set ``PERSISTKIT_REHASH=1`` to always re-hash.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path

from persistkit import config
from persistkit.values import Value

RECORD_FORMAT = "v3"  # v3: the digest is labelled with its algorithm
MAX_RECORDS = 20_000
# Coarse file-system clocks tick at most every 10 ms (HZ=100); 100 ms leaves room for clock
# reads that lag the tick. Whole-second timestamps (FAT, old ext3, some network file systems)
# need more than the second they are rounded to.
_SETTLE_NS = 100_000_000
_SETTLE_COARSE_NS = 2_100_000_000
_FINE_DELTA_NS = 1_000_000

_fine_ctime_devices: dict[int, bool] = {}
_probe_lock = threading.Lock()


class FileIdentity(Value):
    """What must stay the same for a verified file to stay verified."""

    _fields = ("dev", "ino", "size", "mtime_ns", "ctime_ns")
    __slots__ = _fields
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    def __init__(self, dev: int, ino: int, size: int, mtime_ns: int, ctime_ns: int) -> None:
        self._set(dev, ino, size, mtime_ns, ctime_ns)

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def line(self, digest: str) -> str:
        return (
            f"{RECORD_FORMAT} {self.dev} {self.ino} {self.size} {self.mtime_ns} "
            f"{self.ctime_ns} {digest}\n"
        )


def rehash_forced() -> bool:
    """True when ``PERSISTKIT_REHASH`` asks for every file to be hashed on every load."""
    return os.environ.get("PERSISTKIT_REHASH", "") not in ("", "0")


def records_dir() -> Path:
    return config.home() / "verified"


def _record_path(identity: FileIdentity) -> Path:
    # keyed by device and inode, not path: a record made in a save's staging folder stays
    # valid after the folder is renamed into the store (renaming a folder leaves its files'
    # ctime alone)
    return records_dir() / f"{identity.dev:x}-{identity.ino:x}"


def already_verified(st: os.stat_result | FileIdentity, digest: str) -> bool:
    """True when the file ``st`` describes was verified to hold ``digest`` and is unchanged.

    Pass the ``fstat`` (or its :class:`FileIdentity`) of the descriptor the caller then reads:
    a ``stat`` of a path says nothing about what a later ``open`` of that path will find.
    """
    if rehash_forced():
        return False
    identity = st if isinstance(st, FileIdentity) else FileIdentity.of(st)
    try:
        # bytes, not text: a text file's "ascii" codec is a module to import (~0.3 ms)
        with open(_record_path(identity), "rb") as fh:
            return fh.read(512) == identity.line(digest).encode()
    except OSError:
        return False


def remember_verified(
    path: Path, digest: str, hashed: FileIdentity, *, stat_started_ns: int
) -> bool:
    """Record that ``path`` held ``digest`` when it had identity ``hashed``.

    ``hashed`` must have been read (a stat) before the bytes were hashed, and
    ``stat_started_ns`` is ``time.time_ns()`` just before that stat. Nothing is recorded if the
    file changed since, or if its timestamps are too fresh to prove a later change would show.
    Returns whether a record was written; failures (read-only home) only cost a later re-hash.
    """
    try:
        now = FileIdentity.of(os.stat(path))
    except OSError:
        return False
    return _record(now, digest, hashed, stat_started_ns)


def remember_verified_fd(
    fd: int, digest: str, hashed: FileIdentity, *, stat_started_ns: int
) -> bool:
    """:func:`remember_verified` for an open descriptor: ``hashed`` is the ``fstat`` of ``fd``
    taken before its bytes were hashed, and ``fd`` must still have it now."""
    try:
        now = FileIdentity.of(os.fstat(fd))
    except OSError:
        return False
    return _record(now, digest, hashed, stat_started_ns)


def _record(now: FileIdentity, digest: str, hashed: FileIdentity, stat_started_ns: int) -> bool:
    """Write the record that the file of identity ``hashed`` holds ``digest``, if it is
    unchanged (``now``) and its timestamps are settled."""
    try:
        if now != hashed or not _settled(hashed, stat_started_ns):
            return False
        folder = records_dir()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        record = _record_path(hashed)
        tmp = record.with_name(f".{record.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(hashed.line(digest).encode("ascii"))
        os.replace(tmp, record)
    except OSError:
        return False
    _prune_now_and_then(folder)
    return True


_writes = 0


def _prune_now_and_then(folder: Path) -> None:
    """Keep the record bounded: records of deleted files are never looked up again, so once
    there are more than ``MAX_RECORDS``, drop the oldest half (that costs at most a re-hash)."""
    global _writes
    _writes += 1
    if _writes % 256:
        return
    try:
        with os.scandir(folder) as it:
            entries = [(e.stat().st_mtime_ns, e.path) for e in it if not e.name.startswith(".")]
        if len(entries) <= MAX_RECORDS:
            return
        entries.sort()
        for _mtime, path in entries[: len(entries) // 2]:
            with contextlib.suppress(OSError):
                os.unlink(path)
    except OSError:
        pass


def forget_verified(path: Path) -> None:
    """Drop the record of ``path`` (if any), e.g. when it failed a check."""
    with contextlib.suppress(OSError):
        forget_identity(FileIdentity.of(os.stat(path)))


def forget_identity(identity: FileIdentity) -> None:
    """Drop the record of the file with ``identity`` (if any), e.g. when it failed a check."""
    with contextlib.suppress(OSError):
        _record_path(identity).unlink()


def _settled(identity: FileIdentity, stat_started_ns: int) -> bool:
    coarse = identity.ctime_ns % 1_000_000_000 == 0
    age = stat_started_ns - identity.ctime_ns
    if age > (_SETTLE_COARSE_NS if coarse else _SETTLE_NS):
        return True
    # only a probe already made (by a save, in its staging folder) counts: loads never write
    # scratch files into artifact folders
    return not coarse and _fine_ctime_devices.get(identity.dev, False)


def fine_ctime_after_stat(directory: Path, dev: int) -> bool:
    """Whether the file system of ``directory`` gives a distinct ctime to any change made
    after a stat, however soon (probed once per device and process with a scratch file in
    ``directory``, which must be on device ``dev``)."""
    with _probe_lock:
        known = _fine_ctime_devices.get(dev)
        if known is not None:
            return known
        result = _probe_fine_ctime(directory, dev)
        _fine_ctime_devices[dev] = result
        return result


def _probe_fine_ctime(directory: Path, dev: int) -> bool:
    try:
        fd, name = tempfile.mkstemp(prefix=".ctime-probe-", dir=directory)
    except OSError:
        return False  # read-only folder: fall back to waiting out the tick
    try:
        if os.fstat(fd).st_dev != dev:
            return False
        os.write(fd, b"x")  # the creation time may be coarse; measure changes after a stat
        for _ in range(3):
            before = os.fstat(fd).st_ctime_ns
            os.write(fd, b"x")
            delta = os.fstat(fd).st_ctime_ns - before
            # a coarse clock moves in whole ticks (>= 1 ms) or not at all
            if not 0 < delta < _FINE_DELTA_NS:
                return False
        return True
    finally:
        os.close(fd)
        os.unlink(name)
