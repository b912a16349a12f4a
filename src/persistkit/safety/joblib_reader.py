"""Read joblib files without ``joblib.load``: under the trust policy, within limits.

A joblib file is a pickle stream, optionally compressed as a whole (zlib, gzip, bz2, xz,
lzma, lz4), in which every numpy array is replaced by a ``NumpyArrayWrapper`` whose ``BUILD``
is followed by the array's raw bytes (or, for arrays of Python objects, by a nested pickle
stream). Files from joblib < 0.10 keep arrays in companion ``.npy`` files instead.

The reader decompresses under a size cap and a ratio cap, audits the *whole* stream with
:func:`persistkit.safety.pickle_audit.audit_pickle` (which locates every array segment),
refuses untrusted globals, then rewrites the stream into a plain pickle in which each array
is a persistent id, and runs the restricted C unpickler on it. Array bytes are read with
``numpy.frombuffer`` (companion files with ``numpy.load(allow_pickle=False)``); object arrays go
through the restricted unpickler too.
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persistkit.errors import FormatError
from persistkit.safety.joblib_format import compression_of
from persistkit.safety.native_checks import check_native_structures
from persistkit.safety.pickle_audit import (
    JOBLIB_WRAPPERS,
    ArraySegment,
    PickleAudit,
    audit_pickle,
)
from persistkit.safety.unpickler import load_audited
from persistkit.safety.vm import NeedsAudit, run_restricted

if TYPE_CHECKING:
    from persistkit.payload import PayloadFile
    from persistkit.safety.policy import TrustPolicy

_COMPANION_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,255}\.npy")


def decompress(raw: bytes | bytearray, method: str, policy: TrustPolicy, *, what: str) -> bytes:
    """Decompress ``raw`` with a size cap and a ratio cap; refuse truncated or padded input."""
    from persistkit.safety.policy import RATIO_FLOOR_BYTES

    limit = min(
        policy.max_decompressed_bytes,
        max(RATIO_FLOOR_BYTES, len(raw) * policy.max_compression_ratio),
    )
    decompressor: Any
    if method in ("zlib", "gzip"):
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | (16 if method == "gzip" else 0))
    elif method == "bz2":
        decompressor = bz2.BZ2Decompressor()
    elif method in ("xz", "lzma"):
        fmt = lzma.FORMAT_XZ if method == "xz" else lzma.FORMAT_ALONE
        decompressor = lzma.LZMADecompressor(format=fmt)
    elif method == "lz4":
        try:
            import lz4.frame
        except ImportError:
            raise FormatError(
                f"the {what} is lz4-compressed and the lz4 package is not installed",
                hint="pip install lz4",
            ) from None
        decompressor = lz4.frame.LZ4FrameDecompressor()
    else:
        raise FormatError(
            f"the {what} uses joblib's pre-0.9.3 'ZF' compression, which persistkit does not read",
            hint="re-save the model with a current joblib in a trusted environment",
        )
    try:
        out = decompressor.decompress(raw, limit + 1)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
        raise FormatError(
            f"the {what} is corrupted: its {method} data does not decompress ({exc})",
            hint="the file is damaged; restore it from its source",
        ) from None
    except RuntimeError as exc:  # lz4 reports bad frames as RuntimeError
        raise FormatError(
            f"the {what} is corrupted: its {method} data does not decompress ({exc})"
        ) from None
    if len(out) > limit:
        raise FormatError(
            f"the {what} decompresses to more than {limit} bytes "
            f"({len(raw)} bytes compressed): refusing a possible decompression bomb",
            hint="raise TrustPolicy.max_decompressed_bytes/max_compression_ratio if the "
            "file is genuine",
        )
    if not decompressor.eof:
        raise FormatError(
            f"the {what} is truncated: its {method} stream ends early",
            hint="the file is incomplete; restore it from its source",
        )
    if decompressor.unused_data:
        raise FormatError(f"the {what} has data after the end of its {method} stream")
    return bytes(out)


def read_joblib(source: Path | PayloadFile, policy: TrustPolicy) -> Any:
    """Load the joblib file ``source`` under ``policy`` (see the module docstring).

    ``source`` is a checked, opened payload file (its bytes are what was hashed) or a path,
    which is opened here as a regular file (never through a link, never a FIFO). Companion
    files come from the load in progress (:func:`persistkit.payload.read_companion`).
    """
    from persistkit.payload import PayloadFile, open_model_file

    # writable: the restricted machine hands out arrays as views of these bytes, not copies
    if isinstance(source, PayloadFile):
        raw = source.read_writable()
        path = source.path
    else:
        with open_model_file(Path(source)) as opened:
            raw = opened.read_writable()
        path = Path(source)
    # a plain pickle comes this way too (`scan`, a `.pkl` written by joblib.dump)
    return load_pickle_family(
        raw, policy, what=f"file {path.name}", directory=path.parent, owned=True
    )


def load_pickle_family(
    raw: bytes | bytearray,
    policy: TrustPolicy,
    *,
    what: str,
    directory: Path | None,
    owned: bool = False,
) -> Any:
    """Load a plain pickle or a joblib stream (either may be compressed) under ``policy``.

    The format is decided up front from the bytes (compression magic; joblib array wrappers
    found by the audit), never by trying one reader after another fails: a ``model.pkl``
    written by ``joblib.dump`` is common. ``directory`` holds old joblib companion files.
    ``owned``: ``raw`` is a ``bytearray`` no one else holds, which the arrays built may view.
    """
    method = compression_of(bytes(raw[:8]))
    data = raw if method is None else decompress(raw, method, policy, what=what)
    owned = owned and method is None and type(data) is bytearray
    del raw
    if not policy.trust_all:
        # one pass: the restricted machine reads joblib's array layout itself. It hands
        # over to the audited path below only to name *every* untrusted global at once, or
        # for the layouts of joblib < 0.10.
        try:
            result = run_restricted(
                data, policy, protocol=0, what=what, joblib=True, first_pass=True, owned=owned
            )
        except NeedsAudit:
            pass
        else:
            check_native_structures(result, what=what)
            return result
    data = bytes(data)  # the audited path (rare) reads a copy no view of it can outlive
    audit = audit_pickle(data, joblib=True, what=what)
    if not audit.arrays:
        return load_audited(data, audit, policy, what=what)
    if directory is None and any(seg.kind == "companion" for seg in audit.arrays):
        raise FormatError(f"the {what} needs companion .npy files, and its folder is unknown")
    policy.refuse([pair for pair in audit.globals if pair not in JOBLIB_WRAPPERS], what=what)
    companions = {
        seg.filename: _check_companion(directory, seg, policy, what)  # type: ignore[arg-type]
        for seg in audit.arrays
        if seg.kind == "companion"
    }
    stream = _plain_stream(data, audit)
    built: list[Any] = []

    class ArrayWrapperPlaceholder:
        """Stands where joblib's wrapper class would be imported; only keeps its state."""

        def __setstate__(self, state: Any) -> None:
            self.state = state
            built.append(self)

    def array_for(pid: Any) -> Any:
        if not isinstance(pid, int) or not 0 <= pid < len(audit.arrays) or pid >= len(built):
            raise FormatError(f"the {what} refers to an array that is not there")
        segment = audit.arrays[pid]
        state = getattr(built[pid], "state", None)
        if segment.kind == "companion":
            return companions[segment.filename]
        return _array(data, segment, state, policy, what)

    return load_audited(
        stream,
        audit,
        policy,
        what=what,
        replacements={pair: ArrayWrapperPlaceholder for pair in JOBLIB_WRAPPERS},
        persistent_load=array_for,
    )


