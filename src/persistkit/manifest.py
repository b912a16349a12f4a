"""The artifact manifest, ``persistkit.json``: schema, validation, (de)serialisation.

Manifests are untrusted input: every field is type-checked, file paths may not escape the
artifact, each file has exactly one digest (64 hex digits of sha256, or of BLAKE3 from format 2
on), duplicate JSON keys are refused, and a format newer than this persistkit understands fails
with a message saying to upgrade.

A manifest is written in the oldest format that can hold it (:meth:`Manifest.to_dict`): with
only sha256 digests it is ``persistkit/1``, byte for byte what earlier releases wrote (their
seals and version digests stay the same); with any BLAKE3 digest it is ``persistkit/2``, which
releases before it refuse with their "newer format, upgrade" error.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import accumulate
from pathlib import Path, PurePosixPath
from typing import Any

from persistkit.errors import ManifestError
from persistkit.values import Record, Value

MANIFEST_NAME = "persistkit.json"
REQUIREMENTS_FILE = "requirements.txt"  # written by persistkit beside the payload
FORMAT_PREFIX = "persistkit/"
FORMAT_VERSION = 2
FORMAT = f"{FORMAT_PREFIX}{FORMAT_VERSION}"
#: the format that first allowed each file digest algorithm (a manifest is written in the
#: oldest format that allows all of its entries' algorithms)
DIGEST_SINCE = {"sha256": 1, "blake3": 2}
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
# persistkit writes manifests a handful of levels deep; user metadata and backend options add a
# few more. The cap is far below Python's recursion limit, so parsing never recurses that deep.
MAX_MANIFEST_DEPTH = 64
MAX_FILE_SIZE = 2**63 - 1  # the largest size a file system reports

_HEX_DIGITS = "0123456789abcdef"
# file-path segments that are safe at a glance: never starting with a dot (no pathlib needed)
_PLAIN_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_PLAIN_REST = _PLAIN_FIRST | {"."}
# a JSON string, escapes included: removed before brackets are counted
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes
# Fields left out of the seal: the store sets or changes them after the payload is written.
UNSEALED_FIELDS = frozenset({"name", "version", "tags", "seal"})


def _one_to_two(data: dict[str, Any]) -> dict[str, Any]:
    """Format 2 only added BLAKE3 file digests: a format-1 manifest is unchanged, except
    that one naming a BLAKE3 digest is refused (format 1 never held one)."""
    for item in data.get("files") or []:
        if isinstance(item, dict) and "blake3" in item:
            raise ManifestError(
                "a persistkit/1 manifest lists a blake3 digest, which format 1 cannot hold",
                hint="this is not a manifest persistkit wrote; check the artifact's origin",
            )
    return {**data, "format": f"{FORMAT_PREFIX}2"}


# format version -> function migrating a dict of that version to the next one
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _one_to_two}


class FileEntry(Value):
    """One payload file: its path relative to the artifact, size in bytes, and exactly one
    digest of its bytes: ``sha256`` or ``blake3`` (64 lowercase hex digits; the other is
    None). Checks use the entry's own :attr:`algorithm`. Immutable (see
    :mod:`persistkit.values`)."""

    _fields = ("path", "size", "sha256", "blake3")
    __slots__ = _fields
    path: str
    size: int
    sha256: str | None
    blake3: str | None

    def __init__(
        self, path: str, size: int, sha256: str | None = None, blake3: str | None = None
    ) -> None:
        if (sha256 is None) == (blake3 is None):
            raise ManifestError(f"file {path!r} must have exactly one digest, sha256 or blake3")
        self._set(path, size, sha256, blake3)

    @classmethod
    def of(cls, path: str, size: int, algorithm: str, digest: str) -> FileEntry:
        """The entry for a file hashed with ``algorithm`` (``sha256`` or ``blake3``)."""
        if algorithm not in DIGEST_SINCE:
            raise ValueError(f"unknown file digest {algorithm!r}")
        return cls(path=path, size=size, **{algorithm: digest})

    @property
    def algorithm(self) -> str:
        """``"sha256"`` or ``"blake3"``: what :attr:`digest` was computed with."""
        return "sha256" if self.sha256 is not None else "blake3"

    @property
    def digest(self) -> str:
        """The hex digest, in the entry's :attr:`algorithm`."""
        return self.sha256 if self.sha256 is not None else str(self.blake3)

    @property
    def labelled(self) -> str:
        """``algorithm:hex``, e.g. ``blake3:9f2c…``, for records and people."""
        return f"{self.algorithm}:{self.digest}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, self.algorithm: self.digest}


