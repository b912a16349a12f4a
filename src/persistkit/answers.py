"""What a model's outputs mean, so predictions end as answers a person reads.

``save(..., labels=[...], output="logits")`` records ``{"kind": ..., "labels": [...]}`` in the
manifest (``Manifest.outputs``). Kinds:

- ``"logits"``: one unnormalised score per label; an answer is the label of the largest score,
  with its softmax probability.
- ``"probabilities"``: one probability per label (rows sum to 1).
- ``"labels"``: the model predicts labels itself (scikit-learn classifiers); scores come from
  ``predict_proba`` when the model has it.

The record is data checked like all manifest data: labels are strings or numbers, at most
:data:`MAX_LABELS` of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from persistkit.errors import InputError, ManifestError

OUTPUT_KINDS = ("logits", "probabilities", "labels")
MAX_LABELS = 100_000
MAX_LABEL_LENGTH = 1000


def output_record(
    labels: Sequence[Any] | None, output: str | None, facts: dict[str, Any]
) -> dict[str, Any] | None:
    """The ``outputs`` record for the manifest from ``save``'s ``labels=`` and ``output=``.

    ``facts`` is what the adapters said about the model: ``classes`` (scikit-learn's
    ``classes_``) supplies labels when none are given, and a classifier's default kind is
    ``"labels"``; a network given labels defaults to ``"logits"``. Returns ``None`` when
    nothing is known. Raises :class:`InputError` for a bad kind or bad labels.
    """
    classes = facts.get("classes")
    if output is not None and output not in OUTPUT_KINDS:
        raise InputError(
            f"output={output!r} is not a kind persistkit knows",
            hint=f"pass one of: {', '.join(repr(k) for k in OUTPUT_KINDS)}",
        )
    if labels is None and classes is None:
        if output is None:
            return None
        if output != "labels":
            raise InputError(
                f'output="{output}" needs labels= (one per output column)',
                hint='pass labels=["cat", "dog", ...] in the order of the model\'s outputs',
            )
        return {"kind": output}
    if labels is None:
        labels = classes
    checked = _checked_labels(labels, what="labels=")
    kind = output or ("labels" if classes is not None else "logits")
    return {"kind": kind, "labels": checked}


def _checked_labels(labels: Any, *, what: str) -> list[Any]:
    if isinstance(labels, (str, bytes, dict)):
        raise InputError(f"{what} must be a list of labels, not {type(labels).__name__}")
    try:
        items = list(labels)
    except TypeError:
        raise InputError(
            f"{what} must be a list of labels, not {type(labels).__name__}",
            hint='pass labels=["cat", "dog", ...]',
        ) from None
    if not items or len(items) > MAX_LABELS:
        raise InputError(f"{what} must hold 1 to {MAX_LABELS} labels, not {len(items)}")
    out = []
    for item in items:
        value = item.item() if hasattr(item, "item") and callable(item.item) else item
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InputError(
                f"{what} holds {value!r} ({type(value).__name__}); labels are strings or "
                "numbers",
                hint="convert them with str()",
            )
        if isinstance(value, str) and len(value) > MAX_LABEL_LENGTH:
            raise InputError(f"a label in {what} is over {MAX_LABEL_LENGTH} characters")
        out.append(value)
    if len(set(map(str, out))) != len(out):
        raise InputError(f"{what} repeats a label", hint="give each output column its own label")
    return out


def read_record(record: Any) -> dict[str, Any] | None:
    """Validate a manifest's ``outputs`` record (untrusted) and return it, or ``None``."""
    if record is None:
        return None
    if not isinstance(record, dict) or record.get("kind") not in OUTPUT_KINDS:
        raise ManifestError(
            f"the manifest's outputs record is not valid: {str(record)[:80]}",
            hint="the artifact is damaged or was written by a newer persistkit",
        )
    if "labels" in record:
        try:
            labels = _checked_labels(record["labels"], what="the manifest's labels")
        except InputError as exc:
            raise ManifestError(str(exc)) from None
        return {"kind": record["kind"], "labels": labels}
    return {"kind": record["kind"]}


def check_against_outputs(record: dict[str, Any] | None, outputs: Any) -> None:
    """At save, with an example: the model's outputs must have one column per label."""
    if not record or "labels" not in record or record["kind"] == "labels":
        return
    import numpy as np

    from persistkit.arrays import to_numpy

    try:
        array = to_numpy(outputs)
    except Exception:  # outputs that are not one array (tuples, dicts)
        return
    width = array.shape[-1] if array.ndim >= 2 else None
    n = len(record["labels"])
    if width != n:
        shape = tuple(np.shape(array))
        raise InputError(
            f"labels= has {n} labels, but the model's {record['kind']} for example= have "
            f"shape {shape}: there must be one label per output column",
            hint="pass the labels in the order of the model's output columns",
        )
