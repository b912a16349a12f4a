"""The `persistkit predict` command: feed files (pictures, .npy, .csv, .json) to a saved model."""

from __future__ import annotations

from typing import Any

import click

from persistkit.cli.batch import batch_options, predict_batch
from persistkit.cli.options import (
    app_dir_option,
    json_option,
    print_json,
    store_option,
    trust_option,
    trusted,
    use_app_dir,
)
from persistkit.errors import InputError


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """``"28x28"`` -> ``(28, 28)`` (height, width)."""
    if text is None:
        return None
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit() or int(height) * int(width) == 0:
        raise click.BadParameter("give the size as HEIGHTxWIDTH, e.g. 28x28")
    return int(height), int(width)


def format_prediction(value: Any) -> str:
    """One item's prediction for people: a label, or numbers separated by spaces."""
    import numpy as np

    array = np.asarray(value)
    if array.ndim == 0:
        item = array.item()
        return f"{item:.6g}" if isinstance(item, float) else str(item)
    return " ".join(format_prediction(v) for v in array.reshape(-1))


@click.command()
@click.argument("ref")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@store_option
@json_option
@click.option(
    "--method",
    default=None,
    metavar="NAME",
    help="Prediction method: predict_proba, decision_function, transform, ...",
)
@click.option(
    "--image-size",
    default=None,
    metavar="HxW",
    help="Resize pictures to HEIGHTxWIDTH (default: taken from the model's signature).",
)
@click.option(
    "--fit",
    type=click.Choice(["stretch", "crop", "pad"]),
    default="stretch",
    show_default=True,
    help="How a picture of another aspect ratio meets the model's input size: stretch it, "
    "crop its center, or fit it inside and pad with black.",
)
@click.option(
    "--raw",
    is_flag=True,
    help="Print the model's raw outputs even when it was saved with labels.",
)
@trust_option()
@app_dir_option
@batch_options
def predict(
    ref: str,
    inputs: tuple[str, ...],
    store_url: str | None,
    as_json: bool,
    method: str | None,
    image_size: str | None,
    fit: str,
    raw: bool,
    trust: tuple[str, ...],
    app_dir: str,
    **batch: Any,
) -> None:
    """Predict with REF on each INPUT: pictures (PNG, JPEG, ...), .npy, .csv or .json files.

    \b
    Pictures are converted to grayscale or RGB, resized to the model's input size and given
    to the model as 0-255 pixel values, unless the model was saved with preprocess= (then
    resized, cropped, rescaled and normalized as that says); rows of a .csv and items of a
    .json list are items. A picture that had to be changed (size, colours, alpha) gets one
    line on stderr saying what was done (under "warnings" with --json).
    A model saved with labels answers "photo.jpg: gnome (0.97)" (with --json:
    {"label", "score", "scores"} per item); --raw or --method give the raw outputs.
    Prints one line per item, or {"predictions": [...]} with --json.

    \b
    Examples:
      persistkit predict digits one.png two.png
      persistkit predict digits:3 batch.npy --json
      persistkit predict digits one.png --method predict_proba
      persistkit predict gnome photo.jpg --raw

    \b
    With --output FILE (.parquet or .csv), INPUTs may also be folders (searched
    recursively), globs or @list files, and the answers go to that table, one row per item
    beside its input path; --engine dask spreads the work over a Dask cluster (see
    docs/batch.md):
      persistkit predict digits scans/ --engine dask --output answers.parquet
    """
    if any(batch.values()):
        predict_batch(click.get_current_context().params)
        return
    from persistkit.answers import read_record, record_of, score_batch
    from persistkit.api import load_located, locate
    from persistkit.api import predict as run_model
    from persistkit.arrays import to_numpy
    from persistkit.inputs import read_inputs
    from persistkit.preprocess import checked_spec
    from persistkit.signature import Signature

    use_app_dir(app_dir)
    size = parse_image_size(image_size)
    found = locate(ref, store_url)  # once: the inputs are shaped for the version that loads
    manifest = found.manifest
    signature = Signature.from_manifest(manifest.signature)
    spec = checked_spec(manifest.preprocess, manifest=True)
    if not (raw or method):
        read_record(manifest.outputs)  # a damaged record fails before any work
    changes: list[str] = []
    batches = read_inputs(
        inputs, signature.input, image_size=size, fit=fit, changes=changes, preprocess=spec
    )
    for change in changes:
        click.echo(f"note: {change}", err=True)
    model = load_located(found, trusted=trusted(trust))
    record = None if raw or method else record_of(manifest, model, bare=found.bare)
    batch = _concatenated(batches)
    predictions = to_numpy(run_model(model, batch, method=method))
    if predictions.ndim == 0 or len(predictions) != len(batch):
        raise InputError(
            f"the model returned {predictions.shape} for {len(batch)} items",
            hint="use a --method that returns one prediction per item",
        )
    values: list[Any] = predictions.tolist()
    shown: list[str] = [format_prediction(v) for v in predictions] if not as_json else []
    if record is not None:
        answers = score_batch(predictions, record, model=model, batch=batch).answers()
        values = [a.to_dict() for a in answers]
        shown = [str(a) for a in answers]
    if as_json:
        print_json({"predictions": values, **({"warnings": changes} if changes else {})})
        return
    for label, text in zip(_item_labels(inputs, [len(b) for b in batches]), shown):
        click.echo(f"{label}: {text}")


def _concatenated(batches: list[Any]) -> Any:
    import numpy as np

    return np.concatenate(batches) if len(batches) > 1 else batches[0]


def _item_labels(inputs: tuple[str, ...], counts: list[int]) -> list[str]:
    labels = []
    for path, count in zip(inputs, counts):
        labels += [path] if count == 1 else [f"{path}[{i}]" for i in range(count)]
    return labels


def register(group: click.Group) -> None:
    """Add this module's commands to the `persistkit` group."""
    group.add_command(predict)
