"""The first hour, item 4: each interface gives hints in its own terms. Python says
``trusted=[...]``, ``store=...``, ``force=True``; the command line says ``--trust``,
``--store URL``, ``--force``; the server's operator is told how to start ``persistkit serve``."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import persistkit
from persistkit.cli import main
from persistkit.errors import (
    Option,
    StoreError,
    Trust,
    UntrustedArtifactError,
    VersionNotFoundError,
)
from persistkit.store import Store


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def untrusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pickle that imports numpy.log1p (not on the allow-list), and an input file."""
    monkeypatch.chdir(tmp_path)
    Path("f.pkl").write_bytes(pickle.dumps({"f": np.log1p}))
    np.save("x.npy", np.zeros((1, 3)))
    return tmp_path / "f.pkl"


def test_python_is_told_trusted_with_the_exact_names(untrusted: Path) -> None:
    with pytest.raises(UntrustedArtifactError) as info:
        persistkit.load("f.pkl")
    assert "trusted=['numpy.log1p']" in str(info.value)
    assert "--trust" not in str(info.value)


def test_the_command_line_is_told_its_own_trust_flag(untrusted: Path) -> None:
    result = cli("predict", "f.pkl", "x.npy")
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert "numpy.log1p" in line  # the message still names what it would import
    assert "--trust" in line and "trusted=" not in line
    assert "--trust numpy.log1p" in line  # one global, the way Python's trusted=[...] does


def test_the_command_line_trusts_one_global_by_name(untrusted: Path) -> None:
    from persistkit.cli.options import trusted

    assert trusted(()) is False
    assert trusted(("*",)) is True
    assert trusted(("numpy.log1p", "numpy.exp")) == ["numpy.log1p", "numpy.exp"]


def test_predict_with_trust_name_allows_just_that_global(tmp_path: Path) -> None:
    """The CLI's --trust NAME is Python's trusted=["NAME"]: that global, nothing else."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from sklearn_helpers import double
    finally:
        sys.path.remove(str(Path(__file__).parent))
    Path(tmp_path / "f.pkl").write_bytes(pickle.dumps(double))
    np.save(tmp_path / "x.npy", np.ones((1, 3)))
    args = ["predict", str(tmp_path / "f.pkl"), str(tmp_path / "x.npy"), "--json"]
    refused = cli(*args)
    assert refused.exit_code == 1 and "--trust sklearn_helpers.double" in refused.output
    assert cli(*args, "--trust", "numpy.log1p").exit_code == 1  # another global: still refused
    allowed = cli(*args, "--trust", "sklearn_helpers.double")
    assert allowed.exit_code == 0, allowed.output
    assert '"predictions": [[2.0, 2.0, 2.0]]' in allowed.output


@pytest.mark.parametrize("value", ["x.npy", "log1p", "numpy.", "os.path/x"])
def test_a_trust_value_that_is_a_file_or_no_global_name_is_a_usage_error(
    untrusted: Path, value: str
) -> None:
    """``--trust x.npy`` is an input swallowed by a bare --trust placed before it."""
    result = cli("verify", "m", "--trust", value)
    assert result.exit_code == 2
    assert "module.Name" in result.output


def test_the_server_operator_is_told_how_to_start_the_server(untrusted: Path) -> None:
    with pytest.raises(UntrustedArtifactError) as info:
        persistkit.load("f.pkl")
    assert "start `persistkit serve` with --trust" in (info.value.hint_for("http") or "")


def test_a_missing_model_hint_speaks_python_in_python(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.save({"w": [1]}, "digits", backend="pickle")
    with pytest.raises(VersionNotFoundError) as info:
        persistkit.load("ghost", store=store)
    text = str(info.value)
    assert "store=" in text and ".list()" in text
    assert "--store" not in text and "persistkit ls" not in text


def test_a_missing_model_hint_speaks_flags_on_the_command_line(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.save({"w": [1]}, "digits", backend="pickle")
    result = cli("show", "ghost", "--store", store.url)
    assert result.exit_code == 1
    assert f"persistkit ls --store {store.url}" in result.output
    assert "--store URL" in result.output and "store=" not in result.output


def test_deleting_an_aliased_version_names_force_in_each_interface(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.save({"w": [1]}, "m", backend="pickle")
    store.alias("m:1", "prod")
    with pytest.raises(StoreError) as info:
        store.delete("m:1")
    assert "force=True" in str(info.value) and "--force" not in str(info.value)
    result = cli("rm", "m:1", "--store", store.url)
    assert result.exit_code == 1
    assert "--force" in result.output and "force=True" not in result.output


def test_remedies_render_once_per_interface() -> None:
    error = StoreError(
        "no store at /typo",
        hint="check the location",
        remedies=[Option("store", purpose="to pick another"), Trust(("a.b",))],
    )
    assert error.hint_for("python") == error.hint
    assert "store='URL'" in (error.hint or "") and "trusted=['a.b']" in (error.hint or "")
    cli_hint = error.hint_for("cli") or ""
    assert cli_hint.startswith("check the location; pass --store URL to pick another")
    assert "--trust" in cli_hint