def _plain_stream(data: bytes, audit: PickleAudit) -> bytes:
    """The joblib stream as a plain pickle: frames dropped, array data replaced by
    ``POP; BININT k; BINPERSID`` (the placeholder gives way to persistent id ``k``)."""
    cuts: list[tuple[int, int, bytes]] = [(start, end, b"") for start, end in audit.frames]
    for index, (build_end, segment) in enumerate(zip(audit.build_ends, audit.arrays)):
        end = build_end if segment.kind == "companion" else segment.end
        cuts.append((build_end, end, b"0J" + struct.pack("<i", index) + b"Q"))
    cuts.sort()
    pieces: list[bytes] = []
    pos = 0
    for start, end, replacement in cuts:
        pieces.append(data[pos:start])
        pieces.append(replacement)
        pos = end
    pieces.append(data[pos : audit.end])
    return b"".join(pieces)


def _array(data: bytes, segment: ArraySegment, state: Any, policy: TrustPolicy, what: str) -> Any:
    import numpy as np

    if not isinstance(state, dict) or not isinstance(state.get("dtype"), np.dtype):
        raise FormatError(f"the {what} has an array wrapper without a numpy dtype")
    dtype = state["dtype"]
    if tuple(state.get("shape", ())) != segment.shape or state.get("order", "C") != segment.order:
        raise FormatError(f"the {what} describes an array inconsistently")
    if segment.kind == "nested":
        nested = data[segment.offset : segment.end]
        array = load_audited(nested, audit_pickle(nested, what=what), policy, what=what)
        if not isinstance(array, np.ndarray) or array.shape != segment.shape:
            raise FormatError(f"the {what} holds an object array that is not an array")
        return array
    if dtype.itemsize != segment.itemsize or dtype.hasobject:
        raise FormatError(f"the {what} describes an array's dtype inconsistently")
    count = 1
    for n in segment.shape:
        count *= n
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=segment.offset).copy()
    if segment.order == "F":
        array = flat.reshape(segment.shape[::-1]).transpose()
    else:
        array = flat.reshape(segment.shape)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    return array


