"""Property tests: random trained architectures survive every torch backend bit for bit,
in this process and in a fresh process that can import only the model classes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

import persistkit  # noqa: E402
from persistkit.errors import FormatError, IntegrityError  # noqa: E402
from torch_models import MLP, SmallCNN, TiedLM, train_a_few_steps  # noqa: E402

pytestmark = pytest.mark.torch

BACKENDS: list[tuple[str, dict[str, Any]]] = [
    ("safetensors", {}),
    ("torch", {}),
    ("torch", {"mode": "state_dict"}),
]
PROPERTY_SETTINGS = settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Case:
    """A trained model and an input batch for it."""

    model: Any
    inputs: np.ndarray


def _seeded(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


@st.composite
def mlp_cases(draw: st.DrawFn) -> Case:
    n_in = draw(st.integers(1, 6))
    hidden = draw(st.lists(st.integers(1, 8), min_size=0, max_size=3))
    n_out = draw(st.integers(2, 4))
    rng = _seeded(draw(st.integers(0, 2**16)))
    model = MLP(
        [n_in, *hidden, n_out],
        activation=draw(st.sampled_from(["relu", "tanh", "gelu", "sigmoid"])),
        dropout=draw(st.sampled_from([0.0, 0.1, 0.5])),
        batchnorm=draw(st.booleans()),
    )
    x = rng.standard_normal((8, n_in)).astype(np.float32)
    train_a_few_steps(model, torch.from_numpy(x), torch.randint(0, n_out, (8,)))
    return Case(model, rng.standard_normal((5, n_in)).astype(np.float32))


@st.composite
def cnn_cases(draw: st.DrawFn) -> Case:
    in_channels = draw(st.integers(1, 2))
    n_classes = draw(st.integers(2, 4))
    size = draw(st.integers(3, 6))
    rng = _seeded(draw(st.integers(0, 2**16)))
    model = SmallCNN(
        in_channels=in_channels,
        channels=draw(st.integers(1, 4)),
        n_classes=n_classes,
        depth=draw(st.integers(1, 2)),
    )
    x = rng.standard_normal((6, in_channels, size, size)).astype(np.float32)
    train_a_few_steps(model, torch.from_numpy(x), torch.randint(0, n_classes, (6,)))
    return Case(model, rng.standard_normal((3, in_channels, size, size)).astype(np.float32))


@st.composite
def tied_cases(draw: st.DrawFn) -> Case:
    vocab = draw(st.integers(2, 12))
    rng = _seeded(draw(st.integers(0, 2**16)))
    model = TiedLM(vocab=vocab, dim=draw(st.integers(1, 6)))
    tokens = torch.from_numpy(rng.integers(0, vocab, 10))
    train_a_few_steps(model, tokens, torch.from_numpy(rng.integers(0, vocab, 10)))
    return Case(model, rng.integers(0, vocab, (3, 4)))


any_case = st.one_of(mlp_cases(), cnn_cases(), tied_cases())


def _predictions(model: Any, inputs: np.ndarray) -> np.ndarray:
    return np.asarray(persistkit.predict(model, inputs))


def _check_round_trips(case: Case, directory: Path) -> None:
    expected = _predictions(persistkit.freeze(case.model), case.inputs)
    for index, (backend, options) in enumerate(BACKENDS):
        path = persistkit.save(case.model, directory / f"a{index}", backend=backend, **options).path
        loaded = persistkit.load(path)
        assert type(loaded) is type(case.model)
        got = _predictions(loaded, case.inputs)
        assert got.dtype == expected.dtype
        assert got.tobytes() == expected.tobytes(), f"{backend} {options} changed the outputs"
        shutil.rmtree(path)


@PROPERTY_SETTINGS
@given(case=mlp_cases())
def test_random_mlps_round_trip_bitwise_through_every_backend(tmp_path: Path, case: Case) -> None:
    _check_round_trips(case, tmp_path)


@PROPERTY_SETTINGS
@given(case=cnn_cases())
def test_random_cnns_round_trip_bitwise_through_every_backend(tmp_path: Path, case: Case) -> None:
    _check_round_trips(case, tmp_path)


@PROPERTY_SETTINGS
@given(case=tied_cases())
def test_random_tied_embeddings_round_trip_bitwise_and_stay_tied(
    tmp_path: Path, case: Case
) -> None:
    _check_round_trips(case, tmp_path)
    artifact = persistkit.save(case.model, Path(tempfile.mkdtemp(dir=tmp_path)) / "tied")
    loaded = persistkit.load(artifact.path)
    assert loaded.out.weight is loaded.embed.weight


@PROPERTY_SETTINGS
@given(
    p=st.floats(0.05, 0.9),
    widths=st.lists(st.integers(2, 8), min_size=2, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_freeze_makes_any_dropout_model_deterministic(
    p: float, widths: list[int], seed: int
) -> None:
    rng = _seeded(seed)
    model = persistkit.freeze(MLP(widths, dropout=p))
    x = rng.standard_normal((16, widths[0])).astype(np.float32)
    assert _predictions(model, x).tobytes() == _predictions(model, x).tobytes()


_FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import persistkit

    for job in json.load(open(sys.argv[1])):
        model = persistkit.load(job["artifact"])
        assert type(model).__module__ == "torch_models", type(model)
        inputs = np.load(job["inputs"])
        np.save(job["outputs"], np.asarray(persistkit.predict(model, inputs)))
    """
)


