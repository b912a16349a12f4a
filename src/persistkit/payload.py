"""Payload files opened once: the one place where a load turns a path into bytes.

The invariant (``docs/security.md``): every file a load reads — each file an artifact's
manifest lists, the manifest itself, a bare model file, an old joblib companion ``.npy`` — is
opened exactly once, without following symlinks (``O_NOFOLLOW``, also for every folder between
the artifact and the file), without blocking (``O_NONBLOCK``: a FIFO can never make a load
hang), and is refused unless ``fstat`` of that descriptor says it is a regular file. Its digest
(sha256 or BLAKE3, as its manifest entry says) is checked from that descriptor, and the backend
reads from that descriptor too (or from the very bytes that were hashed). A file replaced after
its hash was checked is therefore never what loads with the trust that a seal grants: the
replacement is a different inode, which the load never opens.

An in-place write to the same inode after the check is caught by comparing the descriptor's
``fstat`` identity (device, inode, size, mtime, ctime) before and after the read; a read into
memory is checked before anything is deserialized. Libraries that insist on a path (torch's
and safetensors' memory maps) get ``/proc/self/fd/N``, which names the opened inode, not the
folder entry.

Non-regular entries anywhere inside an artifact folder (symlinks, FIFOs, sockets, devices) are
refused even when the manifest does not list them, so ``persistkit scan`` and ``load`` agree.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import io
import mmap
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

from persistkit.digests import hash_descriptor, hexdigest_of
from persistkit.errors import FormatError, IntegrityError, ManifestError
from persistkit.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, FileEntry, Manifest
from persistkit.verified import (
    FileIdentity,
    already_verified,
    forget_identity,
    rehash_forced,
    remember_verified_fd,
)

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_FILE_FLAGS = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK | _O_NOCTTY
_DIR_FLAGS = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_DIRECTORY
# the most one read(2) returns on Linux
_MAX_READ = 0x7FFFF000
if TYPE_CHECKING:  # only annotations use it (a TypeVar is ~50 us to make at import)
    from typing import TypeVar

    _Data = TypeVar("_Data", bytes, bytearray)
# an artifact is a handful of files; a folder of more entries than this is not one
_MAX_ENTRIES = 100_000

_REFUSAL_HINT = (
    "persistkit reads only regular files: replace the entry by the real file (a copy, not a "
    "link); if the link is yours and you trust its target, load the target itself"
)


def kind_of(mode: int) -> str:
    """Name the file type of ``mode`` (an ``st_mode``) for an error message."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def not_regular(name: str, mode: int, *, where: str = "") -> FormatError:
    """The error for an entry that is not a regular file."""
    place = f" in {where}" if where else ""
    return FormatError(
        f"{name}{place} is {kind_of(mode)}, not a regular file; persistkit refuses it "
        "(a link or special file could make the load read something other than what was "
        "checked, or block forever)",
        hint=_REFUSAL_HINT,
    )


# -- opening ---------------------------------------------------------------------------------


def _open_entry(name: str, dir_fd: int | None, shown: str, where: str) -> int:
    """Open the entry ``name`` (relative to ``dir_fd``, or a path) as a regular file.

    ``lstat`` first, so a FIFO or device is never even opened; then ``open`` with
    ``O_NOFOLLOW | O_NONBLOCK`` and ``fstat`` of the descriptor, which must be the same
    regular file (an entry replaced between the two calls is refused as changed).
    """
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except NotADirectoryError:
        raise FileNotFoundError(errno.ENOENT, "not found", shown) from None
    if not stat.S_ISREG(before.st_mode):
        raise not_regular(shown, before.st_mode, where=where)
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        # replaced by a link (ELOOP) or a socket (ENXIO) since the lstat above
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise not_regular(shown, stat.S_IFLNK, where=where) from None
        if exc.errno == errno.ENXIO:
            raise not_regular(shown, stat.S_IFSOCK, where=where) from None
        raise
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode):
            raise not_regular(shown, after.st_mode, where=where)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise IntegrityError(
                f"{shown} changed while it was being opened",
                hint="something is modifying the artifact; load it again when it is done",
            )
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_folder(directory: Path) -> int:
    """Open the folder an artifact (or bare file) is in; the folder itself may be reached
    through links (the user chose that path), what lies inside it may not."""
    return os.open(directory, os.O_RDONLY | _O_CLOEXEC | _O_DIRECTORY)


