"""A ``^...$`` pattern checked with ``match`` lets a trailing newline through (``$`` matches
before one): every rule that vetted names from a file or from the user took ``"x\\n"``. Each
rule now checks the whole text."""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persistkit.errors import FormatError
from persistkit.manifest import is_hex64
from persistkit.safety import TrustPolicy, joblib_reader

torch_rebuild = pytest.importorskip("persistkit_torch.rebuild")


def test_a_class_path_from_a_manifest_is_whole() -> None:
    assert torch_rebuild._is_dotted("suite_models.WideMLP")
    assert not torch_rebuild._is_dotted("suite_models.WideMLP\n")


def test_a_joblib_companion_file_name_is_whole(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(3.0))
    (tmp_path / "a.npy").rename(tmp_path / "a.npy\n")  # a name an old pickle could give
    segment = types.SimpleNamespace(filename="a.npy\n")
    with pytest.raises(FormatError, match="companion file"):
        joblib_reader._check_companion(tmp_path, segment, TrustPolicy(), "test file")  # type: ignore[arg-type]


def test_a_digest_is_whole() -> None:
    assert is_hex64("0" * 64)
    assert not is_hex64("0" * 64 + "\n") and not is_hex64("0" * 63) and not is_hex64("A" * 64)


@settings(max_examples=400)
@given(st.text(alphabet="aZ_09.\n é-", max_size=14))
def test_a_class_path_is_exactly_dotted_ascii_identifiers(value: str) -> None:
    spec = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", value)
    assert torch_rebuild._is_dotted(value) == bool(spec)
