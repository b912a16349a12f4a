"""The export backend: torch.export programs in .pt2 files, saved from an example batch and
loaded back (also in a process that cannot import the model's class) with identical outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import persistkit  # noqa: E402
from persistkit.errors import CannotSaveError, OptionError  # noqa: E402
from torch_helpers import as_stranger, mlp_inputs, outputs, trained_cnn, trained_mlp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Branchy(nn.Module):
    """Data-dependent control flow: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        if y.sum() > 0:  # the line the error must name
            return y
        return -y


class Sequence(nn.Module):
    """Mean over a variable-length sequence dimension (dimension 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).mean(dim=1)


def test_round_trip_is_bitwise_identical_on_the_example_and_other_batch_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = trained_mlp()
    art = persistkit.save(model, tmp_path / "a", backend="export", example=mlp_inputs(5))
    assert art.manifest.model["conversion"]["identical"] is True
    as_stranger(monkeypatch, tmp_path)  # the load runs the audit, not trusted=
    loaded = persistkit.load(art.path)
    assert type(loaded).__name__ != type(model).__name__
    for n in (1, 2, 5, 33):
        x = mlp_inputs(n, seed=n)
        assert np.array_equal(persistkit.predict(loaded, x), outputs(model, x)), n


def test_payload_is_a_pt2_file_and_the_manifest_records_what_a_reader_needs(
    tmp_path: Path,
) -> None:
    art = persistkit.save(trained_mlp(), tmp_path / "a", backend="export", example=mlp_inputs())
    assert (art.path / "model.pt2").is_file()
    options = json.loads((art.path / "persistkit.json").read_text())["backend"]["options"]
    assert options["dynamic"] == {"0": "batch"}
    assert options["torch_version"] == torch.__version__


def test_cnn_round_trip_on_other_batch_sizes(tmp_path: Path) -> None:
    model = trained_cnn()
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6)).astype(np.float32)
    art = persistkit.save(model, tmp_path / "c", backend="export", example=x)
    loaded = persistkit.load(art.path)
    for n in (1, 4):
        batch = np.random.default_rng(n).standard_normal((n, 1, 6, 6)).astype(np.float32)
        assert np.array_equal(persistkit.predict(loaded, batch), outputs(model, batch))


def test_example_of_one_item_still_gives_a_dynamic_batch(tmp_path: Path) -> None:
    model = trained_mlp()
    art = persistkit.save(model, tmp_path / "a", backend="export", example=mlp_inputs(1))
    loaded = persistkit.load(art.path)
    x = mlp_inputs(6, seed=3)
    assert np.array_equal(persistkit.predict(loaded, x), outputs(model, x))


def test_dynamic_option_makes_another_dimension_free(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Sequence().eval()
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    art = persistkit.save(model, tmp_path / "s", backend="export", example=x, dynamic={1: "seq"})
    options = json.loads((art.path / "persistkit.json").read_text())["backend"]["options"]
    assert options["dynamic"] == {"0": "batch", "1": "seq"}
    loaded = persistkit.load(art.path)
    longer = np.random.default_rng(1).standard_normal((3, 9, 3)).astype(np.float32)
    assert np.array_equal(persistkit.predict(loaded, longer), outputs(model, longer))


def test_without_the_dynamic_option_other_dimensions_stay_fixed(tmp_path: Path) -> None:
    model = Sequence().eval()
    x = np.zeros((2, 5, 3), np.float32)
    art = persistkit.save(model, tmp_path / "s", backend="export", example=x)
    loaded = persistkit.load(art.path)
    with pytest.raises(persistkit.errors.InputError):
        persistkit.predict(loaded, np.zeros((2, 9, 3), np.float32))


@pytest.mark.parametrize(
    ("dynamic", "message"),
    [({5: "x"}, "dimensions 0 to 2"), ({1: "not a name"}, "identifiers"), ([1], "map")],
)
def test_bad_dynamic_option_is_refused_before_tracing(
    tmp_path: Path, dynamic: object, message: str
) -> None:
    with pytest.raises(CannotSaveError, match=message):
        persistkit.save(
            Sequence(),
            tmp_path / "s",
            backend="export",
            example=np.zeros((2, 5, 3), np.float32),
            dynamic=dynamic,
        )


def test_dynamic_dimension_of_size_one_in_the_example_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CannotSaveError, match="size 2 or more"):
        persistkit.save(
            Sequence(),
            tmp_path / "s",
            backend="export",
            example=np.zeros((2, 1, 3), np.float32),
            dynamic={1: "seq"},
        )


def test_unknown_save_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OptionError):
        persistkit.save(
            trained_mlp(), tmp_path / "a", backend="export", example=mlp_inputs(), mode="state_dict"
        )


def test_export_needs_an_example(tmp_path: Path) -> None:
    with pytest.raises(CannotSaveError, match="example"):
        persistkit.save(trained_mlp(), tmp_path / "a", backend="export")


def test_module_that_cannot_be_exported_names_the_failing_line(tmp_path: Path) -> None:
    with pytest.raises(CannotSaveError) as err:
        persistkit.save(
            Branchy(), tmp_path / "b", backend="export", example=np.ones((3, 4), np.float32)
        )
    message = str(err.value)
    assert f"{Path(__file__).name}:" in message
    assert "if y.sum() > 0:" in message
    assert 'backend="torch"' in (err.value.hint or "")
    assert not (tmp_path / "b").exists()


def test_bare_pt2_file_from_torch_export_loads_under_the_default_policy(tmp_path: Path) -> None:
    model = trained_mlp()
    x = torch.from_numpy(mlp_inputs(4))
    program = torch.export.export(model.eval(), (x,), dynamic_shapes=({0: torch.export.Dim("b")},))
    path = tmp_path / "foreign.pt2"
    torch.export.save(program, str(path))
    loaded = persistkit.load(path)
    xs = mlp_inputs(7, seed=4)
    assert np.array_equal(persistkit.predict(loaded, xs), outputs(model, xs))


def test_bare_pt2_is_sniffed_by_content_under_another_name(tmp_path: Path) -> None:
    program = torch.export.export(trained_mlp().eval(), (torch.from_numpy(mlp_inputs(3)),))
    path = tmp_path / "weights.bin"
    torch.export.save(program, str(path))
    assert persistkit.inspect(path).backend == "export"


_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from torch import nn
    import persistkit

    class Gnome(nn.Module):  # lives in __main__: no other process can import it
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                      nn.Dropout(0.3), nn.Linear(8, 3))

        def forward(self, x):
            return self.body(x)

    torch.manual_seed(0)
    net = Gnome()
    net(torch.randn(16, 4))  # move the batch-norm statistics off their initial values
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    art = persistkit.save(net, "gnome", example=x)
    fresh = np.random.default_rng(1).standard_normal((9, 4)).astype(np.float32)
    np.save(sys.argv[1], fresh)
    np.save(sys.argv[2], persistkit.predict(persistkit.freeze(net), fresh))
    print(art.manifest.backend)
    """
)


