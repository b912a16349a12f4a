"""Property tests: random trained MLPs and CNNs (batch norm, dropout, pooling) frozen by the
export backend answer bit for bit as the eager model, on batch sizes other than the example's,
loaded without trust, here and in a fresh process that has none of the model classes."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import persistkit  # noqa: E402
from torch_models import MLP, train_a_few_steps  # noqa: E402

pytestmark = pytest.mark.torch

PROPERTY_SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class PooledCNN(nn.Module):
    """Conv + batch norm + activation blocks, each followed by max or average pooling."""

    def __init__(self, channels: list[int], pools: list[str], dropout: float, n_out: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out, pool in zip(channels, channels[1:], pools):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(channels[-1], n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x).flatten(2).mean(dim=2)))


@dataclass
class Case:
    model: Any
    example: np.ndarray
    fresh: np.ndarray


@st.composite
def mlp_cases(draw: st.DrawFn) -> Case:
    seed = draw(st.integers(0, 2**16))
    widths = [draw(st.integers(1, 6))]
    widths += draw(st.lists(st.integers(1, 8), min_size=0, max_size=3))
    widths.append(draw(st.integers(2, 4)))
    torch.manual_seed(seed)
    model = MLP(
        widths,
        activation=draw(st.sampled_from(["relu", "tanh", "gelu", "sigmoid"])),
        dropout=draw(st.sampled_from([0.0, 0.3])),
        batchnorm=draw(st.booleans()),
    )
    rng = np.random.default_rng(seed)
    train_a_few_steps(model, torch.randn(8, widths[0]), torch.randint(0, widths[-1], (8,)), steps=2)
    example = rng.standard_normal((draw(st.integers(1, 6)), widths[0])).astype(np.float32)
    fresh = rng.standard_normal((draw(st.integers(1, 9)), widths[0])).astype(np.float32)
    return Case(model.eval(), example, fresh)


@st.composite
def cnn_cases(draw: st.DrawFn) -> Case:
    seed = draw(st.integers(0, 2**16))
    depth = draw(st.integers(1, 2))
    channels = [draw(st.integers(1, 3))] + [draw(st.integers(1, 4)) for _ in range(depth)]
    pools = [draw(st.sampled_from(["max", "avg"])) for _ in range(depth)]
    side = 2**depth * draw(st.integers(1, 2))
    torch.manual_seed(seed)
    model = PooledCNN(channels, pools, draw(st.sampled_from([0.0, 0.5])), draw(st.integers(2, 4)))
    model(torch.randn(4, channels[0], side, side))  # move batch-norm statistics (train mode)
    rng = np.random.default_rng(seed)
    shape = (channels[0], side, side)
    example = rng.standard_normal((draw(st.integers(1, 4)), *shape)).astype(np.float32)
    fresh = rng.standard_normal((draw(st.integers(1, 5)), *shape)).astype(np.float32)
    return Case(model.eval(), example, fresh)


def _eager(model: Any, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def _round_trip(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / f"a{len(list(tmp_path.iterdir()))}"
    art = persistkit.save(case.model, target, backend="export", example=case.example)
    monkeypatch.setenv("PERSISTKIT_HOME", str(tmp_path / "stranger"))  # loads untrusted
    try:
        loaded = persistkit.load(art.path)
        for x in (case.example, case.fresh):
            assert np.array_equal(persistkit.predict(loaded, x), _eager(case.model, x))
    finally:
        monkeypatch.undo()


@PROPERTY_SETTINGS
@given(case=mlp_cases())
def test_random_mlps_reload_bitwise_identical(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _round_trip(case, tmp_path, monkeypatch)


@settings(PROPERTY_SETTINGS, max_examples=10)
@given(case=cnn_cases())
def test_random_cnns_reload_bitwise_identical(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _round_trip(case, tmp_path, monkeypatch)


def test_reloads_in_a_fresh_process_without_the_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    cases = [
        Case(
            MLP([4, 8, 3], batchnorm=True, dropout=0.3).eval(),
            rng.standard_normal((3, 4)).astype(np.float32),
            rng.standard_normal((7, 4)).astype(np.float32),
        ),
        Case(
            PooledCNN([2, 3, 4], ["max", "avg"], 0.5, 3).eval(),
            rng.standard_normal((2, 2, 8, 8)).astype(np.float32),
            rng.standard_normal((5, 2, 8, 8)).astype(np.float32),
        ),
    ]
    lines = []
    for i, case in enumerate(cases):
        art = persistkit.save(
            case.model, tmp_path / f"m{i}", backend="export", example=case.example
        )
        np.save(tmp_path / f"x{i}.npy", case.fresh)
        np.save(tmp_path / f"y{i}.npy", _eager(case.model, case.fresh))
        lines.append(
            f"m = persistkit.load({str(art.path)!r}); "
            f"print(np.array_equal(persistkit.predict(m, np.load({str(tmp_path / f'x{i}.npy')!r})),"
            f" np.load({str(tmp_path / f'y{i}.npy')!r})))"
        )
    script = (
        "import sys, numpy as np, persistkit\n"
        + "\n".join(lines)
        + ("\nprint('torch_models' in sys.modules)")
    )
    env = {**os.environ, "PERSISTKIT_HOME": str(tmp_path / "stranger")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True"] * len(cases) + ["False"]
