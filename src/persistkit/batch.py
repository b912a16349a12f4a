"""Batch predictions over many input files, the same whichever engine computes them.

A run (:func:`predict_many`, ``persistkit predict REF INPUTS --output FILE``):

1. the inputs (files, folders, globs, ``@list`` files) are expanded into one ordered list of
   files (:func:`expand_inputs`) and cut into partitions of ``partition_size`` files;
2. the model is resolved **once**, here, to a pinned version (``name@sha256:...``): every
   worker loads exactly that version, even if an alias moves during the run;
3. each partition is predicted by a worker (:func:`predict_partition`), which loads the model
   once per process (a small per-process cache keyed by the pin) and answers one row per
   item; a file that cannot be read or predicted gets a row with its error, never stops
   the run;
4. each finished partition is written to ``<output>.parts/part-NNNNN.parquet`` (a temporary
   file, then a rename), beside ``manifest.json`` saying which run the parts belong to;
5. at the end the parts are merged, in input order, into the output (Parquet or CSV) and the
   parts folder is removed.

A run killed at any point is resumed by running it again (same model version, same input
list, same partition size): finished partitions are kept, the others computed. The engines
are in :mod:`persistkit.engines`; this module never imports one.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persistkit.errors import BatchError, InputError, PersistkitError

if TYPE_CHECKING:
    import pyarrow as pa

    from persistkit.api import Located
    from persistkit.engines import Engine

PARTS_FORMAT = "persistkit-batch/1"
DEFAULT_PARTITION_SIZE = 64
OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
_PART_PREFIX = "part-"
_PARTS_MANIFEST = "manifest.json"
_MODELS_KEPT = 2  # models a worker process keeps loaded (a long-lived cluster serves many runs)
INSTALL = 'pip install "persistkit[batch]"'


# --- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFile:
    """One input file: ``shown`` as the user named it (the output's ``input`` column), and
    ``path``, absolute, which is what workers open."""

    shown: str
    path: str


def readable_suffixes() -> frozenset[str]:
    """The suffixes a folder is searched for: pictures, ``.npy``, ``.csv``, ``.json``."""
    from persistkit.inputs import DATA_SUFFIXES, IMAGE_SUFFIXES

    return IMAGE_SUFFIXES | DATA_SUFFIXES


def expand_inputs(arguments: Iterable[str | os.PathLike[str]]) -> list[InputFile]:
    """The files ``arguments`` name, in order, each once.

    - a file is itself (whatever its type: one that cannot be read gets an error row);
    - a folder is every picture, ``.npy``, ``.csv`` and ``.json`` file under it, recursively,
      in sorted order; hidden files and folders (``.name``) and other files are skipped;
    - a glob (``'scans/*.png'``, ``'data/**/*.npy'``) is the files it matches, sorted;
    - ``@list.txt`` is the files, folders or globs listed one per line (blank lines and lines
      starting with ``#`` skipped; relative paths are relative to the list's folder).

    Raises :class:`InputError` for a name that does not exist, a glob or folder that gives
    no file, or no files at all.
    """
    files: dict[str, InputFile] = {}
    for argument in arguments:
        for found in _expand_one(os.fspath(argument), base=None):
            files.setdefault(found.path, found)
    if not files:
        raise InputError("no input files were given", hint="name files, folders or globs")
    return list(files.values())


def _expand_one(argument: str, *, base: Path | None) -> Iterator[InputFile]:
    if argument.startswith("@") and base is None:
        yield from _expand_list(Path(argument[1:]).expanduser())
        return
    text = os.path.expanduser(argument)
    path = Path(text) if base is None or os.path.isabs(text) else base / text
    shown = str(path)
    if path.is_dir():
        found = list(_walk(path))
        if not found:
            raise InputError(
                f"the folder {shown} holds no pictures, .npy, .csv or .json files",
                hint="check the folder, or name the files (or a glob) instead",
            )
        yield from found
    elif path.is_file():
        yield InputFile(shown, os.path.abspath(path))
    elif glob.has_magic(shown):
        matches = sorted(m for m in glob.glob(shown, recursive=True) if os.path.isfile(m))
        if not matches:
            raise InputError(f"no file matches {shown}", hint="check the pattern")
        yield from (InputFile(m, os.path.abspath(m)) for m in matches)
    else:
        raise InputError(f"input {shown} does not exist", hint="check the path")


def _walk(folder: Path) -> Iterator[InputFile]:
    suffixes = readable_suffixes()
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and Path(name).suffix.lower() in suffixes:
                shown = os.path.join(root, name)
                yield InputFile(shown, os.path.abspath(shown))


def _expand_list(listing: Path) -> Iterator[InputFile]:
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the list @{listing}: {exc}", hint="check the path") from None
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield from _expand_one(entry, base=listing.parent)


# --- the job every partition shares -----------------------------------------------------


@dataclass(frozen=True)
class ModelPin:
    """Exactly one model version, as every worker loads it.

    ``source`` is ``name@sha256:...`` in ``store_url``, or an absolute path or a URL;
    ``digest`` is what the loaded version must match (a stored version's digest, or for a
    model file made by another tool the sizes and times of its files).
    """

    source: str
    store_url: str | None = field(repr=False)  # may hold a database password
    digest: str
    uri: str  # name:version or the path, for people
    trusted: bool | tuple[str, ...] = False
    app_dir: str | None = None


@dataclass(frozen=True)
class BatchJob:
    """What every partition of one run is told: the pinned model and how to read and answer."""

    model: ModelPin
    method: str | None = None
    raw: bool = False
    image_size: tuple[int, int] | None = None
    fit: str = "stretch"

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same run (their parts can be shared)."""
        return {
            "digest": self.model.digest,
            "method": self.method,
            "raw": self.raw,
            "image_size": list(self.image_size) if self.image_size else None,
            "fit": self.fit,
        }


def pin_model(
    source: Any,
    store: Any = None,
    *,
    trusted: bool | Iterable[str] = False,
    app_dir: str | None = None,
    remote: bool = False,
) -> tuple[ModelPin, Located]:
    """Resolve ``source`` (a ref, path or URL) to the version this run will use.

    ``remote`` (workers in other processes) refuses a ``memory://`` store, which other
    processes cannot see.
    """
    from persistkit.api import locate, resolve_source
    from persistkit.store import manifest_digest

    text = os.fspath(source)
    kind, the_store = resolve_source(text, store)
    found = locate(text, the_store)
    trust = trusted if isinstance(trusted, bool) else tuple(trusted)
    if found.in_store:
        assert the_store is not None
        if remote and the_store.url.startswith("memory://"):
            raise BatchError(
                "a memory:// store lives in this process: worker processes cannot read it",
                hint="save the model in a folder or s3:// store, or use the local engine",
            )
        digest = manifest_digest(found.manifest)
        name = found.uri.split(":", 1)[0]
        where = the_store._reopen_url  # the workers' store: password and blobs= kept
        pin = ModelPin(f"{name}@{digest}", where, digest, found.uri, trust, app_dir)
    else:
        where = text if kind == "url" else os.path.abspath(os.path.expanduser(text))
        pin = ModelPin(where, None, _located_digest(found), found.uri, trust, app_dir)
    return pin, found


def _located_digest(found: Located) -> str:
    """A persistkit artifact's digest; for a bare file or another tool's folder (whose
    stand-in manifest is made anew on each read) the sizes and times of its files."""
    from persistkit.store import manifest_digest

    if not found.bare:
        return manifest_digest(found.manifest)
    hasher = hashlib.sha256()
    for entry in sorted(found.manifest.files, key=lambda e: e.path):
        st = os.stat(found.directory / entry.path)
        hasher.update(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "stat:" + hasher.hexdigest()


# --- on a worker ---------------------------------------------------------------------------


@dataclass
class _Loaded:
    model: Any
    found: Located


_models: OrderedDict[tuple[Any, ...], _Loaded] = OrderedDict()
_models_lock = threading.Lock()


def _worker_model(pin: ModelPin) -> tuple[_Loaded, bool]:
    """The pinned model, loaded once per process (``True`` when this call loaded it)."""
    key = (pin.source, pin.store_url, pin.digest, pin.trusted, pin.app_dir)
    with _models_lock:  # one load even when a worker runs several tasks at once
        loaded = _models.get(key)
        if loaded is not None:
            _models.move_to_end(key)
            return loaded, False
        loaded = _load_pinned(pin)
        _models[key] = loaded
        while len(_models) > _MODELS_KEPT:
            _models.popitem(last=False)
        return loaded, True


def forget_models() -> None:
    """Drop the models this process keeps loaded for batch runs (a worker keeps them for
    the next run; a run on the local engine gives their memory back at its end)."""
    with _models_lock:
        _models.clear()


def _load_pinned(pin: ModelPin) -> _Loaded:
    from persistkit.api import load_located, locate

    if pin.app_dir and pin.app_dir not in sys.path:
        sys.path.append(pin.app_dir)  # last, as the CLI's --app-dir: never hides a package
    found = locate(pin.source, pin.store_url)
    if _located_digest(found) != pin.digest:
        raise BatchError(
            f"{pin.uri} changed while the run was going on (its digest is no longer "
            f"{pin.digest[:19]})",
            hint="partitions finished with the old version are kept only for it: remove "
            "the output's .parts folder and run again to use the new one",
        )
    trusted = pin.trusted if isinstance(pin.trusted, bool) else list(pin.trusted)
    return _Loaded(load_located(found, trusted=trusted), found)


@dataclass(frozen=True)
class PartResult:
    """A computed partition: its rows, and which worker process computed it."""

    index: int
    table: pa.Table
    worker: str
    loaded_model: bool  # this partition's worker loaded the model for it
    seconds: float


def predict_partition(job: BatchJob, index: int, files: Sequence[InputFile]) -> PartResult:
    """Predict every file of partition ``index`` (runs on a worker): one row per item, or
    one row with an error for a file that failed. Errors loading the model are raised."""
    started = time.perf_counter()
    loaded, fresh = _worker_model(job.model)
    table = _answer_files(loaded, job, files)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    return PartResult(index, table, worker, fresh, time.perf_counter() - started)


@dataclass
class _Rows:
    """The columns of a partition's table, filled row by row."""

    input: list[str] = field(default_factory=list)
    item: list[int | None] = field(default_factory=list)
    label: list[Any] = field(default_factory=list)
    score: list[float | None] = field(default_factory=list)
    scores: list[list[float] | None] = field(default_factory=list)
    outputs: list[list[float] | None] = field(default_factory=list)
    error: list[str | None] = field(default_factory=list)

    def failed(self, file: InputFile, exc: BaseException) -> None:
        self.add(file.shown, None, None, None, None, None, _error_text(exc))

    def _columns(self) -> tuple[list[Any], ...]:
        return (
            self.input, self.item, self.label, self.score, self.scores, self.outputs, self.error
        )  # fmt: skip

    def add(self, *values: Any) -> None:
        """One row: input, item, label, score, scores, outputs, error."""
        for column, value in zip(self._columns(), values):
            column.append(value)

    def in_order_of(self, files: Sequence[InputFile]) -> None:
        """Rows reordered as ``files`` are (a file that could not be read got its row before
        the others were predicted); the rows of one file keep their order."""
        rank = {file.shown: position for position, file in enumerate(files)}
        order = sorted(range(len(self.input)), key=lambda row: rank[self.input[row]])
        for column in self._columns():
            column[:] = [column[row] for row in order]


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, PersistkitError):
        return f"{type(exc).__name__}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _answer_files(loaded: _Loaded, job: BatchJob, files: Sequence[InputFile]) -> pa.Table:
    import numpy as np

    from persistkit.answers import record_of
    from persistkit.inputs import read_input
    from persistkit.preprocess import checked_spec
    from persistkit.signature import Signature

    manifest = loaded.found.manifest
    spec = Signature.from_manifest(manifest.signature).input
    preprocess = checked_spec(manifest.preprocess, manifest=True)
    record = None
    if not (job.raw or job.method):
        record = record_of(manifest, loaded.model, bare=loaded.found.bare)
    rows = _Rows()
    read: list[tuple[InputFile, Any]] = []
    for file in files:
        try:
            batch = read_input(
                file.path, spec, image_size=job.image_size, fit=job.fit, preprocess=preprocess
            )
        except Exception as exc:  # one bad file is one error row, never the end of the run
            rows.failed(file, exc)
            continue
        read.append((file, batch))
    if read:
        try:  # the whole partition in one call: the fast path
            batch = np.concatenate([b for _, b in read]) if len(read) > 1 else read[0][1]
            _answer(rows, loaded.model, job, record, read, batch)
        except Exception:
            for file, one in read:  # find the file the model refuses
                try:
                    _answer(rows, loaded.model, job, record, [(file, one)], one)
                except Exception as exc:
                    rows.failed(file, exc)
    rows.in_order_of(files)
    return _table(rows, record, job)


def _answer(
    rows: _Rows,
    model: Any,
    job: BatchJob,
    record: dict[str, Any] | None,
    read: list[tuple[InputFile, Any]],
    batch: Any,
) -> None:
    """Predict ``batch`` (the items of ``read``, in order) and add one row per item; adds
    nothing when it raises."""
    import numpy as np

    from persistkit.answers import score_batch
    from persistkit.api import predict
    from persistkit.arrays import to_numpy

    predictions = np.asarray(to_numpy(predict(model, batch, method=job.method)))
    if predictions.ndim == 0 or len(predictions) != len(batch):
        raise InputError(
            f"the model returned {predictions.shape} for {len(batch)} items",
            hint="use a --method that returns one prediction per item",
        )
    labels: list[Any] = [None] * len(batch)
    score: list[float | None] = [None] * len(batch)
    scores: list[list[float] | None] = [None] * len(batch)
    if record is not None:
        scored = score_batch(predictions, record, model=model, batch=batch)
        labels = list(scored.predicted)
        if scored.probabilities is not None and scored.labels is not None:
            position = {str(label): i for i, label in enumerate(scored.labels)}
            table = scored.probabilities.astype(np.float64).tolist()
            scores = list(table)
            score = [row[position[str(lab)]] for row, lab in zip(table, labels)]
    numeric = predictions.dtype.kind in "fiub"
    if not numeric and record is None:  # no label column: the answers would be lost
        raise InputError(
            f"the model answered {predictions.dtype} values, not numbers, and this table "
            "has no label column to hold them",
            hint="leave out --raw and --method: a classifier's answers are then its labels",
        )
    flat = (
        predictions.reshape(len(predictions), -1).astype(np.float64).tolist() if numeric else None
    )
    position_in_batch = 0
    for file, items in read:
        for item in range(len(items)):
            at = position_in_batch + item
            rows.add(
                file.shown,
                item,
                labels[at],
                score[at],
                scores[at],
                flat[at] if flat is not None else None,
                None,
            )
        position_in_batch += len(items)


# --- tables ------------------------------------------------------------------------------


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:
        raise BatchError(
            "batch predictions write tables with pyarrow, which is not installed", hint=INSTALL
        ) from None
    return pyarrow


def table_schema(record: dict[str, Any] | None, job: BatchJob) -> pa.Schema:
    """The columns of a run's table: ``input``, ``item``; ``label``, ``score``, ``scores``
    when the model's outputs have a meaning (see :mod:`persistkit.answers`); ``outputs``
    (the raw outputs, flattened) and ``error``. The labels, in the order of ``scores``, and
    the model version are in the schema's metadata."""
    pa = _pyarrow()
    columns = [pa.field("input", pa.string()), pa.field("item", pa.int64())]
    metadata = {"persistkit.model": job.model.uri, "persistkit.digest": job.model.digest}
    if record is not None:
        labels = record.get("labels")
        columns += [
            pa.field("label", _label_type(pa, labels)),
            pa.field("score", pa.float64()),
            pa.field("scores", pa.list_(pa.float64())),
        ]
        if labels is not None:
            metadata["persistkit.labels"] = json.dumps(labels)
    columns += [pa.field("outputs", pa.list_(pa.float64())), pa.field("error", pa.string())]
    return pa.schema(columns, metadata=metadata)


def _label_type(pa: Any, labels: list[Any] | None) -> Any:
    if labels and all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        return pa.int64()
    if labels and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in labels):
        return pa.float64()
    return pa.string()


def _table(rows: _Rows, record: dict[str, Any] | None, job: BatchJob) -> pa.Table:
    pa = _pyarrow()
    schema = table_schema(record, job)
    data: dict[str, list[Any]] = {"input": _texts(rows.input), "item": rows.item}
    if record is not None:
        label_type = schema.field("label").type
        data["label"] = (
            [None if v is None else str(v) for v in rows.label]
            if pa.types.is_string(label_type)
            else rows.label
        )
        data["score"], data["scores"] = rows.score, rows.scores
    data["outputs"], data["error"] = rows.outputs, _texts(rows.error)
    return pa.Table.from_pydict(data, schema=schema)


def _texts(values: Sequence[str | None]) -> list[str | None]:
    """Strings a table can hold: a file name that is not UTF-8 (Python keeps its bytes as
    surrogate escapes, which Arrow refuses) is written with those bytes as ``\\xff``."""
    return [value if value is None or value.isascii() else _text(value) for value in values]


def _text(value: str) -> str:
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


# --- the parts folder ----------------------------------------------------------------------


class PartsFolder:
    """``<output>.parts/``: a run's finished partitions and the manifest naming the run."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output.with_name(output.name + ".parts")

    def part_path(self, index: int) -> Path:
        return self.path / f"{_PART_PREFIX}{index:05d}.parquet"

    def finished(self) -> set[int]:
        """Indexes of the partitions written completely (temporary files are not)."""
        done = set()
        for entry in os.listdir(self.path):
            stem = entry.removeprefix(_PART_PREFIX).removesuffix(".parquet")
            if entry.startswith(_PART_PREFIX) and entry.endswith(".parquet") and stem.isdigit():
                done.add(int(stem))
        return done

    def open(self, identity: dict[str, Any], *, resume: bool) -> set[int]:
        """Start the run described by ``identity``, or take up the one whose parts are here
        (they must be for the same identity); returns the finished partitions. ``resume``
        insists that there is something to resume. Leftover temporary files are removed."""
        manifest = self.path / _PARTS_MANIFEST
        if not manifest.is_file():
            if resume:
                raise BatchError(
                    f"there is no run to resume for {self.output} (no {self.path.name} folder)",
                    hint="run without --resume to start it",
                )
            self.path.mkdir(parents=True, exist_ok=True)
            _write_atomically(manifest, json.dumps(identity, indent=2).encode())
            return set()
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BatchError(
                f"{manifest} cannot be read: {exc}",
                hint=f"remove the folder {self.path} to start the run anew",
            ) from None
        # the model's name is for people: the same version may be named another way
        differing = sorted(k for k in identity if k != "model" and recorded.get(k) != identity[k])
        if differing:
            raise BatchError(
                f"{self.path} holds the parts of another run (its {', '.join(differing)} "
                f"differ{'s' if len(differing) == 1 else ''}: model {recorded.get('model')}, "
                f"{recorded.get('files')} files)",
                hint=f"remove {self.path} to start anew, or write to another output; "
                "resuming needs the same model version, inputs and options",
            )
        for entry in os.listdir(self.path):
            if entry.startswith(".tmp-"):
                (self.path / entry).unlink(missing_ok=True)  # a write a crash interrupted
        return self.finished()

    def write(self, index: int, table: pa.Table) -> None:
        """Write one partition: to a temporary file, then renamed, so a part is whole or absent."""
        import pyarrow.parquet as pq

        final = self.part_path(index)
        temporary = self.path / f".tmp-{os.getpid()}-{final.name}"
        pq.write_table(table, temporary)
        os.replace(temporary, final)

    def merge(self, count: int, output_format: str) -> tuple[int, int]:
        """Join partitions ``0..count-1``, in order, into the output (replaced atomically);
        returns the number of rows and of rows with an error (failed files)."""
        import pyarrow.parquet as pq

        temporary = self.output.with_name(f".{self.output.name}.tmp-{os.getpid()}")
        rows = failed = 0
        writer: Any = None
        try:
            for index in range(count):
                table = pq.read_table(self.part_path(index))
                if writer is None:
                    writer = _writer(temporary, table.schema, output_format)
                writer.write(table)
                rows += table.num_rows
                failed += table.num_rows - table.column("error").null_count
            if writer is not None:
                writer.close()
                writer = None
            os.replace(temporary, self.output)
        finally:
            if writer is not None:
                writer.close()
            temporary.unlink(missing_ok=True)
        return rows, failed

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class _CsvWriter:
    """CSV rows with list columns (``scores``, ``outputs``) written as JSON arrays."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        import pyarrow.csv as pacsv

        pa = _pyarrow()
        self._lists = [f.name for f in schema if pa.types.is_list(f.type)]
        flat = pa.schema(
            [pa.field(f.name, pa.string()) if f.name in self._lists else f for f in schema]
        )
        self._writer = pacsv.CSVWriter(str(path), flat)
        self._schema = flat

    def write(self, table: pa.Table) -> None:
        pa = _pyarrow()
        for name in self._lists:
            values = [None if v is None else json.dumps(v) for v in table.column(name).to_pylist()]
            position = table.schema.get_field_index(name)
            table = table.set_column(position, name, pa.array(values, pa.string()))
        self._writer.write_table(table.cast(self._schema))

    def close(self) -> None:
        self._writer.close()


class _ParquetWriter:
    """Parquet row groups appended one partition at a time (never the whole table in memory)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        import pyarrow.parquet as pq

        self._schema = schema
        self._writer = pq.ParquetWriter(str(path), schema)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table.cast(self._schema))

    def close(self) -> None:
        self._writer.close()


def _writer(path: Path, schema: pa.Schema, output_format: str) -> _CsvWriter | _ParquetWriter:
    return _CsvWriter(path, schema) if output_format == "csv" else _ParquetWriter(path, schema)


def output_format(output: Path) -> str:
    """``"parquet"`` or ``"csv"`` from the output's suffix; :class:`InputError` otherwise."""
    chosen = OUTPUT_FORMATS.get(output.suffix.lower())
    if chosen is None:
        raise InputError(
            f"cannot tell the table format of {output.name} from its suffix",
            hint="name the output results.parquet (or .pq) or results.csv",
        )
    return chosen


# --- a run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchReport:
    """What a run did. ``computed`` partitions ran now, ``resumed`` were found finished;
    ``model_loads`` counts loads of the model by worker processes (one per process that
    computed a partition), ``workers`` those processes. ``seconds``: the whole call (for
    :func:`predict_many`, the start and close of a local cluster included)."""

    output: str
    model: str
    files: int
    rows: int
    failed: int
    partitions: int
    computed: int
    resumed: int
    workers: int
    model_loads: int
    engine: str
    seconds: float

    def __str__(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        resumed = f", {self.resumed} taken from an earlier run" if self.resumed else ""
        return (
            f"{self.rows} rows for {self.files} files{failed} written to {self.output} "
            f"in {self.seconds:.1f} s ({self.model}; {self.partitions} "
            f"partition{'s' if self.partitions != 1 else ''}{resumed}; "
            f"{self.engine})"
        )

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def partitions(files: Sequence[InputFile], size: int) -> list[list[InputFile]]:
    """``files`` cut into consecutive runs of ``size`` (the last may be shorter)."""
    if size < 1:
        raise InputError(f"a partition size of {size} files", hint="give 1 or more")
    return [list(files[i : i + size]) for i in range(0, len(files), size)]


def run_batch(
    job: BatchJob,
    files: Sequence[InputFile],
    output: str | os.PathLike[str],
    engine: Engine,
    *,
    partition_size: int = DEFAULT_PARTITION_SIZE,
    resume: bool = False,
) -> BatchReport:
    """Compute ``job`` over ``files`` on ``engine`` into the table ``output`` (see the module
    documentation); partitions already finished by an earlier run of the same job are kept."""
    from persistkit.progress import CountProgress

    started = time.perf_counter()
    target = Path(output)
    chosen = output_format(target)
    _pyarrow()
    chunks = partitions(files, partition_size)
    identity = {
        "format": PARTS_FORMAT,
        "model": job.model.uri,
        **job.identity(),
        "files": len(files),
        "inputs": _inputs_digest(files),
        "partition_size": partition_size,
    }
    parts = PartsFolder(target)
    finished = parts.open(identity, resume=resume) & set(range(len(chunks)))
    todo = [(job, i, chunk) for i, chunk in enumerate(chunks) if i not in finished]
    workers: set[str] = set()
    loads = 0
    with CountProgress("predict", len(todo), unit="partitions") as bar:
        for result in engine.map_unordered(
            predict_partition, todo, window=2 * max(engine.slots, 1)
        ):
            parts.write(result.index, result.table)
            workers.add(result.worker)
            loads += result.loaded_model
            bar.update(1)
    rows, failed = parts.merge(len(chunks), chosen)
    parts.remove()
    return BatchReport(
        output=str(target),
        model=job.model.uri,
        files=len(files),
        rows=rows,
        failed=failed,
        partitions=len(chunks),
        computed=len(todo),
        resumed=len(finished),
        workers=len(workers),
        model_loads=loads,
        engine=engine.describe(),
        seconds=time.perf_counter() - started,
    )


def _without_output(files: list[InputFile], output: Path) -> list[InputFile]:
    """``files`` less the run's own output and parts (an output written into the input
    folder must not become an input of the next run, nor change the list a resume checks)."""
    table = os.path.abspath(output)
    parts = os.path.abspath(PartsFolder(output).path) + os.sep
    kept = [f for f in files if f.path != table and not f.path.startswith(parts)]
    if not kept:
        raise InputError("the only inputs given are the run's own output", hint="name inputs")
    return kept


def _inputs_digest(files: Sequence[InputFile]) -> str:
    hasher = hashlib.sha256()
    for file in files:
        hasher.update(file.path.encode("utf-8", "surrogateescape") + b"\0")
    return "sha256:" + hasher.hexdigest()


def predict_many(
    source: Any,
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    output: str | os.PathLike[str],
    engine: str = "dask",
    address: str | None = None,
    workers: int | None = None,
    store: Any = None,
    trusted: bool | Iterable[str] = False,
    method: str | None = None,
    raw: bool = False,
    image_size: tuple[int, int] | None = None,
    fit: str = "stretch",
    partition_size: int = DEFAULT_PARTITION_SIZE,
    resume: bool = False,
    app_dir: str | None = None,
) -> BatchReport:
    """Predict with ``source`` on every file ``inputs`` name and write one table, ``output``
    (``.parquet`` or ``.csv``), with the input path beside each answer.

    ``inputs`` are files, folders (searched recursively), globs or ``@list`` files (see
    :func:`expand_inputs`). ``engine="dask"`` runs the partitions on a Dask cluster: the one
    at ``address``, else a local cluster of ``workers`` processes (default: one per core),
    started and closed here; ``"local"`` runs them in this process. Each worker process loads
    the model once, pinned to the version ``source`` names now. A file that fails gets a row
    with its ``error``; a run that stopped half-way resumes when run again with the same model
    version, inputs and options (``resume=True`` insists that there is such a run). Options
    as for :func:`persistkit.predict` and ``persistkit predict``. Returns a :class:`BatchReport`.
    """
    from dataclasses import replace

    from persistkit.engines import open_engine

    started = time.perf_counter()
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    output_format(Path(output))
    files = _without_output(expand_inputs(paths), Path(output))
    pin, _found = pin_model(
        source, store, trusted=trusted, app_dir=app_dir, remote=engine == "dask"
    )
    job = BatchJob(pin, method=method, raw=raw, image_size=image_size, fit=fit)
    try:
        with open_engine(engine, address=address, workers=workers) as running:
            report = run_batch(
                job, files, output, running, partition_size=partition_size, resume=resume
            )
        # what the caller waited for: resolving the model, starting and closing the cluster
        return replace(report, seconds=time.perf_counter() - started)
    finally:
        if engine == "local":  # the model was loaded in this process: do not hold on to it
            forget_models()
