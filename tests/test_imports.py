"""Importing persistkit and listing backends stays cheap: no framework is imported."""

from __future__ import annotations

import subprocess
import sys

HEAVY = [
    "torch",
    "sklearn",
    "joblib",
    "dill",
    "cloudpickle",
    "safetensors",
    "starlette",
    "uvicorn",
    "PIL",
    "s3fs",
    "matplotlib",
    "scipy",
]


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return {line.split(".")[0] for line in out.stdout.split()}


def test_import_persistkit_imports_no_framework() -> None:
    loaded = _modules_after("import persistkit")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_listing_backends_imports_no_framework() -> None:
    loaded = _modules_after("import persistkit; persistkit.backends()")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_cli_listing_backends_imports_no_framework() -> None:
    loaded = _modules_after(
        "from click.testing import CliRunner\nfrom persistkit.cli import main\n"
        "CliRunner().invoke(main, ['backends'])"
    )
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
