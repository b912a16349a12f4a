"""The public operations: freeze, save, load, predict, inspect, verify, backends.

This module orchestrates; it knows no framework. Everything model- or format-specific is a
plugin hook (see :mod:`persistkit.hookspecs`).
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import shutil
import stat
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from persistkit import __version__
from persistkit.collector import collection_paused
from persistkit.environment import (
    Mismatch,
    carried_versions,
    carried_versions_mapped,
    incompatible,
    install_line,
    library_version_warnings,
    mismatches,
    missing_library_names,
    recorded,
    requirements_for,
    warn_mismatches,
    write_requirements,
)
from persistkit.environment import describe as describe_mismatches
from persistkit.errors import (
    AmbiguousSourceWarning,
    ArtifactError,
    ArtifactNotFoundError,
    CannotSaveError,
    DriftWarning,
    FormatError,
    ImportCode,
    InputError,
    LibraryRejectedError,
    ListModels,
    NoAdapterError,
    OptionError,
    PersistkitError,
    PluginError,
    SealBrokenError,
    UntrustedArtifactError,
    VerificationError,
    warn,
)
from persistkit.manager import Plugins, get_plugins
from persistkit.manifest import MANIFEST_NAME, FileEntry, Manifest
from persistkit.payload import (
    PayloadFiles,
    loading,
    not_regular,
    open_model_file,
    read_artifact_manifest,
)
from persistkit.records import Artifact, BackendInfo
from persistkit.refs import looks_like_location, normalise_name, parse_ref
from persistkit.safety.policy import TrustPolicy
from persistkit.safety.signing import seal, seal_state
from persistkit.values import Value
from persistkit.verified import FileIdentity

if TYPE_CHECKING:
    # imported where used: a load of a local path needs no store (its import is ~20 ms), and
    # a load needs none of the modules only a save uses (artifact writing, example answers,
    # signatures, preprocess specs): the first load in a fresh process does not pay for them
    from persistkit.reports import VerifyReport
    from persistkit.store import Store

EXAMPLE_INPUTS = "example/inputs.npy"
EXAMPLE_OUTPUTS = "example/outputs.npy"
_SNIFF_BYTES = 64


# --- freeze & predict --------------------------------------------------------------------


def freeze(model: Any) -> Any:
    """Return ``model`` ready for inference, as its adapter defines it.

    scikit-learn: checks the estimator is fitted. PyTorch: eval mode, gradients off.
    Objects no adapter knows are returned unchanged.
    """
    frozen = get_plugins().hook_for_model(model).persistkit_freeze(model=model)
    return model if frozen is None else frozen


_freeze_model = freeze  # save() and load() take a ``freeze`` argument that shadows the name


def predict(
    model_or_source: Any, inputs: Any, *, method: str | None = None, **load_options: Any
) -> Any:
    """Predict with a model object, or load ``model_or_source`` (path, URL, ref or the
    :class:`Artifact` that ``save`` returned) first.

    ``method`` picks another prediction method where the family has them
    (``"predict_proba"``, ``"transform"``, ...). Returns a numpy-friendly result.
    With a source, ``inputs`` may name files (a path, or a list of them: pictures, ``.npy``,
    ``.csv``, ``.json``); they are read as ``persistkit predict`` reads them, pictures by the
    manifest's ``preprocess`` record (see :func:`persistkit.inputs.read_file_inputs`).
    """
    model = model_or_source
    if isinstance(model_or_source, (str, os.PathLike, Artifact)):
        model, inputs, _manifest = load_for_inputs(model_or_source, inputs, load_options)
    options = {"method": method} if method else {}
    hook = get_plugins().hook_for_model(model)
    result = hook.persistkit_predict(model=model, inputs=inputs, options=options)
    if result is None:
        raise NoAdapterError(
            f"no installed adapter can predict with a {_qualname(model)}",
            hint="install the plugin for this model family, or pass a callable",
        )
    return result


def load_for_inputs(
    source: Any, inputs: Any, load_options: dict[str, Any]
) -> tuple[Any, Any, Located]:
    """Load ``source`` (``store=``, ``trusted=``, ``verify=`` and backend options taken from
    ``load_options``) and read ``inputs`` for it: file names become the batch the manifest's
    signature and ``preprocess`` record say. Returns the model, the inputs and where (and
    what) the source is."""
    from persistkit.inputs import read_file_inputs

    options = dict(load_options)
    with collection_paused():  # see load_located
        found = locate(source, options.pop("store", None))
        inputs = read_file_inputs(inputs, found.manifest)
    model = load_located(
        found,
        trusted=options.pop("trusted", False),
        verify=options.pop("verify", True),
        strict=options.pop("strict", False),
        options=options,
    )
    return model, inputs, found


# --- save --------------------------------------------------------------------------------


def save(
    model: Any,
    target: str | os.PathLike[str] | None = None,
    *,
    backend: str | None = None,
    store: Store | str | None = None,
    freeze: bool = True,
    example: Any = None,
    check: bool = False,
    metadata: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    durable: bool = False,
    labels: Sequence[Any] | None = None,
    output: str | None = None,
    preprocess: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    params: dict[str, Any] | None = None,
    lineage: dict[str, Any] | Literal[False] | None = None,
    **backend_options: Any,
) -> Artifact:
    """Save ``model`` to a path/URL (``target`` with a separator or scheme) or into a store.

    ``target=None`` or a bare name saves a new version into the store (``store=``, else
    ``$PERSISTKIT_STORE``, else the per-user store); ``None`` names it after the model's class.
    ``backend=None`` picks the best installed backend for the model. ``example`` (an input
    batch) is stored with its predictions so ``verify`` can prove a reload reproduces them.
    ``check=True`` reloads and verifies right away. ``durable=True`` also fsyncs (power loss).
    ``labels`` (one per output column; scikit-learn's ``classes_`` by default) and ``output``
    (``"logits"``, ``"probabilities"`` or ``"labels"``) make predictions answers such as
    ``gnome (0.97)``; ``preprocess`` declares how pictures become inputs (Hugging Face image
    processor keys, see :mod:`persistkit.preprocess`). Backends that convert the model
    (``export``, ``onnx``) need ``example=``: they trace it, and the saved payload is reloaded
    and checked against the model on it before the version is published.
    ``metrics`` (finite numbers), ``params`` (JSON scalars) and ``lineage`` (the data:
    ``{"data": persistkit.data_digest(X)}``; the git commit is added when the saving script
    runs in a checkout, ``lineage=False`` records nothing) are sealed into the manifest with
    the saving user's name; stores query them (:mod:`persistkit.query`).
    Extra keyword arguments go to the backend (e.g. ``compress=3`` for joblib).
    """
    from persistkit.answers import check_against_outputs, output_record
    from persistkit.artifact import (
        PayloadHasher,
        file_entries,
        fsync_tree,
        publish_directory,
        refuse_existing,
        remember_saved,
        staging_directory,
        unreported_files,
        write_manifest,
    )
    from persistkit.lineage import recorded_lineage
    from persistkit.preprocess import checked_spec
    from persistkit.signature import is_tensor_group
    from persistkit.training import checked_metrics, checked_params, saved_by

    plugins = get_plugins()
    # checked before any work; the git commit is read now, as the script starts saving
    record: dict[str, Any] = {
        "metrics": checked_metrics(metrics),
        "params": checked_params(params),
        "lineage": recorded_lineage(lineage),
        "saved_by": saved_by(),
    }
    if model is None:
        # hooks use None to mean "not mine", so a None model could never load back
        raise CannotSaveError("the model is None", hint="pass the trained model object")
    if freeze:
        model = _freeze_model(model)
    example_batch = None if example is None else _example_batch(example)
    # several inputs (a dict or tuple example): formats that convert by tracing one input
    # array (export, onnx) are not offered
    several = is_tensor_group(example_batch)
    single_batch = None if several else example_batch
    chosen, reason = (
        (backend, "") if backend else choose_backend(model, plugins, example=single_batch)
    )
    info = plugins.backend(chosen)
    check_options(info, backend_options, when="save")
    if info.converts and several:
        raise CannotSaveError(
            f"backend {chosen!r} converts the model by running it on one input array; this "
            "example gives several inputs",
            hint="save it with a backend that stores the model itself (torch, safetensors)",
        )
    if info.converts and example_batch is None:
        raise CannotSaveError(
            f"backend {chosen!r} converts the model by running it, so it needs an input batch",
            hint="pass example=<a small batch of real inputs> (it is also stored, so "
            "`persistkit verify` can prove the reload)",
        )

    described = describe(model, plugins, backend=chosen)
    notes = list(described.pop("notes", []))
    if reason:
        notes.append(f"backend {chosen!r} chosen automatically: {reason}")
    outputs_record = output_record(labels, output, described)
    for used in ("classes", "labels", "output"):
        described.pop(used, None)
    preprocess_spec = checked_spec(preprocess)

    location = None if target is None else os.fspath(target)
    to_store = location is None or not looks_like_location(location)
    the_store: Store | None = None
    if to_store:
        from persistkit.store import Store

        the_store = store if isinstance(store, Store) else Store(store)
        name = normalise_name(type(model).__name__) if location is None else location
        if location is not None and _model_file_suffix(location):
            # "model.joblib" reads like a file here; say where it really goes
            warnings.warn(
                AmbiguousSourceWarning(
                    f"{location!r} is saved as a model of that name in the store at "
                    f"{the_store.url}, not as a file here; pass './{location}' to write an "
                    "artifact folder here instead"
                ),
                stacklevel=2,
            )
        staging = the_store.stage(name)
    else:
        local = str(location).removeprefix("file://")
        if "://" in local:  # checked before Path(), which would fold "s3://" into "s3:/"
            raise CannotSaveError(
                f"saving straight to {location} is not supported",
                hint="save into a Store(url) instead",
            )
        final = Path(os.path.expanduser(local)).absolute()
        refuse_existing(final)  # before serializing a model that could not be published
        staging = staging_directory(final.parent, final.name)
    try:
        # hash each payload file while the backend writes it (one pass, on another core)
        with PayloadHasher(staging, follow=info.append_only) as hasher:
            files = _write_payload(
                model, chosen, staging, backend_options, plugins, example_batch
            )
            # every file written is listed and hashed, also those the backend did not report
            # (an old joblib's companion .npy files)
            files += unreported_files(staging, files)
            modules = described.pop("modules", ())
            # a converted payload (ONNX, a torch.export program) needs its runtime, not the
            # model's original library
            requirements = (
                requirements_for(info.requires, {"numpy": np.__version__})
                if info.converts
                else requirements_for(modules, described.get("libraries", {}))
            )
            written = [*files, write_requirements(staging, requirements)]
        hashed = hasher.entries(written)
        answering = model
        if info.converts:
            assert example_batch is not None
            answering, conversion = check_conversion(
                model, info, staging, files, backend_options, example_batch, plugins
            )
            described["conversion"] = conversion
        example_record, signature = _write_example(
            answering, example_batch, staging, described.pop("score_methods", ())
        )
        if example_record:
            check_against_outputs(outputs_record, np.load(staging / EXAMPLE_OUTPUTS))
        manifest = Manifest(
            backend=chosen,
            backend_options=_jsonable(backend_options),
            files=[h.entry for h in hashed] + file_entries(staging, example_record.values()),
            model={k: v for k, v in described.items() if k != "libraries"},
            environment=environment(described.get("libraries", {}), requirements),
            metadata=dict(metadata or {}),
            tags=dict(tags or {}),
            signature=signature,
            example=example_record or None,
            notes=notes,
            outputs=outputs_record,
            preprocess=preprocess_spec,
            **record,
        )
        manifest.seal = seal(manifest)
        if the_store is not None:
            artifact = the_store.publish(staging, name, manifest, durable=durable)
        else:
            write_manifest(staging, manifest, durable=durable)
            if durable:
                fsync_tree(staging)
            publish_directory(staging, final)
            artifact = Artifact(uri=str(final), path=final, manifest=manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    remember_saved(artifact.path, hashed)  # so loading this fresh save needs no re-hash
    if check:
        verify(artifact.path, trusted=True)
    return artifact


def choose_backend(
    model: Any, plugins: Plugins | None = None, *, example: Any = None
) -> tuple[str, str]:
    """Pick the best available backend for ``model``: adapters vote, safe formats win ties.

    Backends that convert the model by running it (``BackendInfo.converts``) are passed over
    when there is no ``example`` batch to run it on.
    """
    plugins = plugins or get_plugins()
    votes: dict[str, tuple[int, str]] = {}
    for recs in plugins.hook.persistkit_recommend(model=model):
        for rec in recs or []:
            if rec.backend not in votes or rec.score > votes[rec.backend][0]:
                votes[rec.backend] = (rec.score, rec.reason)
    ranked = sorted(
        votes.items(),
        key=lambda item: (item[1][0], _is_safe(plugins, item[0])),
        reverse=True,
    )
    skipped = []
    needs_example = False
    for name, (_score, why) in ranked:
        info = plugins.backends.get(name)
        if info is None or not info.available:
            skipped.append(f"{name} (not installed)")
            continue
        if info.converts and example is None:
            # the adapter preferred a format that runs the model on an example: falling
            # back to a weaker vote (a pickle of a class only its script defines) would be
            # a quiet guess, so without an example this is an error
            skipped.append(f"{name} (needs example=)")
            needs_example = True
            continue
        if needs_example:
            break
        if plugins.hook.persistkit_can_save(model=model, backend=name) is False:
            skipped.append(f"{name} (cannot save it)")
            continue
        return name, why or f"the best installed backend for a {_qualname(model)}"
    raise CannotSaveError(
        f"no installed backend can save a {_qualname(model)}"
        + (f"; considered: {', '.join(skipped)}" if skipped else ""),
        hint=(
            "pass example=<a small batch of real inputs> so the model can be frozen into a "
            "format that runs without its code; or pass backend= explicitly"
            if needs_example
            else "install a backend plugin (`persistkit backends` shows what each needs), "
            "or pass backend= explicitly"
        ),
    )


def _is_safe(plugins: Plugins, name: str) -> bool:
    info = plugins.backends.get(name)
    return bool(info and info.safe)


def describe(
    model: Any, plugins: Plugins | None = None, *, backend: str | None = None
) -> dict[str, Any]:
    """Merge what every adapter says about ``model`` (family, class, libraries, notes), for a
    save with ``backend`` if given."""
    plugins = plugins or get_plugins()
    merged: dict[str, Any] = {"class": _qualname(model), "libraries": {"numpy": np.__version__}}
    notes: list[str] = []
    for facts in reversed(plugins.hook.persistkit_describe(model=model, backend=backend)):
        if not facts:
            continue
        merged["libraries"].update(facts.get("libraries", {}))
        notes.extend(facts.get("notes", []))
        merged.update({k: v for k, v in facts.items() if k not in ("libraries", "notes")})
    merged["notes"] = notes
    return merged


def environment(
    libraries: dict[str, str], requirements: dict[str, str] | None = None
) -> dict[str, Any]:
    """The manifest's ``environment``: Python and platform, the adapters' ``libraries``, and
    ``requirements`` (every distribution the payload needs, see :mod:`persistkit.environment`)."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "byteorder": sys.byteorder,
        "persistkit": __version__,
        "libraries": dict(sorted(libraries.items())),
        "requirements": dict(requirements if requirements is not None else libraries),
    }


