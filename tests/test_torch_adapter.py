"""The PyTorch adapter: freeze, predict, describe and the automatic backend choice."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import persistkit  # noqa: E402
from persistkit.api import choose_backend, describe  # noqa: E402
from persistkit.errors import CannotSaveError, InputError  # noqa: E402
from torch_helpers import mlp_inputs, outputs, trained_mlp, trained_tied  # noqa: E402

pytestmark = pytest.mark.torch


# --- freeze ----------------------------------------------------------------------------------


def test_freeze_puts_the_module_in_eval_mode_and_turns_off_gradients() -> None:
    model = trained_mlp()
    model.train()
    frozen = persistkit.freeze(model)
    assert frozen is model
    assert frozen.training is False
    assert all(not m.training for m in frozen.modules())
    assert not any(p.requires_grad for p in frozen.parameters())


def test_freeze_changes_neither_dtype_nor_device_nor_weights() -> None:
    model = trained_mlp().double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    persistkit.freeze(model)
    after = model.state_dict()
    assert all(
        torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype for k in before
    )
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_freeze_makes_a_dropout_model_deterministic() -> None:
    model = trained_mlp(dropout=0.5, batchnorm=False)
    x = torch.from_numpy(mlp_inputs(n=64))
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout is live in training mode
    persistkit.freeze(model)
    assert np.array_equal(persistkit.predict(model, x), persistkit.predict(model, x))


# --- predict -----------------------------------------------------------------------------------


def test_predict_accepts_numpy_lists_and_tensors_alike() -> None:
    model = persistkit.freeze(trained_mlp())
    x = mlp_inputs()
    from_numpy = persistkit.predict(model, x)
    assert isinstance(from_numpy, np.ndarray)
    assert np.array_equal(persistkit.predict(model, x.tolist()), from_numpy)
    assert np.array_equal(persistkit.predict(model, torch.from_numpy(x)), from_numpy)


def test_predict_casts_inputs_to_the_parameters_dtype() -> None:
    model = persistkit.freeze(trained_mlp())
    result = persistkit.predict(model, mlp_inputs().astype(np.float64))
    assert result.dtype == np.float32
    double = persistkit.freeze(trained_mlp().double())
    assert persistkit.predict(double, mlp_inputs()).dtype == np.float64


def test_predict_casts_integer_inputs_for_a_model_without_embeddings() -> None:
    model = persistkit.freeze(trained_mlp())
    ints = np.ones((2, 4), dtype=np.int64)
    assert np.array_equal(
        persistkit.predict(model, ints), persistkit.predict(model, ints.astype(np.float32))
    )


def test_predict_keeps_integer_token_ids_for_an_embedding_model() -> None:
    model = persistkit.freeze(trained_tied())
    tokens = [[1, 2, 3], [0, 9, 4]]
    result = persistkit.predict(model, tokens)
    expected = model(torch.tensor(tokens)).detach().numpy()
    assert np.array_equal(result, expected)


def test_predict_runs_under_inference_mode() -> None:
    seen: list[bool] = []

    class Probe(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            seen.append(torch.is_inference_mode_enabled())
            return x * 2

    persistkit.predict(Probe(), np.ones(3, np.float32))
    assert seen == [True]


def test_predict_returns_float32_numpy_for_bfloat16_models() -> None:
    model = persistkit.freeze(trained_mlp().to(torch.bfloat16))
    result = persistkit.predict(model, mlp_inputs())
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float32


def test_predict_converts_tuple_outputs_to_tuples_of_arrays() -> None:
    class TwoHeads(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x + 1, {"double": x * 2}

    first, rest = persistkit.predict(TwoHeads(), np.zeros(2, np.float32))
    assert isinstance(first, np.ndarray)
    assert np.array_equal(rest["double"], np.zeros(2, np.float32))


def test_predict_with_method_calls_that_method() -> None:
    class Scorer(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x

        def score(self, x: Any) -> Any:
            return x.sum(dim=1)

    result = persistkit.predict(Scorer(), np.ones((2, 3), np.float32), method="score")
    assert np.array_equal(result, np.full(2, 3.0, np.float32))


def test_predict_with_inputs_of_the_wrong_shape_is_an_input_error() -> None:
    model = persistkit.freeze(trained_mlp())
    with pytest.raises(InputError, match="shape"):
        persistkit.predict(model, np.ones((2, 7), np.float32))


def test_predict_with_text_inputs_is_an_input_error() -> None:
    with pytest.raises(InputError, match="numeric"):
        persistkit.predict(persistkit.freeze(trained_mlp()), [["a", "b", "c", "d"]])


def test_predict_with_an_unknown_method_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no method"):
        persistkit.predict(trained_mlp(), mlp_inputs(), method="nope")


# --- describe and backend choice ------------------------------------------------------------


def test_describe_records_family_class_torch_version_devices_dtypes_and_size() -> None:
    model = trained_mlp()
    facts = describe(model)
    assert facts["family"] == "torch"
    assert facts["class"] == "torch_models.MLP"
    assert facts["libraries"]["torch"] == torch.__version__
    assert facts["devices"] == ["cpu"]
    assert facts["dtypes"] == ["float32", "int64"]  # BatchNorm counts batches in int64
    assert facts["parameters"] == sum(p.numel() for p in model.parameters())


def test_the_manifest_holds_what_describe_says(tmp_path: Any) -> None:
    manifest = persistkit.save(trained_mlp(), tmp_path / "m").manifest
    assert manifest.family == "torch"
    assert manifest.model_class == "torch_models.MLP"
    assert manifest.environment["libraries"]["torch"] == torch.__version__


def test_importable_modules_prefer_safetensors_and_fall_back_to_torch() -> None:
    assert choose_backend(trained_mlp())[0] == "safetensors"
    assert choose_backend(torch.nn.Sequential(torch.nn.Linear(2, 2)))[0] == "torch"


def test_a_local_class_is_steered_to_a_class_free_format_with_the_reason() -> None:
    class Local(torch.nn.Module):
        pass

    backend, reason = choose_backend(Local(), example=np.ones((2, 3), np.float32))
    assert backend == "export"
    assert "cannot be imported" in reason


def test_a_local_class_without_an_example_is_an_error_that_asks_for_one() -> None:
    """Never a silent whole-module pickle that only loads where the class is defined."""

    class Local(torch.nn.Module):
        pass

    with pytest.raises(CannotSaveError, match="needs example=") as caught:
        choose_backend(Local())
    assert "example=" in (caught.value.hint or "")


def test_the_adapter_leaves_non_torch_models_alone() -> None:
    assert persistkit.freeze({"not": "a model"}) == {"not": "a model"}
    assert describe(lambda x: x).get("family") != "torch"


def test_an_exported_embedding_model_keeps_token_inputs_as_indices(tmp_path: Any) -> None:
    """A torch.export graph has no Embedding layer objects; its embedding op says it."""
    from torch_models import TiedLM

    model = TiedLM(vocab=10, dim=4).eval()
    tokens = np.array([1, 2, 3, 4], dtype=np.int64)
    persistkit.save(model, tmp_path / "lm", backend="export", example=tokens)
    loaded = persistkit.load(tmp_path / "lm")
    expected = outputs(model, tokens)
    assert np.asarray(persistkit.predict(loaded, tokens)).tobytes() == expected.tobytes()