def _open_relative(directory: Path, name: str, where: str) -> int:
    """Open ``directory/name`` (a checked relative path), refusing links and special files
    at every step below ``directory``."""
    parts = PurePosixPath(name).parts
    dir_fd = _open_folder(directory)
    try:
        for i, part in enumerate(parts[:-1]):
            shown = "/".join(parts[: i + 1])
            try:
                st = os.stat(part, dir_fd=dir_fd, follow_symlinks=False)
            except NotADirectoryError:
                raise FileNotFoundError(errno.ENOENT, "not found", name) from None
            if not stat.S_ISDIR(st.st_mode):
                if stat.S_ISREG(st.st_mode):
                    raise FileNotFoundError(errno.ENOENT, "not found", name)
                raise not_regular(shown, st.st_mode, where=where)
            inner = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = inner
        return _open_entry(parts[-1], dir_fd, name, where)
    finally:
        os.close(dir_fd)


class PayloadFile:
    """One payload file, opened once. Hashing and reading both go through :attr:`fd`.

    ``entry`` is what the manifest says about it (``None`` for a bare file, which has no
    recorded hash). ``identity`` is the ``fstat`` of the descriptor when it was opened; the
    file counts as unchanged only while the descriptor still has that identity.
    """

    def __init__(self, name: str, path: Path, fd: int, entry: FileEntry | None) -> None:
        self.name = name
        self.path = path
        self.fd = fd
        self.entry = entry
        self.opened_ns = time.time_ns()  # before the fstat, as the verified record needs
        self.identity = FileIdentity.of(os.fstat(fd))
        self.checked = False  # the descriptor's bytes were shown to match entry.digest

    @property
    def size(self) -> int:
        return self.identity.size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> PayloadFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- checks ----------------------------------------------------------------------------
    def check_size(self) -> None:
        """Raise :class:`IntegrityError` if the size differs from the manifest's."""
        if self.entry is not None and self.size != self.entry.size:
            raise IntegrityError(
                f"{self.name!r} is {self.size} bytes but the manifest says {self.entry.size}: "
                "the file is truncated or was modified",
                hint="restore the artifact from its store or save the model again",
            )

    def verify(self, *, rehash: bool = False) -> None:
        """Check the digest of the descriptor's bytes against the manifest (sizes first), in
        the entry's own algorithm.

        A file whose identity (``fstat`` of this descriptor) matches a verified record is not
        hashed again unless ``rehash``; the bytes read later come from this descriptor.
        """
        if self.entry is None or self.checked:
            return
        self.check_size()
        if not rehash and already_verified(self.identity, self.entry.labelled):
            self.checked = True
            return
        self._compare(hash_opened(self))
        self.ensure_unchanged()
        if not rehash_forced():
            remember_verified_fd(
                self.fd, self.entry.labelled, self.identity, stat_started_ns=self.opened_ns
            )

    def _compare(self, got: str) -> None:
        assert self.entry is not None
        if got != self.entry.digest:
            forget_identity(self.identity)
            raise IntegrityError(
                f"{self.name!r} does not match its {self.entry.algorithm} in the manifest "
                f"(expected {self.entry.digest[:12]}…, got {got[:12]}…): it was modified",
                hint="do not load a tampered file; restore it or save the model again",
            )
        self.checked = True

    def ensure_unchanged(self) -> None:
        """Raise :class:`IntegrityError` if the opened file was written to since it was
        opened (its ``fstat`` identity moved: size, mtime or ctime)."""
        if FileIdentity.of(os.fstat(self.fd)) != self.identity:
            forget_identity(self.identity)
            raise IntegrityError(
                f"{self.name!r} was modified while it was being loaded",
                hint="something is writing to the artifact; load it again when it is done",
            )

    # -- reading ---------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        """The whole file, read from the descriptor. A listed file not yet checked is hashed
        from these very bytes (so what is returned is what was hashed); any file is refused
        if it changed while being read."""
        return self._read_checked(_pread_all)

    def read_writable(self) -> bytearray:
        """:meth:`read_bytes` into a ``bytearray`` only the caller holds: a reader may then
        hand out writable numpy views of its regions instead of copying each (the restricted
        joblib reader does)."""
        return self._read_checked(_pread_into)

    def _read_checked(self, read: Callable[[int, int], _Data]) -> _Data:
        data = read(self.fd, self.size)
        if len(data) != self.size or os.pread(self.fd, 1, self.size):
            self.ensure_unchanged()
            raise IntegrityError(f"{self.name!r} changed size while it was being read")
        self.ensure_unchanged()
        if self.entry is not None and not self.checked:
            self.check_size()
            self._compare(hexdigest_of(self.entry.algorithm, data))
        return data

    def head(self, count: int) -> bytes:
        """The first ``count`` bytes (fewer if the file is shorter)."""
        return os.pread(self.fd, count, 0)

    def contains(self, marker: bytes) -> bool:
        """Whether ``marker`` occurs anywhere in the file (searched in a read-only map of the
        descriptor: no copy of the file in memory)."""
        if self.size == 0:
            return False
        with mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ) as mapped:
            return mapped.find(marker) >= 0

    def stream(self) -> BinaryIO:
        """A file object reading this file from the start, through a duplicate of the
        descriptor (close it when done). For readers that stream (pickle of a large model)."""
        dup = os.dup(self.fd)
        os.lseek(dup, 0, os.SEEK_SET)
        fileobj = os.fdopen(dup, "rb")
        return fileobj

    def named_bytes(self) -> BinaryIO:
        """:meth:`read_bytes` as a file object whose ``name`` is the real path (readers look
        for old joblib companion files beside it)."""
        fileobj = io.BytesIO(self.read_bytes())
        fileobj.name = str(self.path)
        return fileobj

    def bound_path(self) -> str:
        """A path that names this opened file itself, not the folder entry it came from, for
        libraries that only take paths (to memory-map them)."""
        for folder in ("/proc/self/fd", "/dev/fd"):
            if os.path.isdir(folder):
                return f"{folder}/{self.fd}"
        raise FormatError(  # pragma: no cover - every supported system has one of them
            f"cannot read {self.name} safely here: this system names no open files",
            hint="run persistkit on Linux or macOS",
        )


def _pread_all(fd: int, size: int) -> bytes:
    """``size`` bytes of ``fd`` from offset 0 (fewer at end of file), as one ``bytes`` object
    built in place when one read can return it all (no second copy of a large payload)."""
    first = os.pread(fd, min(size, _MAX_READ), 0)
    if len(first) == size or not first:
        return first
    pieces = [first]
    pos = len(first)
    while pos < size:
        piece = os.pread(fd, min(size - pos, _MAX_READ), pos)
        if not piece:
            break
        pieces.append(piece)
        pos += len(piece)
    return b"".join(pieces)


def _pread_into(fd: int, size: int) -> bytearray:
    """``size`` bytes of ``fd`` from offset 0 (fewer at end of file), read straight into one
    ``bytearray`` (writable, one copy)."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    pos = 0
    while pos < size:
        got = os.preadv(fd, [view[pos : pos + _MAX_READ]], pos)
        if not got:
            break
        pos += got
    view.release()
    if pos < size:
        del buffer[pos:]
    return buffer