_SAVE_ARGUMENTS = (
    "backend",
    "store",
    "freeze",
    "example",
    "check",
    "metadata",
    "tags",
    "durable",
    "labels",
    "output",
    "preprocess",
    "metrics",
    "params",
    "lineage",
)
_LOAD_ARGUMENTS = ("store", "trusted", "verify", "strict")


def check_options(info: BackendInfo, options: dict[str, Any], *, when: str) -> None:
    """Refuse, before any work, a keyword option that backend ``info`` does not take at
    ``when`` (``"save"`` or ``"load"``), naming the options that do apply. A backend that
    declares nothing (``None``) gets every option unchecked."""
    accepted = info.save_options if when == "save" else info.load_options
    if accepted is None:
        return
    unknown = sorted(set(options) - set(accepted))
    if not unknown:
        return
    own = _SAVE_ARGUMENTS if when == "save" else _LOAD_ARGUMENTS
    named = ", ".join(f"{name}=" for name in unknown)
    takes = (
        f"it takes {', '.join(f'{name}=' for name in accepted)}" if accepted else "it takes none"
    )
    import difflib  # only on this error path: it costs ~8 ms to import

    guesses = [
        f"{guess}= (not {name}=)"
        for name in unknown
        for guess in difflib.get_close_matches(name, (*accepted, *own), n=1)
    ]
    hint = f"did you mean {', '.join(guesses)}? " if guesses else ""
    hint += f"{when}() itself takes {', '.join(f'{name}=' for name in own)}"
    raise OptionError(
        f"backend {info.name!r} does not take {'option' if len(unknown) == 1 else 'options'} "
        f"{named} at {when}; {takes}",
        hint=hint,
    )


