"""Telling a joblib file's compression from its first bytes, without the restricted reader
(:mod:`persistkit.safety.joblib_reader` imports the pickle VM; a trusted load that only asks
which compression a file has does not need it)."""

from __future__ import annotations

_ZFILE_PREFIX = b"ZF"
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZ", "bz2"),
    (b"\xfd7zXZ", "xz"),
    (b"\x5d\x00", "lzma"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\x78", "zlib"),
)


def compression_of(head: bytes) -> str | None:
    """The compression a joblib file starts with (by magic bytes), or ``None``."""
    if head.startswith(_ZFILE_PREFIX):
        return "zfile"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None