def test_class_defined_in_main_is_exported_and_loads_in_a_fresh_process(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "PERSISTKIT_STORE": str(tmp_path / "store")}
    inputs, expected = tmp_path / "x.npy", tmp_path / "y.npy"
    made = subprocess.run(
        [sys.executable, str(script), str(inputs), str(expected)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    assert made.stdout.strip().splitlines()[-1] == "export"
    # another user's process (no class, no trust: the audit is what lets it load), through
    # the command line; JSON floats carry float32 values exactly
    other = {**env, "PERSISTKIT_HOME": str(tmp_path / "stranger")}
    cli = subprocess.run(
        [
            str(Path(sys.executable).parent / "persistkit"),
            "predict",
            "gnome",
            str(inputs),
            "--json",
        ],
        env=other,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    answered = np.array(json.loads(cli.stdout)["predictions"], dtype=np.float32)
    assert np.array_equal(answered, np.load(expected))


def test_an_exported_program_is_saved_as_it_is_not_pickled(tmp_path: Path) -> None:
    """An ExportedProgram used to be pickled silently and not load back."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2)).eval()
    x = torch.randn(4, 3)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b")},))
    with pytest.raises(CannotSaveError, match="needs example="):
        persistkit.save(program, tmp_path / "refused")
    artifact = persistkit.save(program, tmp_path / "ep", example=x.numpy())
    assert artifact.backend == "export"
    fresh = torch.randn(7, 3)
    with torch.inference_mode():
        expected = model(fresh).numpy()
    assert persistkit.predict(tmp_path / "ep", fresh.numpy()).tobytes() == expected.tobytes()