def _write_payload(
    model: Any,
    backend: str,
    directory: Path,
    options: dict[str, Any],
    plugins: Plugins,
    example: Any = None,
) -> list[str]:
    files = plugins.hook.persistkit_save(
        model=model, backend=backend, directory=directory, options=options, example=example
    )
    if files is None:
        raise PluginError(
            f"backend {backend!r} is declared by plugin {plugins.backends[backend].plugin!r} "
            "but no plugin saved the model with it",
            hint="the plugin is broken; report it to its authors",
        )
    return list(files)


def _example_batch(example: Any) -> Any:
    """One input batch as an array; a dict or tuple of tensors (a model of several inputs)
    as the same container of arrays."""
    from persistkit.arrays import to_numpy
    from persistkit.signature import is_tensor_group, tensor_group

    if is_tensor_group(example):
        return tensor_group(example)
    inputs = to_numpy(example)
    if inputs.dtype == object:
        raise InputError(
            "example= must be a numeric or string array, not Python objects",
            hint="pass a numpy array (or list) of one input batch",
        )
    return inputs


def check_conversion(
    model: Any,
    info: BackendInfo,
    staging: Path,
    files: list[str],
    options: dict[str, Any],
    example: np.ndarray,
    plugins: Plugins,
) -> tuple[Any, dict[str, Any]]:
    """Reload the payload a converting backend just wrote and compare its predictions on
    ``example`` with ``model``'s: identical, or within ``info.tolerance``. Returns the
    reloaded model (the stored example outputs are its own, so ``verify`` stays bitwise)
    and the record of the check for the manifest. Raises :class:`CannotSaveError`."""
    from persistkit.arrays import arrays_identical, to_numpy

    manifest = Manifest(
        backend=info.name,
        backend_options=_jsonable(options),
        files=[FileEntry(name, (staging / name).stat().st_size, "0" * 64) for name in files],
    )
    reloaded = plugins.hook.persistkit_load(
        backend=info.name,
        directory=staging,
        manifest=manifest,
        options=dict(manifest.backend_options),
        policy=TrustPolicy.from_argument(True, sealed=False, source=str(staging)),
        files=None,
    )
    if reloaded is None:
        raise PluginError(f"backend {info.name!r} saved a payload that no plugin loads back")
    reloaded = _freeze_model(reloaded)
    expected = to_numpy(predict(model, example))
    actual = to_numpy(predict(reloaded, example))
    record: dict[str, Any] = {"checked_items": len(example)}
    if expected.shape != actual.shape:
        raise CannotSaveError(
            f"the {info.name} payload answers example= with shape {actual.shape}, the model "
            f"with {expected.shape}",
            hint=f"the model cannot be converted faithfully; use another backend than {info.name}",
        )
    identical = arrays_identical(expected, actual)
    record["identical"] = identical
    if expected.dtype.kind in "fc" and actual.dtype.kind in "fc":
        diff = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
        record["max_abs_diff"] = float(diff.max()) if diff.size else 0.0
    if identical:
        return reloaded, record
    if info.tolerance is None or expected.dtype.kind not in "fc":
        raise CannotSaveError(
            f"the {info.name} payload does not reproduce the model's predictions on example= "
            f"(max difference {record.get('max_abs_diff', 'n/a')})",
            hint=f"this model cannot be converted faithfully; use another backend than {info.name}",
        )
    rtol, atol = info.tolerance
    record["tolerance"] = {"rtol": rtol, "atol": atol}
    if not np.allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True):
        raise CannotSaveError(
            f"the {info.name} payload's predictions on example= differ from the model's by up "
            f"to {record['max_abs_diff']:.3g}, beyond the stated tolerance "
            f"(rtol={rtol:g}, atol={atol:g})",
            hint=f"this model does not convert faithfully to {info.name}; use another backend",
        )
    return reloaded, record


