"""Writing a payload file while hashing its bytes from memory, on another core.

A save that records a digest (BLAKE3, or sha256; see :mod:`persistkit.digests`) must pass
every byte through the hash once. Reading the bytes
back from the page cache after (or while) the backend writes them costs a second pass over
memory and page faults, and the reader fights the writer over the same pages. A
:class:`PayloadWriter` is the file object the backend writes to: each buffer handed to
``write`` is written to the file by the calling thread and hashed by a background thread at
the same time (hashlib and blake3 release the GIL for large buffers), straight from the
memory the backend handed over. BLAKE3 runs single-threaded there: on two cores the writer
has the other one, and BLAKE3 on one core (~4.4 GB/s) already keeps up with the write.

Hashing later than the ``write`` call returns is only safe for memory that stays unchanged
until the file is closed:

* ``bytes`` objects (immutable; a reference is kept until hashed; at most
  :data:`MAX_QUEUED` bytes of them wait, then ``write`` waits for the hasher),
* memory the caller declares ``stable`` when opening (e.g. a module's tensors, which the
  model keeps alive and nobody writes during a save),
* small buffers, which are copied.

Any other large buffer (a memoryview of memory the writer may reuse) is hashed *during* the
``write`` call, alongside the write, which returns only when both are done.

Opened inside a save (:class:`persistkit.artifact.PayloadHasher`), the digest goes straight
into the manifest and the file is not read again.
"""

from __future__ import annotations

import _thread
import collections
import contextvars
import io
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from persistkit.digests import new_hasher, save_algorithm
from persistkit.verified import FileIdentity

#: buffers smaller than this are copied and hashed later (cheaper than a hand-over)
SMALL = 256 * 1024
#: the most bytes of copies (and ``bytes`` objects) waiting to be hashed; then ``write`` waits
MAX_QUEUED = 64 * 1024 * 1024
_O_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


class WrittenFile:
    """What a closed :class:`PayloadWriter` hashed: size, algorithm, hex digest and the file's
    identity when it was closed (the digest holds only while the identity is unchanged)."""

    __slots__ = ("algorithm", "digest", "identity", "size", "stat_ns")

    def __init__(
        self, size: int, algorithm: str, digest: str, identity: FileIdentity, stat_ns: int
    ) -> None:
        self.size = size
        self.algorithm = algorithm
        self.digest = digest
        self.identity = identity
        self.stat_ns = stat_ns