class Manifest(Record):
    """Everything persistkit knows about a saved model, without loading it.

    A plain class rather than a ``dataclass`` (defining this one as a dataclass costs ~1.5 ms
    at import under CPython 3.11, on every first load): the fields, their defaults and their
    order are those of ``__init__``; ``==`` compares every field in ``_fields`` (see
    :class:`persistkit.values.Record`); and :meth:`replace` returns a copy with some fields
    changed.
    """

    _fields = (
        "backend",
        "files",
        "backend_options",
        "model",
        "environment",
        "created_at",
        "metadata",
        "tags",
        "signature",
        "example",
        "notes",
        "outputs",
        "preprocess",
        "metrics",
        "params",
        "lineage",
        "saved_by",
        "name",
        "version",
        "seal",
        "format",
    )

    def __init__(
        self,
        backend: str,
        files: list[FileEntry],
        backend_options: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
        environment: dict[str, Any] | None = None,
        created_at: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        signature: dict[str, Any] | None = None,
        example: dict[str, str] | None = None,
        notes: list[str] | None = None,
        outputs: dict[str, Any] | None = None,
        preprocess: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        params: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None,
        saved_by: str | None = None,
        name: str | None = None,
        version: int | None = None,
        seal: dict[str, str] | None = None,
        format: str = FORMAT,
        source_text: str | bytes | None = None,
        _sealed: bytes | None = None,
    ) -> None:
        self.backend = backend
        self.files = files
        self.backend_options: dict[str, Any] = {} if backend_options is None else backend_options
        self.model: dict[str, Any] = {} if model is None else model
        self.environment: dict[str, Any] = {} if environment is None else environment
        self.created_at = utc_now() if created_at is None else created_at
        self.metadata: dict[str, Any] = {} if metadata is None else metadata
        self.tags: dict[str, str] = {} if tags is None else tags
        self.signature = signature
        self.example = example
        self.notes: list[str] = [] if notes is None else notes
        #: what the model's outputs mean: ``{"kind": "logits"|"probabilities"|"labels"|...,
        #: "labels": [...]}`` (see :mod:`persistkit.answers`); ``None`` when not recorded
        self.outputs = outputs
        #: how a picture becomes an input, as data (see :mod:`persistkit.preprocess`)
        self.preprocess = preprocess
        #: what training measured: metric name -> finite number (``save(metrics=)``)
        self.metrics: dict[str, float] = {} if metrics is None else metrics
        #: how it was trained: parameter name -> JSON scalar (``save(params=)``)
        self.params: dict[str, Any] = {} if params is None else params
        #: where it came from: the data (``save(lineage=)``) and the code (``git``, recorded
        #: when the saving script runs in a git checkout); see :mod:`persistkit.lineage`
        self.lineage: dict[str, Any] = {} if lineage is None else lineage
        #: the user name of whoever saved it (the OS login at save time)
        self.saved_by = saved_by
        self.name = name
        self.version = version
        self.seal = seal
        #: the format this persistkit read the manifest as (after migrations); what
        #: :meth:`to_dict` writes is :attr:`written_format`, the oldest that holds it
        self.format = format
        #: the JSON text this manifest was parsed from (None when built in memory); what a
        #: seal covers is worked out from it only when a seal is checked (see
        #: :attr:`sealed_source`). Neither it nor ``_sealed`` is compared or shown.
        self.source_text = source_text
        self._sealed = _sealed

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable, as a dataclass

    def replace(self, **changes: Any) -> Manifest:
        """A new manifest with the fields in ``changes`` set, the others shared with this
        one, as ``dataclasses.replace`` made it (the source text and sealed bytes included:
        what a seal covers is what was written, whatever fields the copy changes)."""
        copy = super().replace(**changes)
        copy.source_text, copy._sealed = self.source_text, self._sealed
        return copy

    @property
    def sealed_source(self) -> bytes | None:
        """The bytes a seal covers, as the manifest was written (None when it was not
        parsed): a seal is checked against what was sealed, not against this version's
        reading of it, so a migration, or a field a newer writer added, never looks like
        tampering. Computed on first use, so listing many manifests never pays for it."""
        if self._sealed is None and self.source_text is not None:
            try:
                data = json.loads(self.source_text, object_pairs_hook=_no_duplicate_keys)
                self._sealed = _canonical(data) if isinstance(data, dict) else None
            except (TypeError, ValueError, ManifestError):
                pass
            self.source_text = None  # worked out once, either way
        return self._sealed

    @sealed_source.setter
    def sealed_source(self, value: bytes | None) -> None:
        """Set (or, with None, forget) the bytes a seal covers."""
        self._sealed, self.source_text = value, None

    # -- views ------------------------------------------------------------------------------
    @property
    def model_class(self) -> str | None:
        value = self.model.get("class")
        return value if isinstance(value, str) else None

    @property
    def family(self) -> str | None:
        value = self.model.get("family")
        return value if isinstance(value, str) else None

    @property
    def payload_files(self) -> list[str]:
        """The files the backend wrote: every listed file but the example's and
        ``requirements.txt`` (which persistkit writes beside them)."""
        other = set((self.example or {}).values()) | {REQUIREMENTS_FILE}
        return [entry.path for entry in self.files if entry.path not in other]

    @property
    def primary_file(self) -> str:
        """The first payload file the backend wrote."""
        payload = self.payload_files
        if not payload:
            raise ManifestError("the manifest lists no payload file")
        return payload[0]

    @property
    def written_format(self) -> str:
        """The oldest format that can hold this manifest: ``persistkit/1`` while every file
        has a sha256 digest (what releases before BLAKE3 read), else ``persistkit/2``."""
        version = max((DIGEST_SINCE[f.algorithm] for f in self.files), default=1)
        return f"{FORMAT_PREFIX}{version}"

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise ManifestError(f"the manifest lists no file {path!r}")

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": self.written_format,
            "name": self.name,
            "version": self.version,
            "backend": {"name": self.backend, "options": self.backend_options},
            "model": self.model,
            "files": [f.to_dict() for f in self.files],
            "environment": self.environment,
            "created_at": self.created_at,
            "metadata": self.metadata,
            "tags": self.tags,
            "signature": self.signature,
            "example": self.example,
            "notes": self.notes,
        }
        # written only when set, so manifests (and seals) made before they existed stay the same
        if self.outputs is not None:
            data["outputs"] = self.outputs
        if self.preprocess is not None:
            data["preprocess"] = self.preprocess
        for key in ("metrics", "params", "lineage", "saved_by"):
            value = getattr(self, key)
            if value:  # sealed like the rest: facts of the training, fixed at save
                data[key] = value
        if self.seal is not None:
            data["seal"] = self.seal
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=_json_default) + "\n"

    def sealed_bytes(self) -> bytes:
        """The canonical bytes a seal (signature) covers: every field but the unsealed ones,
        as they read back from ``persistkit.json`` (JSON turns number keys into strings and
        tuples into lists: the seal must cover what is written, not what was passed)."""
        return _canonical(json.loads(json.dumps(self.to_dict(), default=_json_default)))

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        if len(text) > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"manifest is {len(text)} bytes, over the {MAX_MANIFEST_BYTES} byte limit",
                hint="this is not a manifest persistkit wrote; check the artifact's origin",
            )
        _check_depth(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ManifestError(
                f"{MANIFEST_NAME} is not valid JSON: {exc}",
                hint="the artifact is damaged; restore it or save the model again",
            ) from None
        if not isinstance(data, dict):
            raise ManifestError(f"{MANIFEST_NAME} must hold a JSON object")
        # the sealed bytes are worked out from the text later, if a seal is ever checked
        return cls._from_data(data, None, text)

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{MANIFEST_NAME} must hold a JSON object")
        try:
            sealed_source: bytes | None = _canonical(data)
        except (TypeError, ValueError):
            sealed_source = None
        return cls._from_data(data, sealed_source, None)

    @classmethod
    def _from_data(
        cls, data: dict[str, Any], sealed: bytes | None, text: str | bytes | None
    ) -> Manifest:
        """The manifest ``data`` (a JSON object, not yet migrated) describes, validated."""
        data = _migrate(data)
        backend = _get(data, "backend", dict)
        files_raw = _get(data, "files", list)
        return cls(
            format=data["format"],
            name=_get(data, "name", (str, type(None)), None),
            version=_get(data, "version", (int, type(None)), None),
            backend=_get(backend, "name", str, where="backend"),
            backend_options=_get(backend, "options", dict, {}, where="backend"),
            model=_get(data, "model", dict, {}),
            files=[_file_entry(item) for item in files_raw],
            environment=_get(data, "environment", dict, {}),
            created_at=_get(data, "created_at", str, ""),
            metadata=_get(data, "metadata", dict, {}),
            tags=_string_dict(_get(data, "tags", dict, {}), "tags"),
            signature=_get(data, "signature", (dict, type(None)), None),
            example=_get(data, "example", (dict, type(None)), None),
            notes=[str(n) for n in _get(data, "notes", list, [])],
            outputs=_get(data, "outputs", (dict, type(None)), None),
            preprocess=_get(data, "preprocess", (dict, type(None)), None),
            metrics=_metrics(_get(data, "metrics", dict, {})),
            params=_scalars(_get(data, "params", dict, {}), "params"),
            lineage=_get(data, "lineage", dict, {}),
            saved_by=_get(data, "saved_by", (str, type(None)), None),
            seal=_get(data, "seal", (dict, type(None)), None),
            source_text=text,
            _sealed=sealed,
        )._validated()

    def _validated(self) -> Manifest:
        seen: set[str] = set()
        for entry in self.files:
            if entry.path in seen:
                raise ManifestError(f"the manifest lists file {entry.path!r} twice")
            seen.add(entry.path)
        if self.example:
            for role, path in self.example.items():
                if not isinstance(path, str) or path not in seen:
                    raise ManifestError(
                        f"example {role!r} points at {path!r}, which is not a listed file"
                    )
        return self


def _canonical(data: dict[str, Any]) -> bytes:
    """Sorted, compact, ASCII JSON of ``data`` without the fields a seal leaves out."""
    sealed = {k: v for k, v in data.items() if k not in UNSEALED_FIELDS}
    return json.dumps(
        sealed, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_json_default
    ).encode()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_manifest(directory: Path) -> Manifest:
    """Read and validate ``directory/persistkit.json``."""
    path = directory / MANIFEST_NAME
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError(
            f"{directory} has no {MANIFEST_NAME}, so it is not a persistkit artifact",
            hint="pass the artifact directory, a bare model file, or a store ref like name:3",
        ) from None
    return Manifest.from_json(raw)


def check_relative_path(path: str) -> str:
    """Refuse paths that could escape the artifact directory."""
    if _is_plain(path):
        return path  # the usual names: no dot segment, nothing to normalise (no pathlib)
    if not path or "\\" in path or "\x00" in path:
        raise ManifestError(f"manifest file path {path!r} is not allowed")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or str(pure) != path or path.startswith("./"):
        raise ManifestError(
            f"manifest file path {path!r} escapes the artifact directory",
            hint="this artifact was tampered with; do not load it",
        )
    return path


def _is_plain(path: str) -> bool:
    """Letters, digits, ``_ - .`` in segments that do not start with a dot."""
    return all(
        segment and segment[0] in _PLAIN_FIRST and _PLAIN_REST.issuperset(segment)
        for segment in path.split("/")
    )


def is_hex64(text: str) -> bool:
    """Exactly 64 lowercase hex digits (a sha256 or BLAKE3 digest as manifests write it)."""
    return len(text) == 64 and not text.strip(_HEX_DIGITS)


def _file_entry(item: Any) -> FileEntry:
    if not isinstance(item, dict):
        raise ManifestError("each entry of 'files' must be an object")
    path = check_relative_path(_get(item, "path", str, where="files"))
    size = _get(item, "size", int, where="files")
    algorithms = [name for name in DIGEST_SINCE if name in item]
    if not algorithms:
        raise ManifestError(f"manifest is missing files.sha256 (or files.blake3) of {path!r}")
    if len(algorithms) > 1:
        raise ManifestError(
            f"file {path!r} has both a sha256 and a blake3 digest; a file has exactly one",
            hint="this is not a manifest persistkit wrote; check the artifact's origin",
        )
    algorithm = algorithms[0]
    digest = _get(item, algorithm, str, where="files")
    if isinstance(size, bool) or not 0 <= size <= MAX_FILE_SIZE:
        raise ManifestError(
            f"file {path!r} has an invalid size {size!r:.40} (sizes are 0 to {MAX_FILE_SIZE})",
            hint="this is not a manifest persistkit wrote; check the artifact's origin",
        )
    if not is_hex64(digest):
        raise ManifestError(
            f"file {path!r} has no valid {algorithm} digest (got {digest[:80]!r})",
            hint=f"persistkit only trusts full 64-hex-digit {algorithm} digests",
        )
    return FileEntry.of(path, size, algorithm, digest)


def _check_depth(raw: bytes) -> None:
    """Refuse JSON nested deeper than :data:`MAX_MANIFEST_DEPTH` before parsing it, so a
    hostile manifest gets a clear error instead of exhausting the parser's recursion.

    Strings are dropped, brackets become +1 / -1 steps, and the deepest running sum is the
    nesting depth: one pass, at C speed (about half a second for 16 MiB of brackets)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_MANIFEST_DEPTH:
        return  # cannot be deeper than it has brackets
    steps = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS).translate(_BRACKET_STEPS)
    depth = max(accumulate(memoryview(steps).cast("b")), default=0)
    if depth > MAX_MANIFEST_DEPTH:
        raise ManifestError(
            f"{MANIFEST_NAME} is nested {depth} levels deep, more than the "
            f"{MAX_MANIFEST_DEPTH} allowed",
            hint="this is not a manifest persistkit wrote; check the artifact's origin",
        )


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    fmt = data.get("format")
    if not isinstance(fmt, str) or not fmt.startswith(FORMAT_PREFIX):
        raise ManifestError(
            f"unknown manifest format {fmt!r}; expected {FORMAT!r}",
            hint="this directory was not written by persistkit",
        )
    try:
        version = int(fmt[len(FORMAT_PREFIX) :])
    except ValueError:
        raise ManifestError(f"unknown manifest format {fmt!r}") from None
    if version > FORMAT_VERSION:
        raise ManifestError(
            f"this artifact uses manifest format {fmt!r}, newer than this persistkit "
            f"understands ({FORMAT!r})",
            hint="upgrade persistkit: pip install -U persistkit",
        )
    while version < FORMAT_VERSION:
        if version not in MIGRATIONS:
            raise ManifestError(f"manifest format {fmt!r} is no longer supported")
        data = MIGRATIONS[version](data)
        version += 1
    data["format"] = FORMAT
    return data


_MISSING = object()


def _get(
    data: dict[str, Any], key: str, kind: Any, default: Any = _MISSING, *, where: str = ""
) -> Any:
    if key not in data or (data[key] is None and default is not _MISSING):
        if default is _MISSING:
            raise ManifestError(f"manifest is missing {where + '.' if where else ''}{key}")
        return default
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(
            f"manifest field {where + '.' if where else ''}{key} has the wrong type "
            f"({type(value).__name__})"
        )
    return value


def _string_dict(value: dict[str, Any], what: str) -> dict[str, str]:
    for k, v in value.items():
        if not isinstance(v, str):
            raise ManifestError(f"manifest {what} must map strings to strings ({k!r})")
    return value


def _metrics(value: dict[str, Any]) -> dict[str, float]:
    for k, v in value.items():
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not number or (isinstance(v, float) and not math.isfinite(v)):
            raise ManifestError(f"manifest metric {k!r} is not a finite number ({v!r:.40})")
    return value


def _scalars(value: dict[str, Any], what: str) -> dict[str, Any]:
    for k, v in value.items():
        if not isinstance(v, (str, int, float, bool, type(None))):
            raise ManifestError(f"manifest {what} {k!r} is not a JSON scalar")
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result  # the usual case, checked at C speed
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ManifestError(
                f"{MANIFEST_NAME} repeats the key {key!r}",
                hint="duplicate keys can hide tampering; this artifact is refused",
            )
        seen.add(key)
    return result


def _json_default(value: Any) -> Any:
    # numpy scalars and paths sneak into metadata; store them as plain JSON
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