def _write_example(
    model: Any,
    inputs: np.ndarray | None,
    directory: Path,
    score_methods: Sequence[str] = (),
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Store ``inputs`` and the model's predictions for them, plus the continuous outputs of
    each of ``score_methods`` (``predict_proba``, ``decision_function``: labels alone hide a
    model that drifted). Returns the manifest's ``example`` record (role -> file) and the
    signature."""
    from persistkit.arrays import to_numpy
    from persistkit.signature import is_tensor_group, signature_from_example, tensor_group

    if inputs is None:
        return {}, None
    if is_tensor_group(inputs):
        # several inputs: the signature records each (names, form); the stored example and
        # `verify` take a single array for now
        answer = predict(model, inputs)
        group = is_tensor_group(answer)
        answered = tensor_group(answer, what="the prediction") if group else to_numpy(answer)
        return {}, signature_from_example(inputs, answered)
    outputs = to_numpy(predict(model, inputs))
    (directory / "example").mkdir()
    np.save(directory / EXAMPLE_INPUTS, inputs, allow_pickle=False)
    _save_example_array(directory / EXAMPLE_OUTPUTS, outputs)
    record = {"inputs": EXAMPLE_INPUTS, "outputs": EXAMPLE_OUTPUTS}
    for method in score_methods:
        if not isinstance(method, str) or not method.isidentifier() or method in record:
            continue
        try:
            scores = to_numpy(predict(model, inputs, method=method))
        except PersistkitError:
            continue  # e.g. decision_function of a model that only has it on paper
        if scores.dtype.kind not in "fc":
            continue
        path = f"example/{method}.npy"
        _save_example_array(directory / path, scores)
        record[method] = path
    return record, signature_from_example(inputs, outputs)


def _save_example_array(path: Path, values: np.ndarray) -> None:
    try:
        np.save(path, values, allow_pickle=False)
    except ValueError:
        raise InputError(
            f"the model's predictions for example= are {values.dtype} objects, which "
            "persistkit cannot store safely",
            hint="make predict return a numeric array, or save without example=",
        ) from None


# --- load --------------------------------------------------------------------------------


class Located(Value):
    """A local artifact folder (or bare file) plus what it is called.

    For a bare file, ``identity`` is the file's identity when its format was sniffed: the
    load refuses a file replaced since. ``in_store`` is true when a store ref was resolved
    (``uri`` is then ``name:version``), false for a path or URL.
    """

    _fields = ("directory", "manifest", "uri", "bare", "identity", "folder", "in_store")
    __slots__ = _fields
    directory: Path
    manifest: Manifest
    uri: str
    bare: bool
    identity: FileIdentity | None
    folder: bool  # a bare model *folder* from another tool (bare is true too)
    in_store: bool

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        uri: str,
        bare: bool = False,
        identity: FileIdentity | None = None,
        folder: bool = False,
        in_store: bool = False,
    ) -> None:
        self._set(directory, manifest, uri, bare, identity, folder, in_store)


def locate(source: Any, store: Store | str | None = None) -> Located:
    """Resolve ``source`` (path, URL, ref, or Artifact) to a local folder and its manifest.

    Which one a string is: see :func:`resolve_source`.
    """
    if isinstance(source, Artifact):
        return Located(source.path, read_artifact_manifest(source.path), source.uri)
    kind, the_store = resolve_source(source, store)
    text = os.fspath(source)
    if kind == "url":
        from persistkit.store import fetch_url

        directory, manifest = fetch_url(text)  # downloads into the local cache
        return Located(directory, manifest, text)
    if kind == "path":
        return _locate_path(Path(os.path.expanduser(text.removeprefix("file://"))))
    assert the_store is not None
    directory, manifest, name, version = the_store.fetch(text)  # parses and checks the ref
    return Located(directory, manifest, f"{name}:{version}", in_store=True)


SourceKind = Literal["path", "url", "ref"]


def resolve_source(
    source: str | os.PathLike[str], store: Store | str | None = None
) -> tuple[SourceKind, Store | None]:
    """Tell what ``source`` names: a local ``"path"``, a remote ``"url"`` or a ``"ref"`` in
    the store (returned with it). The rule, everywhere (API, CLI, server):

    1. a URL scheme (``s3://``, ``memory://``; ``file://`` is a path) is a location, and so
       is text starting with ``/ . ~`` or holding a path separator (the DESIGN rule);
    2. a file, or an artifact folder (one holding ``persistkit.json``), that exists here is a
       path: ``their_model.joblib`` in the current folder is that file. If the text is also
       a model in the store, an :class:`AmbiguousSourceWarning` says the file was used
       (``NAME:latest`` names the stored model);
    3. a folder here that is not an artifact does not hide a stored model of that name (a
       warning says the store was used); without one it is a path (and the load says why
       the folder is not an artifact);
    4. text ending in a model-file suffix that a backend reads (``.joblib``, ``.pkl``, ...)
       that is not a stored model either is a missing file: :class:`ArtifactNotFoundError`;
    5. anything else is a ref in the store.
    """
    if isinstance(source, Path):
        return "path", None
    text = os.fspath(source)
    if "://" in text and not text.startswith("file://"):
        return "url", None
    if looks_like_location(text):
        return "path", None
    from persistkit.store import Store

    the_store = store if isinstance(store, Store) else Store(store)
    path = Path(text)
    if os.path.lexists(path):
        artifact_folder = not path.is_dir() or (path / MANIFEST_NAME).exists()
        stored = _stored_name(the_store, text)
        if artifact_folder:
            if stored:
                _warn_ambiguous(
                    f"{text!r} is both {'a file' if not path.is_dir() else 'an artifact folder'}"
                    f" here ({path.absolute()}) and a model in the store {the_store.url}: "
                    f"using the {'file' if not path.is_dir() else 'folder'}; "
                    f"write {text + ':latest'!r} for the stored model"
                )
            return "path", None
        if stored:
            _warn_ambiguous(
                f"{text!r} is a folder here but not an artifact: using the model {text!r} "
                f"from the store {the_store.url}"
            )
            return "ref", the_store
        return "path", None
    # every model-file suffix starts with a dot; the store is asked before the suffixes,
    # which come from every backend (asking them imports every plugin)
    if (
        "." in text
        and not _stored_name(the_store, text)
        and (suffix := _model_file_suffix(text))
    ):
        raise ArtifactNotFoundError(
            f"no such file: {text} (looked in {Path.cwd()}); nor is it a model in the store "
            f"{the_store.url}",
            hint=f"check the file name and folder; a {suffix} name is read as a model file, "
            "and stored models are named without a file suffix",
            remedies=[ListModels(None if the_store.is_default else the_store.url)],
        )
    return "ref", the_store


def model_file_suffixes() -> tuple[str, ...]:
    """Every file-name ending of a bare model file that a backend reads (``.joblib``,
    ``.pkl``, ...), installed or not, longest first."""
    found = {s.lower() for info in get_plugins().backends.values() for s in info.suffixes}
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


def _model_file_suffix(text: str) -> str | None:
    lowered = text.lower()
    return next((s for s in model_file_suffixes() if lowered.endswith(s)), None)


def _stored_name(store: Store, text: str) -> bool:
    """Whether ``text`` is a ref to something the store holds: never raises (the answer
    only decides between a file and a store model, and what the warning says)."""
    try:
        name = parse_ref(text).name
        return store.has(name)
    except PersistkitError:
        return False


def _warn_ambiguous(message: str) -> None:
    """Warn, pointing at the first caller outside persistkit (whichever call got here)."""
    warn(AmbiguousSourceWarning(message))


def _locate_path(path: Path) -> Located:
    """A local artifact folder (which may be reached through a link: the user chose the path)
    or a bare model file (which must itself be a regular file, never a link or a FIFO)."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    if mode is None or (stat.S_ISLNK(mode) and not path.exists()):
        raise ArtifactNotFoundError(
            f"nothing exists at {path}",
            hint="check the path; a store ref is written without slashes, like name:3",
        )
    if path.is_dir():
        if not (path / MANIFEST_NAME).exists():
            foreign = _sniff_folder(path)
            if foreign is not None:
                return Located(path, foreign, str(path), bare=True, folder=True)
        return Located(path, read_artifact_manifest(path), str(path))
    if not stat.S_ISREG(mode):
        raise not_regular(path.name, mode)
    manifest, identity = _sniff_bare(path)
    return Located(path.parent, manifest, str(path), bare=True, identity=identity)


#: a foreign model folder (Hugging Face, MLflow) is read whole: at most this many files
MAX_FOREIGN_FOLDER_FILES = 10_000


def _sniff_folder(path: Path) -> Manifest | None:
    """The stand-in manifest of a model folder made by another tool (a Hugging Face
    ``save_pretrained`` folder, an MLflow model) that a plugin recognises, or ``None``.

    Plugins are asked through ``persistkit_sniff`` with the folder's path and empty ``head``.
    Every regular file under the folder is listed (no hashes: there is no record to check),
    links and special files are refused, and the backend reads the files from the opened
    descriptors like any payload.
    """
    backend = get_plugins().hook.persistkit_sniff(path=path, head=b"")
    if backend is None:
        return None
    from persistkit.payload import refuse_special_entries

    refuse_special_entries(path)
    entries = []
    for root, folders, names in os.walk(path):
        folders.sort()
        for name in sorted(names):
            full = Path(root) / name
            relative = full.relative_to(path).as_posix()
            entries.append(FileEntry(relative, full.stat().st_size, "0" * 64))
            if len(entries) > MAX_FOREIGN_FOLDER_FILES:
                raise FormatError(
                    f"{path} holds more than {MAX_FOREIGN_FOLDER_FILES} files; it is read as "
                    f"a {backend} model folder, and that is too many",
                    hint="point at the model's own folder",
                )
    if not entries:
        return None
    facts: dict[str, Any] = {}
    for answer in get_plugins().hook.persistkit_folder_facts(backend=backend, path=path):
        facts.update(answer or {})
    preprocess = facts.get("preprocess")
    return Manifest(
        backend=backend,
        files=entries,
        notes=[f"foreign {backend} folder: no persistkit manifest, no integrity record"],
        preprocess=preprocess if isinstance(preprocess, dict) else None,
    )


def bare_manifest(path: Path) -> Manifest:
    """A stand-in manifest for a model file made by another tool (no hashes to check)."""
    return _sniff_bare(path)[0]


def _sniff_bare(path: Path) -> tuple[Manifest, FileIdentity]:
    """The stand-in manifest of a bare file, and the identity of the file that was sniffed."""
    plugins = get_plugins()
    with open_model_file(path) as opened:
        head = os.pread(opened.fd, _SNIFF_BYTES, 0)
        identity = opened.identity
    backend = plugins.hook.persistkit_sniff(path=path, head=head)
    if backend is None:
        raise ArtifactNotFoundError(
            f"{path.name} is not a persistkit artifact and no backend recognises its format",
            hint="`persistkit backends` lists the formats persistkit reads",
        )
    manifest = Manifest(
        backend=backend,
        files=[FileEntry(path.name, identity.size, "0" * 64)],
        notes=["bare file: no manifest, no integrity record"],
    )
    return manifest, identity


def load(
    source: Any,
    *,
    store: Store | str | None = None,
    trusted: bool | Iterable[str] = False,
    verify: bool = True,
    strict: bool = False,
    **backend_options: Any,
) -> Any:
    """Load a model from a path, URL or store ref, checking integrity and trust first.

    ``trusted`` may be a list of exact ``"module.Qualname"`` globals to allow, or ``True`` to
    run whatever the payload contains. Artifacts sealed by your own key are trusted.
    ``verify=False`` skips the sha256 check (sizes are still checked).

    The library versions the artifact was saved with are compared with the installed ones:
    a different major or minor version is an :class:`EnvironmentMismatchWarning`; then the
    stored example is run again and outputs that moved are a :class:`DriftWarning`
    (``strict=True``: a :class:`VerificationError`). A load that fails because of the
    versions is an :class:`IncompatibleEnvironmentError` with the ``pip install`` line.
    """
    with collection_paused():  # see load_located
        return load_located(
            locate(source, store),
            trusted=trusted,
            verify=verify,
            strict=strict,
            options=backend_options,
        )


def load_located(
    found: Located,
    *,
    trusted: bool | Iterable[str] = False,
    verify: bool = True,
    strict: bool = False,
    options: dict[str, Any] | None = None,
) -> Any:
    """:func:`load` for an artifact already located (so its manifest is not read again)."""
    # a load allocates (lazy imports, the model's objects): a full collection it triggers
    # would sweep every object of the process (~80 ms with torch imported)
    with collection_paused():
        if options:
            check_options(get_plugins().backend(found.manifest.backend), options, when="load")
        with open_located(found) as files:
            return _load_opened(
                found, files, trusted=trusted, verify=verify, strict=strict, options=options
            )


def open_located(found: Located) -> PayloadFiles:
    """Open every file the load of ``found`` reads, once, refusing links and special files
    (see :mod:`persistkit.payload`). Close the result when done."""
    if found.folder:
        return PayloadFiles.open_foreign_folder(found.directory, found.manifest)
    if found.bare:
        path = found.directory / found.manifest.files[0].path
        return PayloadFiles.open_bare(path, found.manifest, found.identity)
    return PayloadFiles.open_artifact(found.directory, found.manifest)


def _load_opened(
    found: Located,
    files: PayloadFiles,
    *,
    trusted: bool | Iterable[str],
    verify: bool,
    options: dict[str, Any] | None,
    strict: bool = False,
) -> Any:
    """Check ``files`` as the trust at stake requires, then let the backend read them: from
    the descriptors that were checked, never by opening the paths again. Then compare the
    recorded library versions with the running ones (see :func:`load`)."""
    plugins = get_plugins()
    manifest = found.manifest
    state = "unsealed" if found.bare else seal_state(manifest)
    if state == "modified" and trusted is not True:
        raise SealBrokenError(
            f"{found.uri} was changed after it was sealed by a key you trust: its manifest "
            "(which records every file's hash) is not what was sealed",
            hint="restore it from its store or save the model again; if you trust where the "
            "change came from, pass trusted=True (then it loads as a stranger's file)",
        )
    sealed = state in ("yours", "trusted")
    info = plugins.backend(manifest.backend)
    seal_grants_trust = sealed and not info.safe and trusted is not True
    if not found.bare and (verify or seal_grants_trust):
        # a seal vouches for the recorded hashes: before it lets code-bearing formats run,
        # the hashes are checked, even with verify=False
        files.verify()
    policy = TrustPolicy.from_argument(trusted, sealed=sealed, source=found.uri)
    _check_backend_trust(info, policy)
    needed = bare_requirements(found, files, plugins) if found.bare else recorded(
        manifest.environment
    )
    differ = mismatches(needed)
    warn_mismatches(found.uri, differ)
    reads_pickle = _carries_versions(found)
    try:
        with (
            loading(files),
            library_version_warnings(found.uri, warned=bool(differ))
            if reads_pickle
            else contextlib.nullcontext(),
        ):
            model = plugins.hook_for_backend(manifest.backend).persistkit_load(
                backend=manifest.backend,
                directory=found.directory,
                manifest=manifest,
                options={**manifest.backend_options, **(options or {})},
                policy=policy,
                files=files,
            )
        files.ensure_unchanged()  # an in-place write while a backend read or mapped a file
        if model is None:
            raise PluginError(f"no plugin loaded backend {manifest.backend!r}")
        frozen = _freeze_model(model)
    except Exception as exc:
        explained = _explained_by_versions(exc, found, files, needed, differ)
        if explained is not None:
            raise explained from None
        if isinstance(exc, PersistkitError):
            raise
        # the payload decoded into an object that its own library finds inconsistent
        raise FormatError(
            f"{found.uri} loaded, but the model in it is broken: preparing it for inference "
            f"failed ({type(exc).__name__}: {exc})",
            hint="the file is damaged, or was written by incompatible library versions "
            "(`persistkit show` lists them)",
        ) from None
    if differ and manifest.example and not found.bare:
        check_drift(frozen, found, files, differ, strict=strict)
    return frozen


def _explained_by_versions(
    exc: Exception,
    found: Located,
    files: PayloadFiles,
    needed: dict[str, str],
    differ: list[Mismatch],
) -> Exception | None:
    """An :class:`IncompatibleEnvironmentError` when ``exc`` (a failed load) is what other
    library versions cause: a global of a trusted library that does not exist here (never a
    trust problem), or any failure of a payload made with other versions than run here.
    For a bare file, the versions are those the file carries. ``None`` otherwise."""
    if not needed and _carries_versions(found):
        try:  # a compressed file's versions, only now that the load failed
            needed = carried_versions(files.primary.read_bytes())
        except (PersistkitError, OSError):
            needed = {}
        differ = mismatches(needed)
    if isinstance(exc, UntrustedArtifactError):
        gone = missing_library_names(exc.globals_needed)
        if not gone:
            return None
        if not needed:
            needed = {m.distribution: m.saved for m in differ}
        return incompatible(
            found.uri,
            f"it needs {', '.join(gone[:5])}, which the installed version does not have",
            needed,
            differ,
        )
    if not differ:
        return None  # the same versions: the file itself is at fault
    if isinstance(exc, PersistkitError):
        # persistkit's own verdicts stand (damage, trust, a folder's paths), except where a
        # library's code refused the payload or its module is missing
        missing_module = isinstance(exc, ArtifactError) and any(
            isinstance(r, ImportCode) for r in exc.remedies
        )
        if not (isinstance(exc, LibraryRejectedError) or missing_module):
            return None
        detail = exc.message
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return incompatible(found.uri, detail.splitlines()[0][:300], needed, differ)


#: pickle-family formats whose bare files are scanned for the versions they carry
_CARRIES_VERSIONS = ("pickle", "joblib", "cloudpickle", "dill")


def _carries_versions(found: Located) -> bool:
    """A bare pickle-family file: no manifest, but its stream records library versions."""
    return found.bare and not found.folder and found.manifest.backend in _CARRIES_VERSIONS


def bare_requirements(found: Located, files: PayloadFiles, plugins: Plugins) -> dict[str, str]:
    """What a bare file or foreign folder says it needs: the plugins' answers
    (``persistkit_requirements``), else, for a pickle-family file, the library versions the
    stream carries (scikit-learn's ``_sklearn_version``)."""
    manifest = found.manifest
    needed: dict[str, str] = {}
    for answer in plugins.hook.persistkit_requirements(
        backend=manifest.backend, manifest=manifest, files=files
    ):
        if isinstance(answer, dict):
            needed.update({str(k): str(v) for k, v in answer.items()})
    if needed or not _carries_versions(found):
        return needed
    primary = files.primary
    try:  # searched in a map of the file: no copy, no second read
        return carried_versions_mapped(primary.fd, primary.size) or {}
    except (PersistkitError, OSError, ValueError):
        return {}


def check_drift(
    model: Any, found: Located, files: PayloadFiles, differ: list[Mismatch], *, strict: bool
) -> None:
    """With other library versions than at save time, re-run the stored example: outputs
    that moved are a :class:`DriftWarning` (a :class:`VerificationError` with ``strict``)."""
    moved = moved_example_outputs(model, files, found.manifest.example or {})
    if not moved:
        return
    message = (
        f"{found.uri}: with {describe_mismatches(differ)}, the stored example's "
        f"{'; '.join(moved)}"
    )
    if strict:
        raise VerificationError(
            message,
            hint="install the versions it was saved with: "
            + install_line(differ),
        )
    warn(DriftWarning(message + " (load(..., strict=True) makes this an error)"))


def moved_example_outputs(model: Any, files: PayloadFiles, example: dict[str, str]) -> list[str]:
    """Re-run the stored example on ``model``: one phrase per stored output (``outputs``,
    and continuous ones such as ``predict_proba``) that is not bitwise what was stored."""
    from persistkit.arrays import arrays_identical, to_numpy

    inputs = stored_array(files, example["inputs"])
    moved = []
    for role, path in example.items():
        if role == "inputs":
            continue
        expected = stored_array(files, path)
        method = None if role == "outputs" else role
        try:
            actual = to_numpy(predict(model, inputs, method=method))
        except PersistkitError as exc:
            moved.append(f"{role} fails ({exc.message})")
            continue
        if not arrays_identical(expected, actual):
            moved.append(f"{role} {_how_far(expected, actual)}")
    return moved


def _how_far(expected: np.ndarray, actual: np.ndarray) -> str:
    if expected.shape != actual.shape:
        return f"changed shape {expected.shape} -> {actual.shape}"
    if expected.dtype.kind in "fc" and actual.dtype.kind in "fc":
        diff = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
        return f"moved by up to {float(np.nanmax(diff)):.3g}"
    changed = int(np.sum(expected != actual))
    return f"changed for {changed} of {expected.size} values"


def _check_backend_trust(info: BackendInfo, policy: TrustPolicy) -> None:
    if info.safe or info.restricted or policy.trust_all:
        return
    raise UntrustedArtifactError(
        f"refusing to load {policy.source}: backend {info.name!r} runs code from the file "
        "when it loads, and the artifact is not sealed by a key you trust",
        hint="if you trust its source, pass trusted=True (that runs this file's code)",
    )


def inspect(source: Any, *, store: Store | str | None = None) -> Manifest:
    """The manifest of an artifact, without loading (or trusting) its payload."""
    if isinstance(source, str):
        kind, the_store = resolve_source(source, store)
        if kind == "ref" and the_store is not None:
            return the_store.manifest(source)
        if kind == "url":
            from persistkit.store import manifest_at_url

            return manifest_at_url(source)  # no download: the payload stays remote
        return _locate_path(Path(os.path.expanduser(source.removeprefix("file://")))).manifest
    return locate(source, store).manifest


def verify(
    source: Any, *, store: Store | str | None = None, trusted: bool | Iterable[str] = False
) -> VerifyReport:
    """Check every file's sha256, reload the model and prove the stored example's predictions
    come out bitwise identical. Raises :class:`VerificationError` if they differ."""
    from persistkit.reports import VerifyReport

    found = locate(source, store)
    if found.bare:
        raise VerificationError(
            f"{found.uri} is a bare model file: it has no manifest, so there are no recorded "
            "hashes or example predictions to verify it against",
            hint="`persistkit scan` audits it without loading; load it and save it with "
            "persistkit.save(..., example=...) to get an artifact that verify can prove",
        )
    manifest = found.manifest
    with open_located(found) as files:
        files.verify(rehash=True)  # an explicit check reads it all
        with warnings.catch_warnings():
            # verify's own comparison below says it, as an error
            warnings.simplefilter("ignore", DriftWarning)
            model = _load_opened(found, files, trusted=trusted, verify=False, options=None)
        state = seal_state(manifest)
        if not manifest.example:
            return VerifyReport(found.uri, len(manifest.files), False, True, state)
        moved = moved_example_outputs(model, files, manifest.example)
    if moved:
        differ = mismatches(recorded(manifest.environment))
        raise VerificationError(
            f"{found.uri}: after reload, the stored example's {'; '.join(moved)}",
            hint=(
                "the library versions differ from the ones it was saved with: "
                + install_line(differ)
                if differ
                else "the payload or its example files were changed since they were saved"
            ),
        )
    return VerifyReport(found.uri, len(manifest.files), True, True, state)


def stored_array(files: PayloadFiles, name: str) -> Any:
    """An example array of the artifact (``manifest.example`` names them), read from its
    checked descriptor."""
    try:
        return np.load(io.BytesIO(files[name].read_bytes()), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FormatError(
            f"the stored example {name} is not a readable .npy file: {exc}",
            hint="restore the artifact, or save the model again with example=",
        ) from None


def backends() -> list[BackendInfo]:
    """Every backend the installed plugins declare, available or not, sorted by name."""
    return sorted(get_plugins().backends.values(), key=lambda b: b.name)


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in options.items():
        if isinstance(value, (str, int, float, bool, type(None), list, dict)):
            out[key] = value
        else:
            out[key] = repr(value)
    return out


__all__ = [
    "MANIFEST_NAME",
    "VerifyReport",
    "backends",
    "choose_backend",
    "freeze",
    "inspect",
    "load",
    "predict",
    "save",
    "verify",
]