class _Registry:
    """The writers of one save: the algorithm they hash with, their files' (device, inode),
    and what each hashed."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self.open: set[tuple[int, int]] = set()
        self.written: dict[tuple[int, int], WrittenFile] = {}
        self.lock = threading.Lock()


_CURRENT: contextvars.ContextVar[_Registry | None] = contextvars.ContextVar(
    "persistkit_payload_writers", default=None
)


class PayloadWriter(io.RawIOBase):
    """A new file, written front to back, whose digest is computed from the buffers handed to
    :meth:`write` (see the module docs). Use as a context manager, or call :meth:`close`;
    :attr:`digest` (hex, in :attr:`algorithm`) and :attr:`size` are known after closing.

    ``algorithm``: ``sha256`` or ``blake3``; by default the save's (inside one), else
    :func:`persistkit.digests.save_algorithm`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        stable: Iterable[Any] = (),
        algorithm: str | None = None,
    ) -> None:
        super().__init__()
        self._registry = _CURRENT.get()
        if algorithm is None:
            registry = self._registry
            algorithm = registry.algorithm if registry is not None else save_algorithm()
        self.algorithm = algorithm
        self._digest = new_hasher(algorithm)
        self.name = os.fspath(path)
        self._fd = os.open(self.name, _O_FLAGS, 0o644)
        self._pos = 0
        self._stable = _address_ranges(stable)
        # (buffer, event set once it is hashed or None, bytes it counts towards MAX_QUEUED)
        self._pending: collections.deque[tuple[Any, threading.Event | None, int]] = (
            collections.deque()
        )
        self._queued = 0
        self._small = bytearray()
        self._cond = threading.Condition()
        self._failed: BaseException | None = None
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._closing = False
        self.digest: str | None = None
        self.size: int | None = None
        st = os.fstat(self._fd)
        self._key = (st.st_dev, st.st_ino)
        if self._registry is not None:
            with self._registry.lock:
                self._registry.open.add(self._key)
        _thread.start_new_thread(self._hash_loop, ())

    # -- io.RawIOBase ---------------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def write(self, data: Any) -> int:
        view = memoryview(data)
        n = view.nbytes
        if not n:
            return 0
        if view.ndim != 1 or view.format not in ("B", "b", "c") or not view.c_contiguous:
            view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        if n < SMALL:
            self._small += view
            if len(self._small) >= SMALL:
                self._hand_over(bytes(self._small), None, counted=True)
                self._small.clear()
            self._write_all(view)
            return n
        self._flush_small()
        if isinstance(data, bytes):
            self._hand_over(data, None, counted=True)
            self._write_all(view)
        elif self._is_stable(view):
            self._hand_over(view, None, counted=False)
            self._write_all(view)
        else:  # memory the caller may reuse: hash it now, alongside the write
            done = threading.Event()
            self._hand_over(view, done, counted=False)
            self._write_all(view)
            done.wait()
            self._raise_if_failed()
        return n

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._flush_small()
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._done.acquire()  # the hasher has taken everything
            self._raise_if_failed()
            self.digest = self._digest.hexdigest()
            self.size = self._pos
            stat_ns = _now_ns()  # before the stat: see persistkit.verified (settled times)
            st = os.fstat(self._fd)
            if self._registry is not None:
                written = WrittenFile(
                    self._pos, self.algorithm, self.digest, FileIdentity.of(st), stat_ns
                )
                with self._registry.lock:
                    self._registry.written[self._key] = written
        finally:
            os.close(self._fd)
            super().close()

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is not None and not self.closed:
            with self._cond:  # stop the hasher; the save fails anyway
                self._pending.clear()
                self._closing = True
                self._cond.notify_all()
            self._done.acquire()
            os.close(self._fd)
            io.RawIOBase.close(self)
            return
        self.close()

    # -- internals ------------------------------------------------------------------------
    def _write_all(self, view: memoryview) -> None:
        while view.nbytes:
            written = os.write(self._fd, view)
            self._pos += written
            view = view[written:]

    def _flush_small(self) -> None:
        if self._small:
            self._hand_over(bytes(self._small), None, counted=True)
            self._small.clear()

    def _hand_over(self, buf: Any, done: threading.Event | None, *, counted: bool) -> None:
        size = len(buf) if counted else 0
        with self._cond:
            while counted and self._queued and self._queued + size > MAX_QUEUED:
                self._cond.wait()
            self._raise_if_failed()
            self._queued += size
            self._pending.append((buf, done, size))
            self._cond.notify_all()

    def _hash_loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if not self._pending:
                        return
                    buf, done, size = self._pending.popleft()
                try:
                    self._digest.update(buf)
                except BaseException as exc:  # reported by the next write or close
                    self._failed = exc
                finally:
                    if done is not None:
                        done.set()
                    with self._cond:
                        self._queued -= size
                        self._cond.notify_all()
                if self._failed is not None:
                    return
        finally:
            self._done.release()

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise RuntimeError(f"hashing {self.name} failed: {self._failed}")

    def _is_stable(self, view: memoryview) -> bool:
        if not self._stable:
            return False
        start = _address_of(view)
        end = start + view.nbytes
        return any(lo <= start and end <= hi for lo, hi in self._stable)


def _now_ns() -> int:
    import time

    return time.time_ns()


def _address_of(view: memoryview) -> int:
    import numpy as np

    return int(np.frombuffer(view, dtype=np.uint8).ctypes.data)


def _address_ranges(stable: Iterable[Any]) -> list[tuple[int, int]]:
    """``(start, end)`` addresses of buffers (anything ``memoryview`` takes) or of objects
    that say where their memory is (``data_ptr()`` and ``nbytes()``, as torch storages do)."""
    ranges = []
    for item in stable:
        if hasattr(item, "data_ptr") and hasattr(item, "nbytes"):
            nbytes = item.nbytes() if callable(item.nbytes) else item.nbytes
            start = int(item.data_ptr())
        else:
            view = memoryview(item)
            nbytes = view.nbytes
            start = _address_of(view) if nbytes else 0
        if nbytes:
            ranges.append((start, start + int(nbytes)))
    return ranges


def payload_writer(path: str | os.PathLike[str], *, stable: Iterable[Any] = ()) -> PayloadWriter:
    """Open a new payload file for a backend to write front to back; its digest (the save's
    algorithm, see :mod:`persistkit.digests`) is computed from the buffers written, on
    another core, so the save does not read the file again.

    ``stable``: buffers (or torch storages) that stay alive and unchanged until the file is
    closed; large writes from inside them are hashed after ``write`` returns, the rest during
    it (see :mod:`persistkit.writer`). Refuses to replace an existing file."""
    return PayloadWriter(path, stable=stable)


class WriterRegistry:
    """Collects what the payload writers opened inside it hashed (used by a save), all with
    ``algorithm``."""

    def __init__(self, algorithm: str) -> None:
        self._registry = _Registry(algorithm)
        self._token: contextvars.Token[_Registry | None] | None = None

    def __enter__(self) -> WriterRegistry:
        self._token = _CURRENT.set(self._registry)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None

    def is_written_by_writer(self, key: tuple[int, int]) -> bool:
        with self._registry.lock:
            return key in self._registry.open

    def written(self, path: Path) -> WrittenFile | None:
        """What a writer hashed for the file now at ``path``, if it is unchanged since."""
        st = os.stat(path, follow_symlinks=False)
        with self._registry.lock:
            found = self._registry.written.get((st.st_dev, st.st_ino))
        if found is None or found.identity != FileIdentity.of(st):
            return None
        return found
