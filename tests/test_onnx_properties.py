"""Property tests of the onnx backend: random trained MLPs, CNNs and scikit-learn pipelines
reload within ``persistkit_onnx.TOLERANCE`` at batch sizes other than the example's (labels
identical), and a network whose class lives only in a ``__main__`` script loads and predicts
in a fresh process that can import neither that script nor torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")
torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import persistkit  # noqa: E402
from persistkit_onnx import TOLERANCE, OnnxModel  # noqa: E402

pytestmark = pytest.mark.torch

RTOL, ATOL = TOLERANCE
# every torch example is one export (about two seconds): few examples, no deadline
TORCH_SETTINGS = settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SKLEARN_SETTINGS = settings(TORCH_SETTINGS, max_examples=10)
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def trained(model: nn.Module, shape: tuple[int, ...], seed: int) -> nn.Module:
    """A few SGD steps so weights and BatchNorm statistics move away from their init."""
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(8, *shape)).square().mean().backward()
        optimizer.step()
    return model.eval()


def assert_round_trip(model: nn.Module, shape: tuple[int, ...], batch: int, tmp: Path) -> None:
    rng = np.random.default_rng(batch)
    example = rng.standard_normal((3, *shape)).astype(np.float32)
    art = persistkit.save(model, tmp, backend="onnx", example=example)
    loaded = persistkit.load(art.path)
    assert isinstance(loaded, OnnxModel)
    inputs = rng.standard_normal((batch, *shape)).astype(np.float32)
    got, want = persistkit.predict(loaded, inputs), persistkit.predict(model, inputs)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@st.composite
def mlps(draw: st.DrawFn) -> tuple[nn.Module, tuple[int, ...]]:
    widths = draw(st.lists(st.integers(1, 48), min_size=2, max_size=5))
    activation = ACTIVATIONS[draw(st.sampled_from(sorted(ACTIVATIONS)))]
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            if draw(st.booleans()):
                layers.append(nn.BatchNorm1d(widths[i + 1]))
            layers.append(activation())
            if draw(st.booleans()):
                layers.append(nn.Dropout(0.25))
    return nn.Sequential(*layers), (widths[0],)


@st.composite
def cnns(draw: st.DrawFn) -> tuple[nn.Module, tuple[int, ...]]:
    channels = draw(st.sampled_from([1, 3]))
    size = draw(st.sampled_from([8, 12, 16]))
    layers: list[nn.Module] = []
    c = channels
    for _ in range(draw(st.integers(1, 2))):
        out = draw(st.sampled_from([2, 4, 8]))
        layers.append(nn.Conv2d(c, out, draw(st.sampled_from([1, 3])), padding="same"))
        if draw(st.booleans()):
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU())
        layers.append(draw(st.sampled_from([nn.MaxPool2d(2), nn.AvgPool2d(2), nn.Identity()])))
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(c, 3)]
    return nn.Sequential(*layers), (channels, size, size)


@TORCH_SETTINGS
@given(case=mlps(), batch=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_random_mlps_reload_within_tolerance(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[nn.Module, tuple[int, ...]],
    batch: int,
    seed: int,
) -> None:
    model, shape = case
    assert_round_trip(
        trained(model, shape, seed), shape, batch, tmp_path_factory.mktemp("m") / "art"
    )


@TORCH_SETTINGS
@given(case=cnns(), batch=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_random_cnns_reload_within_tolerance(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[nn.Module, tuple[int, ...]],
    batch: int,
    seed: int,
) -> None:
    model, shape = case
    assert_round_trip(
        trained(model, shape, seed), shape, batch, tmp_path_factory.mktemp("c") / "art"
    )


# -- scikit-learn -------------------------------------------------------------------------------


@st.composite
def sklearn_pipelines(draw: st.DrawFn) -> tuple[Any, bool]:
    """A random pipeline (scaler, optional PCA, final estimator) and whether it classifies."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    steps: list[Any] = []
    scaler = draw(st.sampled_from(["standard", "minmax", "none"]))
    if scaler != "none":
        steps.append(StandardScaler() if scaler == "standard" else MinMaxScaler())
    if draw(st.booleans()):
        steps.append(PCA(draw(st.integers(2, 8)), random_state=0))
    # no k-nearest-neighbours here: where neighbours tie in distance, ONNX's TopK and
    # scikit-learn pick different ones, so probabilities move by 1/k (docs/onnx.md)
    final = draw(st.sampled_from(["logistic", "forest", "tree", "ridge", "forest_reg"]))
    estimators = {
        "logistic": LogisticRegression(max_iter=300),
        "forest": RandomForestClassifier(n_estimators=10, random_state=0),
        "tree": DecisionTreeClassifier(max_depth=6, random_state=0),
        "ridge": Ridge(alpha=draw(st.floats(0.01, 10.0))),
        "forest_reg": RandomForestRegressor(n_estimators=10, random_state=0),
    }
    return make_pipeline(*steps, estimators[final]), final not in ("ridge", "forest_reg")