def hash_opened(opened: PayloadFile) -> str:
    """The hex digest of an opened file's bytes in its entry's algorithm (sha256 for a file
    the manifest does not list), read from its descriptor."""
    algorithm = opened.entry.algorithm if opened.entry is not None else "sha256"
    return hash_descriptor(algorithm, opened.fd, opened.size)[1]


# -- an artifact's files, opened together ----------------------------------------------------


class PayloadFiles:
    """Every file one load reads, opened once and closed together.

    For an artifact: each file its manifest lists. For a bare file: the file itself, plus
    joblib companion files opened beside it on demand.
    """

    def __init__(self, directory: Path, manifest: Manifest, *, bare: bool) -> None:
        self.directory = directory
        self.manifest = manifest
        self.bare = bare
        self.files: dict[str, PayloadFile] = {}

    @classmethod
    def open_artifact(cls, directory: Path, manifest: Manifest) -> PayloadFiles:
        """Open every file ``manifest`` lists in the artifact folder ``directory``, after
        refusing any link or special file anywhere in the folder."""
        refuse_special_entries(directory)
        group = cls(directory, manifest, bare=False)
        try:
            for entry in manifest.files:
                group.files[entry.path] = _open_listed(directory, entry)
        except BaseException:
            group.close()
            raise
        return group

    @classmethod
    def open_foreign_folder(cls, directory: Path, manifest: Manifest) -> PayloadFiles:
        """Open every file of a model folder made by another tool (``manifest`` is the
        stand-in listing them, without hashes: there is no record to check them against),
        after refusing any link or special file in the folder."""
        refuse_special_entries(directory)
        group = cls(directory, manifest, bare=True)
        try:
            for entry in manifest.files:
                fd = _open_relative(directory, entry.path, str(directory))
                # no entry: nothing was recorded, the bytes are what they are
                group.files[entry.path] = PayloadFile(entry.path, directory / entry.path, fd, None)
        except BaseException:
            group.close()
            raise
        return group

    @classmethod
    def open_bare(
        cls, path: Path, manifest: Manifest, expected: FileIdentity | None = None
    ) -> PayloadFiles:
        """Open a bare model file; ``expected`` is the identity it had when it was sniffed
        (a file replaced since is refused: it is not the file whose format was decided)."""
        group = cls(path.parent, manifest, bare=True)
        opened = open_model_file(path)
        group.files[path.name] = opened
        if expected is not None and opened.identity != expected:
            group.close()
            raise IntegrityError(
                f"{path.name} changed between being recognised and being read",
                hint="something is writing to the file; load it again when it is done",
            )
        return group

    def __enter__(self) -> PayloadFiles:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for opened in self.files.values():
            opened.close()

    def __getitem__(self, name: str) -> PayloadFile:
        return self.files[name]

    @property
    def primary(self) -> PayloadFile:
        """The backend's main file (see :attr:`Manifest.primary_file`)."""
        return self.files[self.manifest.primary_file]

    def verify(self, *, rehash: bool = False) -> None:
        """Check every listed file's size and digest (through its descriptor)."""
        for opened in self.files.values():
            opened.verify(rehash=rehash)

    def ensure_unchanged(self) -> None:
        for opened in self.files.values():
            opened.ensure_unchanged()

    def companion(self, directory: Path, name: str) -> PayloadFile:
        """An old joblib companion file named by a payload in ``directory``.

        In an artifact it must be a file the manifest lists (and it is checked like one); a
        bare file's companions are opened beside it, as regular files only.
        """
        relative = _relative_to(directory / name, self.directory)
        if not self.bare:
            if relative is None or relative not in self.files:
                raise IntegrityError(
                    f"the payload needs the companion file {name}, which is not listed in the "
                    "manifest: it is not part of what was saved and hashed",
                    hint="do not load this artifact; restore it from its store or save the "
                    "model again",
                )
            return self.files[relative]
        key = relative or str(directory / name)
        if key not in self.files:
            self.files[key] = open_payload(directory / name)
        return self.files[key]


