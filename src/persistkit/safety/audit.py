"""Audit model files without loading them: format, sizes, every global and whether it is
allowed. This is what ``persistkit scan`` prints."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persistkit.errors import PersistkitError, UntrustedArtifactError
from persistkit.safety.pickle_audit import JOBLIB_WRAPPERS, PickleAudit, audit_pickle
from persistkit.safety.policy import TrustPolicy

_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"
_JSON_WHITESPACE = b" \t\n\r"


@dataclass
class FileAudit:
    """What one file would import and whether the default policy allows all of it."""

    path: str
    format: str
    size: int
    decompressed_size: int | None = None
    protocol: int | None = None
    allowed: list[str] = field(default_factory=list)
    untrusted: list[str] = field(default_factory=list)
    arrays: int = 0
    error: str | None = None
    # what the restricted machine refused (the stream breaks an invariant of
    # persistkit.safety.vm: it calls what it computed, builds onto a class, ...)
    refused: str | None = None

    @property
    def clean(self) -> bool:
        return not self.untrusted and self.error is None and self.refused is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "size_bytes": self.size,
            "decompressed_bytes": self.decompressed_size,
            "pickle_protocol": self.protocol,
            "allowed_globals": self.allowed,
            "untrusted_globals": self.untrusted,
            "arrays": self.arrays,
            "error": self.error,
            "refused": self.refused,
            "clean": self.clean,
        }


def audit_file(path: Path, policy: TrustPolicy | None = None, *, build: bool = True) -> FileAudit:
    """Audit the model file at ``path`` (pickle, joblib, torch zip, safetensors, npy).

    First the stream is audited without importing anything: every global is listed and
    classified. When all of them are allowed, the file is then built exactly as the default
    load builds it (by :mod:`persistkit.safety.vm`, which imports only allow-listed modules
    and calls only reviewed callables with checked arguments) and thrown away, so the verdict
    is the load's: a stream that breaks one of the machine's invariants gets ``refused`` set,
    a damaged file ``error``. ``build=False`` stops after the audit (for a caller that loads
    the whole artifact itself next).
    """
    from persistkit.payload import open_model_file

    policy = policy or TrustPolicy()
    try:  # a link, FIFO or device is refused as load refuses it, without reading it
        with open_model_file(path) as opened:
            size, head = opened.size, os.pread(opened.fd, _HEAD_BYTES, 0)
    except PersistkitError as exc:
        return FileAudit(str(path), "not a regular file", 0, error=exc.message)
    result = FileAudit(str(path), _format_of(head), size)
    try:
        if result.format == "torch-zip" and _is_pt2(path):
            result.format = "pt2"
            _audit_pt2(path, result)
        elif result.format == "torch-zip" and (safe := _safe_format_of(path, head)) is not None:
            # a zip a safe format's plugin claims (skops) is that format, not a torch file
            result.format = safe
            _load_safe_format(path)
        elif result.format == "torch-zip":
            _audit_torch_zip(path, result, policy)
        elif result.format == "safetensors":
            from persistkit.safety.safetensors_format import read_safetensors_header

            result.arrays = len(read_safetensors_header(path).tensors)
        elif result.format == "npy":
            _audit_npy(path, result, policy)
        elif (safe := _safe_format_of(path, head)) is not None:
            result.format = safe
            _load_safe_format(path)
        else:
            _audit_pickle_family(path, head, result, policy)
    except UntrustedArtifactError as exc:
        result.refused = exc.message
        # a safe format's load names what it would need trusted (skops types)
        result.untrusted = sorted(set(result.untrusted) | set(exc.globals_needed))
    except PersistkitError as exc:
        result.error = exc.message
    if (
        build
        and not result.untrusted
        and result.format.startswith(("pickle", "joblib", "torch-zip"))
    ):
        # the build decides: it is the load itself, so scan cannot disagree with it (the
        # audit above still lists the globals, and its own complaint stands if the build
        # fails for the same file)
        audited_error, audited_refusal = result.error, result.refused
        result.error = result.refused = None
        _build_as_load_would(path, result, policy)
        if result.error is not None and audited_error is not None:
            result.error = audited_error
        if result.refused is not None and audited_refusal is not None:
            result.refused = audited_refusal
    return result


def _safe_format_of(path: Path, head: bytes) -> str | None:
    """The backend that reads ``path`` (``head``: its first bytes) when a plugin recognises
    it and declares the format ``safe`` (it carries no code: ONNX, say); ``None`` otherwise,
    also for pickle-family formats, which are audited here opcode by opcode."""
    from persistkit.manager import get_plugins

    plugins = get_plugins()
    backend = plugins.hook.persistkit_sniff(path=path, head=head)
    if backend in _AUDITED_HERE:
        return None
    info = plugins.backends.get(backend) if backend else None
    return backend if info is not None and info.safe and info.available else None


#: what plugins are shown of a file to recognise it (as ``load`` shows them)
_HEAD_BYTES = 64
#: safe formats this module reads itself (their own branches report arrays and details)
_AUDITED_HERE = ("numpy", "safetensors", "export")


def _load_safe_format(path: Path) -> None:
    """A safe format's verdict is its load under the default policy: its plugin's own
    checks (external data, operator domains, damage) run exactly as ``load`` runs them."""
    from persistkit.api import load

    load(path, trusted=False)


def _build_as_load_would(path: Path, result: FileAudit, policy: TrustPolicy) -> None:
    """Build the file with the reader the default load uses; record its verdict."""
    try:
        if result.format == "torch-zip":
            policy.load_torch(path)
        elif result.format.startswith(("pickle", "joblib")):
            policy.load_joblib(path)
    except UntrustedArtifactError as exc:
        result.refused = exc.message
    except PersistkitError as exc:
        result.error = exc.message


def _format_of(head: bytes) -> str:
    from persistkit.safety.joblib_reader import compression_of

    if head.startswith(_ZIP_MAGIC):
        return "torch-zip"
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if _looks_like_safetensors(head):
        return "safetensors"
    method = compression_of(head)
    if method is not None:
        return f"joblib ({method})"
    return "pickle"


def _looks_like_safetensors(head: bytes) -> bool:
    """A plausible header length, then the JSON object, after any JSON whitespace (which the
    reference library accepts, so ``load`` does too)."""
    if len(head) < 9 or int.from_bytes(head[:8], "little") >= 10**9:
        return False
    rest = head[8:].lstrip(_JSON_WHITESPACE)
    return rest.startswith(b"{") or not rest  # all whitespace so far: the header decides


def _classify(
    audit: PickleAudit, result: FileAudit, policy: TrustPolicy, skip: frozenset[Any] = frozenset()
) -> None:
    for pair, name in zip(audit.globals, audit.names):
        if pair in skip:
            continue
        (result.allowed if policy.allows_global(*pair) else result.untrusted).append(name)
    result.protocol = audit.protocol
    result.arrays += len(audit.arrays)


def _audit_pickle_family(path: Path, head: bytes, result: FileAudit, policy: TrustPolicy) -> None:
    from persistkit.safety.joblib_reader import compression_of, decompress

    data = path.read_bytes()
    method = compression_of(head)
    if method is not None:
        data = decompress(data, method, policy, what=f"joblib file {path.name}")
        result.decompressed_size = len(data)
    audit = audit_pickle(data, joblib=True, what=f"file {path.name}")
    if any(pair in JOBLIB_WRAPPERS for pair in audit.globals) and method is None:
        result.format = "joblib"
    _classify(audit, result, policy, JOBLIB_WRAPPERS)


def _audit_torch_zip(path: Path, result: FileAudit, policy: TrustPolicy) -> None:
    from persistkit.safety.numpy_format import is_npz
    from persistkit.safety.torch_reader import STORAGE_MARKERS, open_torch_zip

    if is_npz(path):  # a zip of .npy arrays is numpy's, not torch's
        result.format = "npz"
        _audit_npz(path, result, policy)
        return

    with open_torch_zip(path) as archive:
        data = archive.read_pickle()
        result.decompressed_size = sum(info.file_size for info in archive.zip.infolist())
    audit = audit_pickle(data, persistent=True, what=f"data.pkl of {path.name}")
    _classify(audit, result, policy, STORAGE_MARKERS)
    result.arrays = audit.persistent_ids


def _is_pt2(path: Path) -> bool:
    """A ``torch.export`` archive (``.pt2``), told apart from ``torch.save`` zips by name."""
    import zipfile

    from persistkit.safety.pt2_audit import looks_like_pt2

    try:
        with zipfile.ZipFile(path) as archive:
            return looks_like_pt2(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return path.name.lower().endswith(".pt2")


def _audit_pt2(path: Path, result: FileAudit) -> None:
    """A ``.pt2`` archive, checked by the audit the ``export`` backend's load runs."""
    from persistkit.payload import open_model_file
    from persistkit.safety.pt2_audit import audit_pt2

    with open_model_file(path) as opened:
        found = audit_pt2(opened.read_bytes(), name=path.name)
    result.arrays = found.weights + found.constants


def _audit_npy(path: Path, result: FileAudit, policy: TrustPolicy) -> None:
    from persistkit.safety.numpy_format import read_npy, scan_npy

    _classify_arrays(scan_npy(path), result, policy)
    if not result.untrusted:  # build it as load would: the verdict is the load's
        read_npy(path, policy)


def _audit_npz(path: Path, result: FileAudit, policy: TrustPolicy) -> None:
    """An ``.npz`` archive, checked member by member as the ``numpy`` backend loads it."""
    from persistkit.safety.numpy_format import read_npz, scan_npz

    arrays, result.decompressed_size = scan_npz(path, policy)
    _classify_arrays(arrays, result, policy)
    if not result.untrusted:
        read_npz(path, policy)


def _classify_arrays(
    arrays: list[PickleAudit | None], result: FileAudit, policy: TrustPolicy
) -> None:
    """Numeric arrays (``None``) import nothing; object arrays' pickles are classified."""
    for audit in arrays:
        if audit is not None:
            _classify(audit, result, policy)
    result.arrays = len(arrays)
