"""``convert``: a new version of a stored model in another format, proved before it appears.

The source is loaded under the usual trust rules, checked to still reproduce its own stored
example (bitwise: otherwise the conversion would start from a model that is not the one that
was saved), and saved again with backend ``to``. A converting backend (``export``, ``onnx``)
reloads what it wrote and compares it with the source on the example before the new version
is published; anything else is verified by reloading right after (``check=True``). Labels,
output kind, preprocessing, metadata, tags, metrics, params and lineage are carried over; the
new manifest names its source.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from persistkit.arrays import arrays_identical, to_numpy
from persistkit.errors import InputError, VerificationError
from persistkit.records import Artifact
from persistkit.store import Store


def convert(
    source: Any,
    to: str,
    *,
    store: Store | str | None = None,
    target: str | os.PathLike[str] | None = None,
    example: Any = None,
    trusted: bool | Iterable[str] = False,
    **backend_options: Any,
) -> Artifact:
    """Write ``source`` (a ref, path or Artifact) again with backend ``to``.

    A stored model gets a new version of the same name in the same store; an artifact
    folder needs ``target=`` (a new folder path). ``example`` (an input batch, or the path of
    a ``.npy`` file) defaults to the example stored with the source; one is needed.
    Raises :class:`VerificationError` when the source no longer reproduces its own stored
    example, :class:`CannotSaveError` when the converted model does not match it.
    """
    from persistkit.api import (
        load_located,
        locate,
        open_located,
        predict,
        save,
        stored_array,
    )

    found = locate(source, store)
    manifest = found.manifest
    stored_inputs = stored_outputs = None
    if manifest.example and not found.bare:
        with open_located(found) as files:
            stored_inputs = stored_array(files, manifest.example["inputs"])
            stored_outputs = stored_array(files, manifest.example["outputs"])
    batch = _example_batch(example) if example is not None else stored_inputs
    if batch is None:
        raise InputError(
            f"{found.uri} has no stored example, and converting needs inputs to run the model "
            "on and check the result against",
            hint="pass example=<a small batch of real inputs> (CLI: --example batch.npy)",
        )
    if target is None and not found.in_store:
        raise InputError(
            f"{found.uri} is not in a store, so there is no model name to add a version to",
            hint="pass target=<a new folder path> (CLI: --to-path DIR)",
        )
    model = load_located(found, trusted=trusted)
    if stored_inputs is not None and stored_outputs is not None:
        again = to_numpy(predict(model, stored_inputs))
        if not arrays_identical(stored_outputs, again):
            raise VerificationError(
                f"{found.uri} no longer reproduces the predictions stored with it, so a "
                "conversion would start from a different model",
                hint="`persistkit verify` says more; install the library versions in its "
                "manifest (`persistkit show`) and convert again",
            )
    name = manifest.name if found.in_store else None
    the_store = store if isinstance(store, Store) else Store(store)
    outputs = manifest.outputs or {}
    metadata = {**manifest.metadata, "converted_from": found.uri}
    artifact = save(
        model,
        os.fspath(target) if target is not None else name,
        backend=to,
        store=the_store if target is None else None,
        example=batch,
        metadata=metadata,
        tags=dict(manifest.tags),
        labels=outputs.get("labels"),
        output=outputs.get("kind"),
        preprocess=manifest.preprocess,
        # the same model: its training's record, not the converting script's git commit
        metrics=manifest.metrics,
        params=manifest.params,
        lineage={**manifest.lineage, "git": manifest.lineage.get("git")},
        check=True,
        **backend_options,
    )
    return artifact


def _example_batch(example: Any) -> np.ndarray:
    if isinstance(example, (str, os.PathLike)):
        path = Path(example)
        if path.suffix.lower() != ".npy" or not path.is_file():
            raise InputError(
                f"example {path} is not a .npy file here",
                hint="save a batch with numpy.save('batch.npy', x) and pass its path",
            )
        try:
            return np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"example {path} is not a readable .npy file: {exc}") from None
    return to_numpy(example)


__all__ = ["convert"]
