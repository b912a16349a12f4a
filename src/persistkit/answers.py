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
from dataclasses import dataclass
from typing import Any

import numpy as np

from persistkit.errors import InputError, ManifestError, PersistkitError

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
    described = facts.get("labels") if classes is None else None
    if labels is None and described is not None:
        # an adapter that knows the model's own labels (a Hugging Face id2label) and what
        # its outputs are ("logits")
        kind = output or facts.get("output") or "logits"
        return {"kind": kind, "labels": _checked_labels(described, what="the model's labels")}
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
        if classes is not None and len(classes) < 2 and output is None:
            return None  # a classifier fitted on one class has nothing to tell apart
        labels = classes
    checked = _checked_labels(labels, what="labels=")
    if (
        classes is not None
        and (output or "labels") == "labels"
        and [str(c) for c in checked] != [str(c) for c in classes]
    ):
        shown = ", ".join(map(str, list(classes)[:10]))
        raise InputError(
            f"labels= must be this classifier's classes_ ({shown}), in that order: it "
            "predicts those, so other labels would never match an answer",
            hint="leave labels= out (the classes are the labels), or fit the model on "
            "the names you want to see",
        )
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
    if not 2 <= len(items) <= MAX_LABELS:
        raise InputError(
            f"{what} must hold 2 to {MAX_LABELS} labels, not {len(items)}",
            hint="one label per class the model tells apart (a yes/no model: two)",
        )
    out = []
    for item in items:
        value = item.item() if hasattr(item, "item") and callable(item.item) else item
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InputError(
                f"{what} holds {value!r} ({type(value).__name__}); labels are strings or numbers",
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
    """At save, with an example: the model's outputs must have one column per label (or,
    for two labels, one column: the second label's logit or probability)."""
    if not record or "labels" not in record or record["kind"] == "labels":
        return
    from persistkit.arrays import to_numpy

    try:
        array = np.asarray(to_numpy(outputs))
    except Exception:  # outputs that are not one array (tuples, dicts)
        return
    _check_columns(array, record, InputError, "labels=", what="for example=")


# --- answers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One item's answer: its label, and when known the label's score and every label's score.

    ``scores`` maps each label to its probability, highest first (``None`` when the model
    gives none, e.g. a classifier without ``predict_proba``). ``str(answer)`` is what people
    read: ``gnome (0.97)``, the score with two decimals.
    """

    label: Any
    score: float | None = None
    scores: dict[Any, float] | None = None

    def __str__(self) -> str:
        return str(self.label) if self.score is None else f"{self.label} ({self.score:.2f})"

    def top(self, k: int = 5) -> list[tuple[Any, float]]:
        """The ``k`` best labels with their scores, best first (empty without scores)."""
        return list(self.scores.items())[:k] if self.scores else []

    def to_dict(self) -> dict[str, Any]:
        """``{"label", "score", "scores"}`` for JSON (full floats; label keys as strings)."""
        out: dict[str, Any] = {"label": self.label}
        if self.score is not None:
            out["score"] = self.score
        if self.scores is not None:
            out["scores"] = {str(k): v for k, v in self.scores.items()}
        return out


@dataclass(frozen=True)
class ScoredBatch:
    """A batch interpreted by its outputs record: what the server sends beside the raw output.

    ``predicted`` holds one label per item; ``probabilities`` is ``(N, len(labels))`` in the
    labels' order (``None`` when the model gives no scores).
    """

    labels: list[Any] | None
    predicted: list[Any]
    probabilities: np.ndarray | None

    def answers(self) -> list[Answer]:
        """One :class:`Answer` per item."""
        if self.probabilities is None or self.labels is None:
            return [Answer(label) for label in self.predicted]
        position = {str(label): i for i, label in enumerate(self.labels)}
        answers = []
        for label, row in zip(self.predicted, self.probabilities.tolist()):
            order = sorted(range(len(row)), key=lambda i: -row[i])  # stable: ties keep order
            scores = {self.labels[i]: row[i] for i in order}
            answers.append(Answer(label, row[position[str(label)]], scores))
        return answers


def scores_datatype(record: dict[str, Any], raw_datatype: str | None) -> str:
    """The OIP datatype of the ``scores`` a batch gets: ``FP32`` for float32 (or narrower)
    logits or probabilities, else ``FP64`` (scikit-learn's ``predict_proba`` is float64)."""
    if record["kind"] != "labels" and raw_datatype in ("FP16", "FP32"):
        return "FP32"
    return "FP64"


def score_batch(
    raw: Any,
    record: dict[str, Any],
    *,
    model: Any = None,
    batch: Any = None,
    origin: str = "the manifest's labels",
) -> ScoredBatch:
    """Interpret a batch's raw outputs by ``record`` (a checked outputs record).

    - ``"logits"``: softmax over the columns (numerically stable: the row's largest logit
      is subtracted first); with two labels and **one** column, the column is the second
      label's logit and its sigmoid is that label's probability (the first label gets 1 − p).
    - ``"probabilities"``: used as they are; two labels and one column: p of the second label.
    - ``"labels"``: the raw outputs are the labels; scores come from
      ``predict(model, batch, method="predict_proba")`` when ``model`` has ``predict_proba``.

    The predicted label of logits or probabilities is the one with the highest score.
    Raises :class:`ManifestError` (``InputError`` when ``origin`` is an argument) when the
    outputs do not have one column per label.
    """
    from persistkit.arrays import to_numpy

    error = ManifestError if origin.startswith("the manifest") else InputError
    array = np.asarray(to_numpy(raw))
    labels = record.get("labels")
    if record["kind"] == "labels":
        return _scored_labels(array, labels, model, batch, error, origin)
    assert labels is not None  # output_record/read_record require labels for these kinds
    _check_columns(array, record, error, origin, what="at predict time")
    if array.dtype.kind not in "fiub":
        raise error(
            f"the model's {record['kind']} are {array.dtype} values, not numbers",
            hint='save it with output="labels" if it predicts labels itself',
        )
    dtype = np.float32 if array.dtype in (np.float16, np.float32) else np.float64
    width = array.shape[-1] if array.ndim >= 2 else 1
    values = array.astype(np.float64).reshape(len(array), width)
    if record["kind"] == "logits":
        probabilities = _sigmoid_pair(values) if values.shape[1] == 1 else _softmax(values)
    else:
        probabilities = np.hstack([1 - values, values]) if values.shape[1] == 1 else values
    probabilities = probabilities.astype(dtype)
    predicted = [labels[i] for i in np.argmax(probabilities, axis=1).tolist()]
    return ScoredBatch(labels, predicted, probabilities)


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = values - values.max(axis=1, keepdims=True)  # exp never overflows
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _sigmoid_pair(values: np.ndarray) -> np.ndarray:
    positive = 0.5 * (1.0 + np.tanh(0.5 * values))  # the logistic function, overflow-free
    return np.hstack([1.0 - positive, positive])


def _check_columns(
    array: np.ndarray,
    record: dict[str, Any],
    error: type[PersistkitError],
    origin: str,
    *,
    what: str,
) -> None:
    n = len(record["labels"])
    width = array.shape[1] if array.ndim == 2 else 1 if array.ndim == 1 else None
    if width == n or (n == 2 and width == 1):
        return
    raise error(
        f"{origin} has {n} labels, but the model's {record['kind']} {what} have shape "
        f"{tuple(array.shape)}: there must be one column per label (or, for 2 labels, one "
        "column holding the second label's score)",
        hint="give the labels in the order of the model's output columns",
    )


def _scored_labels(
    array: np.ndarray,
    labels: list[Any] | None,
    model: Any,
    batch: Any,
    error: type[PersistkitError],
    origin: str,
) -> ScoredBatch:
    if array.ndim != 1:
        raise error(
            f"a model that predicts labels should give one label per item, not outputs of "
            f"shape {tuple(array.shape)}",
            hint='save it with output="logits" or "probabilities" and one label per column',
        )
    predicted = [v.item() if hasattr(v, "item") else v for v in array.tolist()]
    if labels is None or model is None or batch is None:
        return ScoredBatch(labels, predicted, None)
    from persistkit.api import predict
    from persistkit.arrays import to_numpy

    try:  # asked through the adapter: an ONNX classifier has it without the attribute
        probabilities = np.asarray(to_numpy(predict(model, batch, method="predict_proba")))
    except PersistkitError:  # a classifier without probabilities: the label alone
        return ScoredBatch(labels, predicted, None)
    if probabilities.shape != (len(array), len(labels)):
        raise error(
            f"{origin} has {len(labels)} labels, but predict_proba gives shape "
            f"{tuple(probabilities.shape)} for {len(array)} items",
            hint="give the labels in the order of the classifier's classes_",
        )
    known = {str(label) for label in labels}
    stray = next((p for p in predicted if str(p) not in known), None)
    if stray is not None:
        raise error(
            f"the model predicted {stray!r}, which is not among {origin}",
            hint="give the classifier's classes_ as labels, or leave labels= out",
        )
    return ScoredBatch(labels, predicted, probabilities.astype(np.float64))


def record_for_model(
    model: Any, labels: Sequence[Any] | None, output: str | None
) -> dict[str, Any] | None:
    """The outputs record for a model object: from ``labels=``/``output=``, with a
    classifier's own classes (as its adapter describes them) as the default labels."""
    from persistkit.api import describe

    return output_record(labels, output, describe(model))


def record_of(manifest: Any, model: Any, *, bare: bool) -> dict[str, Any] | None:
    """What a loaded model's outputs mean: the manifest's record, or for a bare file or a
    foreign folder (no persistkit manifest) what the model says about itself (a classifier's
    ``classes_``, a Hugging Face ``id2label``)."""
    if manifest.outputs is not None or not bare:
        return read_record(manifest.outputs)
    try:
        return record_for_model(model, None, None)
    except InputError:  # labels the model carries that are not usable as labels
        return None


def answer(
    source_or_model: Any,
    inputs: Any,
    *,
    labels: Sequence[Any] | None = None,
    output: str | None = None,
    **load_options: Any,
) -> list[Answer]:
    """Predict and return one :class:`Answer` per item: ``str(a)`` reads ``gnome (0.97)``.

    ``source_or_model`` is a path, URL, store ref or :class:`~persistkit.Artifact` (its
    manifest says what the outputs mean, and a picture file among ``inputs`` is read with
    the manifest's preprocessing), or a model object: then ``labels=``/``output=`` say it (a
    scikit-learn classifier's ``classes_`` are its default labels). ``labels=``/``output=``
    given with a source replace the manifest's record. ``load_options`` are ``load``'s.
    Raises :class:`InputError` when nothing says what the outputs mean.
    """
    import os

    from persistkit.api import load_for_inputs
    from persistkit.api import predict as run_model
    from persistkit.records import Artifact

    model = source_or_model
    record: dict[str, Any] | None
    if isinstance(source_or_model, (str, os.PathLike, Artifact)):
        model, inputs, found = load_for_inputs(source_or_model, inputs, load_options)
        if labels is None and output is None:
            record = record_of(found.manifest, model, bare=found.bare)
            origin = "the manifest's labels"
        else:
            record = record_for_model(model, labels, output)
            origin = "labels="
    else:
        record = record_for_model(model, labels, output)
        origin = "labels="
    if record is None:
        raise InputError(
            "nothing says what this model's outputs mean, so there are no answers to give",
            hint='pass labels=[...] (and output="logits" or "probabilities"), or save the '
            "model with them; persistkit.predict gives the raw outputs",
        )
    raw = run_model(model, inputs)
    return score_batch(raw, record, model=model, batch=inputs, origin=origin).answers()