def _relative_to(path: Path, root: Path) -> str | None:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def _open_listed(directory: Path, entry: FileEntry) -> PayloadFile:
    try:
        fd = _open_relative(directory, entry.path, str(directory))
    except FileNotFoundError:
        raise IntegrityError(
            f"{entry.path!r} is listed in the manifest but missing from {directory}",
            hint="the artifact is incomplete; restore it from its store or save again",
        ) from None
    return PayloadFile(entry.path, directory / entry.path, fd, entry)


def open_payload(path: Path) -> PayloadFile:
    """Open a file given by path (a bare model file, a companion beside one) as a regular
    file, without following a link at its name. A missing file raises
    :class:`FileNotFoundError` (callers say what was missing)."""
    fd = _open_relative(path.parent, path.name, "")
    return PayloadFile(path.name, path, fd, None)


def open_model_file(path: Path) -> PayloadFile:
    """:func:`open_payload` for a model file a reader was given by path: missing or
    unreadable is a :class:`FormatError`."""
    try:
        return open_payload(path)
    except FileNotFoundError:
        raise FormatError(
            f"{path} does not exist", hint="check the path of the model file"
        ) from None
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror}") from None


def refuse_special_entries(directory: Path) -> None:
    """Raise :class:`FormatError` if anything under ``directory`` (recursively, links not
    followed) is not a regular file or a folder: links, FIFOs, sockets, devices."""
    for problem in special_entries(directory):
        raise problem


