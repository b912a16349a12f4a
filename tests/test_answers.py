"""Answers, not logits: a model saved with labels answers "setosa (0.97)" — from logits
(softmax), probabilities, or a classifier's own labels scored by predict_proba."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import persistkit
from persistkit.answers import Answer, score_batch
from persistkit.errors import InputError, ManifestError

ANIMALS = ["cat", "dog", "gnome"]


def logits_record(labels: list[Any] = ANIMALS) -> dict[str, Any]:
    return {"kind": "logits", "labels": labels}


# --- the arithmetic ------------------------------------------------------------------------


def test_logits_answer_with_the_softmax_of_the_largest() -> None:
    [answer] = score_batch(np.array([[1.0, 2.0, 4.0]]), logits_record()).answers()
    exp = np.exp([1.0, 2.0, 4.0])
    expected = exp / exp.sum()
    assert answer.label == "gnome"
    assert answer.score == pytest.approx(expected[2], rel=1e-12)
    assert answer.scores == pytest.approx(dict(zip(ANIMALS, expected)), rel=1e-12)
    assert list(answer.scores) == ["gnome", "dog", "cat"]  # best first


def test_softmax_of_huge_logits_neither_overflows_nor_gives_nan() -> None:
    with np.errstate(over="raise", invalid="raise"):
        [answer] = score_batch(np.array([[1000.0, 0.0, -1000.0]]), logits_record()).answers()
    assert answer.label == "cat" and answer.score == 1.0
    assert answer.scores == {"cat": 1.0, "dog": pytest.approx(np.exp(-1000.0)), "gnome": 0.0}


def test_two_labels_and_one_logit_column_is_a_sigmoid_of_the_second_label() -> None:
    scored = score_batch(np.array([[2.0], [-3.0]], dtype=np.float32), logits_record(["no", "yes"]))
    first, second = scored.answers()
    p = 1 / (1 + np.exp(-2.0))
    assert (first.label, second.label) == ("yes", "no")
    assert first.score == pytest.approx(p, rel=1e-6)
    assert second.scores == pytest.approx(
        {"no": 1 / (1 + np.exp(-3.0)), "yes": 1 / (1 + np.exp(3.0))}
    )
    assert scored.probabilities is not None and scored.probabilities.dtype == np.float32


def test_sigmoid_of_huge_logits_is_exact_without_overflow() -> None:
    with np.errstate(over="raise"):
        scored = score_batch(np.array([800.0, -800.0]), logits_record(["no", "yes"]))
    assert [str(a) for a in scored.answers()] == ["yes (1.00)", "no (1.00)"]


def test_probabilities_are_used_as_they_are() -> None:
    record = {"kind": "probabilities", "labels": ANIMALS}
    [answer] = score_batch(np.array([[0.2, 0.7, 0.1]]), record).answers()
    assert (answer.label, answer.score) == ("dog", 0.7)
    binary = score_batch(np.array([0.9]), {"kind": "probabilities", "labels": ["no", "yes"]})
    assert binary.answers()[0].scores == pytest.approx({"yes": 0.9, "no": 0.1})


def test_answer_reads_label_and_score_with_two_decimals() -> None:
    answer = Answer("gnome", 0.9712, {"gnome": 0.9712, "cat": 0.0288})
    assert str(answer) == "gnome (0.97)"
    assert str(Answer(3)) == "3"
    assert answer.top(1) == [("gnome", 0.9712)]
    assert answer.to_dict() == {
        "label": "gnome",
        "score": 0.9712,
        "scores": {"gnome": 0.9712, "cat": 0.0288},
    }
    assert Answer(3, 1.0, {3: 1.0}).to_dict()["scores"] == {"3": 1.0}  # JSON keys


def test_outputs_with_another_number_of_columns_than_labels_are_refused() -> None:
    with pytest.raises(ManifestError, match=r"3 labels.*shape \(1, 4\).*one column per label"):
        score_batch(np.zeros((1, 4)), logits_record())
    with pytest.raises(InputError, match="labels= has 3 labels"):
        score_batch(np.zeros((1, 2)), logits_record(), origin="labels=")
    with pytest.raises(ManifestError, match="one column per label"):
        score_batch(np.zeros((1, 3, 2)), logits_record())


def test_a_labels_model_without_predict_proba_answers_its_labels_unscored() -> None:
    scored = score_batch(np.array(["cat", "dog"]), {"kind": "labels", "labels": ANIMALS})
    assert [str(a) for a in scored.answers()] == ["cat", "dog"]
    assert scored.probabilities is None


# --- classifiers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iris() -> tuple[Any, np.ndarray]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    names = data.target_names[data.target]
    return LogisticRegression(max_iter=1000).fit(data.data, names), data.data


def test_an_iris_classifier_answers_its_classes_scored_by_predict_proba(
    iris: tuple[Any, np.ndarray],
) -> None:
    model, X = iris
    rows = X[[0, 60, 120]]
    persistkit.save(model, "iris", example=X[:5])
    assert persistkit.inspect("iris").outputs == {
        "kind": "labels",
        "labels": ["setosa", "versicolor", "virginica"],
    }
    answers = persistkit.answer("iris", rows)
    probabilities = model.predict_proba(rows)
    assert [a.label for a in answers] == model.predict(rows).tolist()
    assert [a.score for a in answers] == probabilities.max(axis=1).tolist()
    assert [str(a) for a in answers] == [
        f"{a.label} ({p:.2f})" for a, p in zip(answers, probabilities.max(axis=1))
    ]
    assert str(answers[0]).startswith("setosa (0.9")


def test_a_classifier_object_answers_with_its_own_classes(iris: tuple[Any, np.ndarray]) -> None:
    model, X = iris
    [answer] = persistkit.answer(model, X[:1])
    assert answer.label == "setosa"
    assert set(answer.scores or {}) == {"setosa", "versicolor", "virginica"}


def test_a_model_object_with_nothing_saying_what_outputs_mean_gets_a_hint() -> None:
    with pytest.raises(InputError, match="labels="):
        persistkit.answer(lambda x: np.zeros((len(x), 3)), np.zeros((1, 2)))
    [answer] = persistkit.answer(
        lambda x: np.array([[0.0, 5.0, 0.0]]), np.zeros((1, 2)), labels=ANIMALS
    )
    assert answer.label == "dog"


def test_labels_that_do_not_fit_the_example_outputs_are_refused_at_save() -> None:
    with pytest.raises(InputError, match="labels= has 2 labels"):
        persistkit.save(
            lambda x: np.zeros((len(x), 3)), "bad", example=np.zeros((2, 2)), labels=["a", "b"]
        )


def test_two_labels_fit_one_output_column_at_save(tmp_path: Path) -> None:
    saved = persistkit.save(
        lambda x: x[:, :1] * 10.0,
        tmp_path / "binary",
        example=np.array([[1.0, 0.0], [-1.0, 0.0]]),
        labels=["no", "yes"],
    )
    answers = persistkit.answer(saved, np.array([[1.0, 0.0], [-1.0, 0.0]]), trusted=True)
    assert [a.label for a in answers] == ["yes", "no"]


def resealed(data: dict[str, Any]) -> str:
    """The manifest ``data`` sealed again with this user's key, as JSON."""
    from persistkit.manifest import Manifest
    from persistkit.safety import seal

    manifest = Manifest.from_dict(data)
    manifest.seal = seal(manifest)
    return manifest.to_json()