def read_npy_header(fh: Any, what: str) -> Any:
    """Read a ``.npy`` header with numpy's public readers; return the dtype it declares."""
    import numpy as np

    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, SyntaxError, TypeError) as exc:
        raise FormatError(f"{what} is not a valid .npy file: {exc}") from None
    return header[2]


def _check_companion(directory: Path, segment: ArraySegment, policy: TrustPolicy, what: str) -> Any:
    """Read an old joblib companion ``.npy`` file (no pickles; object arrays audited).

    Its bytes come from :func:`persistkit.payload.read_companion`: in an artifact, a file the
    manifest lists, checked like the others; beside a bare file, a regular file opened
    without following links.
    """
    import io

    import numpy as np

    from persistkit.errors import IntegrityError
    from persistkit.payload import read_companion

    name = segment.filename
    if not _COMPANION_NAME.fullmatch(name) or name.startswith("."):
        raise FormatError(f"the {what} names a companion file {name!r} outside its folder")
    try:
        raw = read_companion(directory, name)
    except FileNotFoundError:
        raise FormatError(
            f"the {what} needs its companion file {name}, which is missing",
            hint="old joblib files come with .npy files beside them; copy them too",
        ) from None
    except IntegrityError:
        raise
    except FormatError as exc:  # a link, FIFO, device or folder
        raise FormatError(
            f"the companion file {name} cannot be read: {exc.message}", hint=exc.hint
        ) from None
    except OSError as exc:  # unreadable
        raise FormatError(f"the companion file {name} cannot be read: {exc}") from None
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except EOFError as exc:  # empty
        raise FormatError(f"the companion file {name} cannot be read: {exc}") from None
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise FormatError(f"the companion file {name} is corrupted: {exc}") from None
    else:
        if not isinstance(array, np.ndarray):  # numpy.load opens any zip as an .npz
            array.close()
            raise FormatError(f"the companion file {name} is not an .npy array")
        return array
    # an object array: .npy header, then a plain pickle stream
    fh = io.BytesIO(raw)
    dtype = read_npy_header(fh, f"the companion file {name}")
    rest = fh.read()
    if not dtype.hasobject:
        raise FormatError(f"the companion file {name} is corrupted")
    array = load_audited(
        rest,
        audit_pickle(rest, what=f"companion file {name}"),
        policy,
        what=f"companion file {name}",
    )
    if not isinstance(array, np.ndarray):
        raise FormatError(f"the companion file {name} does not hold an array")
    return array