def special_entries(directory: Path) -> list[FormatError]:
    """One error per entry under ``directory`` that is not a regular file or a real folder
    (for ``persistkit scan``, which reports them all)."""
    problems: list[FormatError] = []
    stack = [(Path(directory), "")]
    seen = 0
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as it:
            for item in it:
                seen += 1
                if seen > _MAX_ENTRIES:
                    problems.append(
                        FormatError(
                            f"{directory} holds more than {_MAX_ENTRIES} entries; it is not an "
                            "artifact persistkit wrote"
                        )
                    )
                    return problems
                rel = f"{prefix}{item.name}"
                mode = item.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    stack.append((Path(item.path), f"{rel}/"))
                elif not stat.S_ISREG(mode):
                    problems.append(not_regular(rel, mode, where=str(directory)))
    return problems


def read_artifact_manifest(directory: Path) -> Manifest:
    """Read ``directory/persistkit.json`` through the same checks as a payload file."""
    try:
        fd = _open_relative(directory, MANIFEST_NAME, str(directory))
    except FileNotFoundError:
        raise ManifestError(
            f"{directory} has no {MANIFEST_NAME}, so it is not a persistkit artifact",
            hint="pass the artifact directory, a bare model file, or a store ref like name:3",
        ) from None
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read(MAX_MANIFEST_BYTES + 1)
    return Manifest.from_json(raw)


# -- the files of the load in progress (for old joblib companions) ---------------------------

_current: contextvars.ContextVar[PayloadFiles | None] = contextvars.ContextVar(
    "persistkit_payload_files", default=None
)


@contextlib.contextmanager
def loading(files: PayloadFiles) -> Iterator[PayloadFiles]:
    """Make ``files`` the files of the load in progress while the backend reads, so a
    reader that needs another file (a joblib companion) gets it from them."""
    token = _current.set(files)
    try:
        yield files
    finally:
        _current.reset(token)


def current_files() -> PayloadFiles | None:
    """The files of the load in progress, if any."""
    return _current.get()


def read_companion(directory: Path, name: str) -> bytes:
    """The bytes of the companion file ``name`` beside a payload in ``directory``: from the
    load in progress (listed and hash-checked in an artifact) or, outside a load, opened
    beside the file as a regular file."""
    files = current_files()
    if files is not None:
        return files.companion(directory, name).read_bytes()
    with open_payload(directory / name) as opened:
        return opened.read_bytes()