@SKLEARN_SETTINGS
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@given(case=sklearn_pipelines(), rows=st.integers(1, 200))
def test_random_sklearn_pipelines_reload_within_tolerance(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[Any, bool], rows: int
) -> None:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    model, classifies = case
    target = y if classifies else y.astype(np.float64) * 1.5
    model.fit(X[:1000], target[:1000])
    art = persistkit.save(
        model, tmp_path_factory.mktemp("p") / "art", backend="onnx", example=X[:5]
    )
    loaded = persistkit.load(art.path)
    test = X[1000 : 1000 + rows]
    got = persistkit.predict(loaded, test)
    if classifies:
        np.testing.assert_array_equal(got, model.predict(test))
        np.testing.assert_allclose(
            persistkit.predict(loaded, test, method="predict_proba"),
            model.predict_proba(test),
            rtol=RTOL,
            atol=ATOL,
        )
    else:
        np.testing.assert_allclose(got, model.predict(test), rtol=RTOL, atol=ATOL)


# -- a fresh process without the training code ---------------------------------------------------

TRAINING_SCRIPT = """
import json, sys
import numpy as np
import torch
from torch import nn
import persistkit


class Net(nn.Module):  # lives only in this script, run as __main__
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * 6 * 6, 5))

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.head(x.flatten(1))


torch.manual_seed(0)
net = Net().eval()
with torch.no_grad():
    net.bn.running_mean.uniform_(-1, 1)
    net.bn.running_var.uniform_(0.5, 2)
rng = np.random.default_rng(0)
art = persistkit.save(net, sys.argv[1], backend="onnx",
                      example=rng.standard_normal((2, 1, 12, 12)).astype(np.float32))
inputs = rng.standard_normal((7, 1, 12, 12)).astype(np.float32)
np.save(sys.argv[2], inputs)
np.save(sys.argv[3], persistkit.predict(net, inputs))
"""

LOADING_SCRIPT = """
import json, sys
import numpy as np
import persistkit
model = persistkit.load(sys.argv[1])
got = persistkit.predict(model, np.load(sys.argv[2]))
print(json.dumps({
    "got": got.tolist(),
    "imported": sorted(m for m in ("torch", "sklearn", "__main__net") if m in sys.modules),
    "can_import_training_code": __import__("importlib.util").util.find_spec("train") is not None,
}))
"""


def test_main_script_network_loads_in_a_fresh_process_without_torch(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(textwrap.dedent(TRAINING_SCRIPT))
    art, inputs, expected = tmp_path / "net", tmp_path / "x.npy", tmp_path / "y.npy"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, str(code / "train.py"), str(art), str(inputs), str(expected)],
        check=True,
        capture_output=True,
        env=env,
        cwd=tmp_path,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LOADING_SCRIPT), str(art), str(inputs)],
        capture_output=True,
        text=True,
        env=env,
        cwd=elsewhere,
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["can_import_training_code"] is False
    assert answer["imported"] == []
    np.testing.assert_allclose(
        np.asarray(answer["got"], dtype=np.float32), np.load(expected), rtol=RTOL, atol=ATOL
    )
    manifest = json.loads((art / "persistkit.json").read_text())
    assert manifest["model"]["class"].startswith("__main__.")