@settings(
    max_examples=2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cases=st.tuples(mlp_cases(), cnn_cases(), tied_cases()))
def test_artifacts_reproduce_outputs_bitwise_in_a_fresh_process(
    tmp_path_factory: pytest.TempPathFactory, cases: tuple[Case, ...]
) -> None:
    work = tmp_path_factory.mktemp("fresh")
    only_models = work / "importable"
    only_models.mkdir()
    shutil.copy(Path(__file__).with_name("torch_models.py"), only_models / "torch_models.py")
    jobs, expected = [], []
    for c, case in enumerate(cases):
        np.save(work / f"in{c}.npy", case.inputs)
        reference = _predictions(persistkit.freeze(case.model), case.inputs)
        for b, (backend, options) in enumerate(BACKENDS):
            path = persistkit.save(case.model, work / f"m{c}-{b}", backend=backend, **options).path
            out = work / f"out{c}-{b}.npy"
            jobs.append(
                {"artifact": str(path), "inputs": str(work / f"in{c}.npy"), "outputs": str(out)}
            )
            expected.append((out, reference, backend, options))
    (work / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "PYTHONPATH": str(only_models)}  # same PERSISTKIT_HOME: sealed by us
    subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(work / "jobs.json")],
        check=True,
        cwd=work,
        env=env,
        timeout=120,
    )
    for out, reference, backend, options in expected:
        got = np.load(out)
        assert got.dtype == reference.dtype
        assert got.tobytes() == reference.tobytes(), f"{backend} {options} differs in a new process"


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    backend_index=st.integers(0, len(BACKENDS) - 1),
    keep_fraction=st.floats(0.0, 0.999),
)
def test_a_payload_truncated_anywhere_is_a_persistkit_error_never_a_raw_one(
    tmp_path: Path, backend_index: int, keep_fraction: float
) -> None:
    backend, options = BACKENDS[backend_index]
    torch.manual_seed(0)
    model = MLP([3, 5, 2], batchnorm=True)
    path = persistkit.save(
        model, Path(tempfile.mkdtemp(dir=tmp_path)) / "m", backend=backend, **options
    ).path
    payload = path / persistkit.inspect(path).primary_file
    data = payload.read_bytes()
    payload.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(IntegrityError):
        persistkit.load(path)
    with pytest.raises(FormatError):
        persistkit.load(path, verify=False, trusted=True)
