"""Helpers shared by the torch tests: trained example models and "someone else's" artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_models import MLP, SmallCNN, TiedLM, train_a_few_steps  # noqa: E402


def trained_mlp(seed: int = 0, **kwargs: Any) -> MLP:
    torch.manual_seed(seed)
    options = {"widths": [4, 8, 3], "activation": "tanh", "dropout": 0.2, "batchnorm": True}
    model = MLP(**{**options, **kwargs})
    width = model.widths[0]
    return train_a_few_steps(
        model, torch.randn(16, width), torch.randint(0, model.widths[-1], (16,))
    )


def trained_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN(in_channels=1, channels=3, n_classes=3, depth=2)
    return train_a_few_steps(model, torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,)))


def trained_tied(seed: int = 0) -> TiedLM:
    torch.manual_seed(seed)
    model = TiedLM(vocab=10, dim=4)
    tokens = torch.randint(0, 10, (12,))
    return train_a_few_steps(model, tokens, torch.randint(0, 10, (12,)))


def mlp_inputs(n: int = 5, width: int = 4, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)


def outputs(model: Any, inputs: Any) -> np.ndarray:
    """Predictions of a frozen copy of the model's behaviour (eval mode, no grad)."""
    import persistkit

    return np.asarray(persistkit.predict(persistkit.freeze(model), inputs))


def as_stranger(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """From now on this test runs as another user: artifacts saved so far are not sealed by a
    key this user trusts, so they load under the default (untrusting) policy."""
    other = tmp_path / "other-user-home"
    other.mkdir(exist_ok=True)
    monkeypatch.setenv("PERSISTKIT_HOME", str(other))


def edit_manifest(artifact: Path, change: Any) -> None:
    """Apply ``change(dict)`` to the artifact's manifest and drop its seal, as someone
    handing over an edited artifact would (an edit under a seal is a SealBrokenError)."""
    path = artifact / "persistkit.json"
    data = json.loads(path.read_text())
    change(data)
    data.pop("seal", None)
    path.write_text(json.dumps(data))