def test_an_old_manifest_without_outputs_still_predicts_raw_but_has_no_answers(
    iris: tuple[Any, np.ndarray], tmp_path: Path
) -> None:
    model, X = iris
    persistkit.save(model, tmp_path / "old", example=X[:5])
    path = tmp_path / "old" / "persistkit.json"
    data = json.loads(path.read_text())
    del data["outputs"]
    path.write_text(resealed(data))  # as persistkit 0.1 wrote it: no outputs, sealed
    assert persistkit.inspect(tmp_path / "old").outputs is None
    assert persistkit.predict(tmp_path / "old", X[:2]).tolist() == ["setosa", "setosa"]
    with pytest.raises(InputError, match="nothing says what this model's outputs mean"):
        persistkit.answer(tmp_path / "old", X[:2])
    [answer] = persistkit.answer(
        tmp_path / "old", X[:1], labels=["setosa", "versicolor", "virginica"]
    )
    assert answer.label == "setosa" and answer.score is not None


def test_a_damaged_outputs_record_is_a_manifest_error(
    iris: tuple[Any, np.ndarray], tmp_path: Path
) -> None:
    model, X = iris
    persistkit.save(model, tmp_path / "damaged", example=X[:5])
    path = tmp_path / "damaged" / "persistkit.json"
    data = json.loads(path.read_text())
    data["outputs"] = {"kind": "horoscope", "labels": ["a"]}
    path.write_text(resealed(data))
    with pytest.raises(ManifestError, match="outputs record is not valid"):
        persistkit.answer(tmp_path / "damaged", X[:1])


# --- networks ------------------------------------------------------------------------------


def test_a_torch_network_saved_with_labels_answers_softmax_of_its_logits(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch_helpers import mlp_inputs, outputs, trained_mlp

    model = trained_mlp()
    X = mlp_inputs(6)
    saved = persistkit.save(model, tmp_path / "mlp", example=X, labels=ANIMALS)
    assert persistkit.inspect(saved).outputs == {"kind": "logits", "labels": ANIMALS}
    logits = outputs(model, X)
    expected = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
    answers = persistkit.answer(saved, X)
    assert [a.label for a in answers] == [ANIMALS[i] for i in expected.argmax(axis=1)]
    for answer, row in zip(answers, expected):
        assert answer.score == pytest.approx(row.max(), rel=1e-6)
        assert [answer.scores[k] for k in ANIMALS] == pytest.approx(row.tolist(), rel=1e-6)


def test_answer_and_answer_class_are_public() -> None:
    assert "answer" in persistkit.__all__ and "Answer" in persistkit.__all__
    assert persistkit.Answer is Answer


# --- regressions found in review ---------------------------------------------------------------


def test_labels_that_are_not_a_classifiers_classes_are_refused_at_save(
    iris: tuple[Any, np.ndarray], tmp_path: Path
) -> None:
    model, _ = iris
    with pytest.raises(InputError, match="classes_"):
        persistkit.save(model, tmp_path / "m", labels=["a", "b", "c"])


def test_an_empty_batch_has_no_answers() -> None:
    assert persistkit.answer(lambda x: np.zeros((0, 3)), np.zeros((0, 2)), labels=list("abc"),
                             output="logits") == []


def test_a_single_label_is_refused() -> None:
    with pytest.raises(InputError, match="2 to"):
        persistkit.answer(lambda x: np.zeros((1, 1)), np.zeros((1, 2)), labels=["cat"],
                          output="logits")
