"""A per-user record of files whose sha256 was already checked, to skip re-hashing them.

A file is skipped only if its identity — device, inode, size, mtime and ctime (in ns) — is the
same as when it was hashed. Any write through the file system changes mtime/ctime, so this
catches every ordinary modification, and a replaced file has a new inode or ctime. It does not
protect against someone who can reset ctime (root with a changed clock, or raw block-device
writes): such a person can also edit the record itself. Set ``PERSISTKIT_REHASH=1`` to always
re-hash.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from persistkit import config


def _record_path(path: Path, st: os.stat_result) -> Path:
    key = f"{st.st_dev}:{st.st_ino}:{os.path.abspath(path)}".encode()
    return config.home() / "verified" / hashlib.sha256(key).hexdigest()[:32]


def _identity(st: os.stat_result, sha256: str) -> str:
    return f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {sha256}"


def already_verified(path: Path, sha256: str) -> bool:
    if os.environ.get("PERSISTKIT_REHASH"):
        return False
    try:
        st = os.stat(path)
        return _record_path(path, st).read_text() == _identity(st, sha256)
    except OSError:
        return False


def remember_verified(path: Path, sha256: str) -> None:
    try:
        st = os.stat(path)
        record = _record_path(path, st)
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f"{record.name}.{os.getpid()}.tmp")
        tmp.write_text(_identity(st, sha256))
        os.replace(tmp, record)
    except OSError:
        pass  # a read-only home only costs a re-hash next time
