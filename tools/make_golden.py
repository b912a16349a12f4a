"""Write the golden files of ``tests/golden/`` (issue #12: format versioning tested forever).

Two modes:

``python tools/make_golden.py [--versions 1.2.2 1.3.2 ...] [--jobs 2]``
    For each old scikit-learn version: a throwaway virtual environment in a temporary folder
    (``python3.11 -m venv``; wheels only, pins in :data:`PINS`), persistkit installed from
    this checkout with ``--no-deps -e``, and ``tools/golden_worker.py`` run inside it, which
    writes ``tests/golden/sklearn-<version>/<estimator>/`` (bare ``model.joblib`` and
    ``model.pkl``, test inputs, the outputs that version computed, a persistkit
    ``artifact/``). The environments are deleted afterwards (``--keep`` keeps them).

``python tools/make_golden.py --current``
    With the running environment (the project's ``.venv``): one small artifact per backend of
    this release into ``tests/golden/persistkit-<version>/<case>/``, each with an example.

Both update ``tests/golden/INDEX.json``, which describes every file the suite loads. Files
once written are never regenerated for a released version: a future release adds its own
``persistkit-<version>/`` folder (``--current``) beside the old ones.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
INDEX = GOLDEN / "INDEX.json"
WORKER = ROOT / "tools" / "golden_worker.py"
PYTHON = "python3.11"

# Wheels that install together on CPython 3.11 for each old scikit-learn (era-appropriate
# numpy, scipy, joblib, threadpoolctl: what a user of that release would have had).
PINS: dict[str, list[str]] = {
    "1.2.2": ["numpy==1.24.4", "scipy==1.10.1", "joblib==1.2.0", "threadpoolctl==3.1.0"],
    "1.3.2": ["numpy==1.25.2", "scipy==1.11.4", "joblib==1.3.2", "threadpoolctl==3.2.0"],
    "1.4.2": ["numpy==1.26.4", "scipy==1.12.0", "joblib==1.4.0", "threadpoolctl==3.4.0"],
    "1.5.2": ["numpy==1.26.4", "scipy==1.13.1", "joblib==1.4.2", "threadpoolctl==3.5.0"],
    "1.7.2": ["numpy==2.2.6", "scipy==1.15.3", "joblib==1.5.2", "threadpoolctl==3.6.0"],
}
# persistkit's own dependencies (installed with --no-deps so nothing upgrades numpy)
PERSISTKIT_DEPS = ["pluggy", "click", "platformdirs", "fsspec"]


def run(command: list[str], log: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``command``, appending its output to ``log``; raise with the log's tail on failure."""
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}\n")
    if done.returncode:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({done.returncode}):\n{tail}")
    return done


def old_version(version: str, keep: bool) -> dict[str, Any]:
    """Build the throwaway environment for ``version`` and run the worker in it."""
    work = Path(tempfile.mkdtemp(prefix=f"golden-sklearn-{version}-"))
    log = work / "log.txt"
    env_dir = work / "venv"
    try:
        run([PYTHON, "-m", "venv", str(env_dir)], log)
        pip = [str(env_dir / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        run(
            [
                *pip,
                "install",
                "-q",
                "--only-binary=:all:",
                f"scikit-learn=={version}",
                *PINS[version],
                *PERSISTKIT_DEPS,
            ],
            log,
        )
        run([*pip, "install", "-q", "--no-deps", "-e", str(ROOT)], log)
        out = GOLDEN / f"sklearn-{version}"
        shutil.rmtree(out, ignore_errors=True)
        home = work / "home"  # no key or store of the user is touched
        env = {
            **os.environ,
            "PERSISTKIT_HOME": str(home),
            "PERSISTKIT_STORE": str(home / "s"),
            "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1",
        }
        done = run([str(env_dir / "bin" / "python"), str(WORKER), str(out)], log, env=env, cwd=work)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        report["pins"] = [f"scikit-learn=={version}", *PINS[version]]
        if done.stderr.strip():
            (work / "worker-stderr.txt").write_text(done.stderr)
        print(f"sklearn {version}: {len(report['cells'])} cells ({work})", flush=True)
        return report
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def read_index() -> dict[str, Any]:
    if INDEX.exists():
        return json.loads(INDEX.read_text())
    return {"sklearn": {}, "persistkit": {}}


def write_index(index: dict[str, Any]) -> None:
    index["sklearn"] = dict(sorted(index["sklearn"].items()))
    index["persistkit"] = dict(sorted(index["persistkit"].items()))
    INDEX.write_text(json.dumps(index, indent=1, sort_keys=False) + "\n")


def make_old(versions: list[str], jobs: int, keep: bool) -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        reports = dict(zip(versions, pool.map(lambda v: old_version(v, keep), versions)))
    index = read_index()
    for version, report in reports.items():
        index["sklearn"][version] = report
    write_index(index)


def current_cases() -> list[tuple[str, str, Any, dict[str, Any], Any]]:
    """This release's cases: (name, backend, model, save options, example). Only classes that
    live in the libraries themselves, so a future test process can import every one."""
    import numpy as np
    import torch
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(y))
    x, y = x[order], y[order]
    logreg = LogisticRegression(max_iter=1000).fit(x[20:], y[20:])
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 3)  # its constructor arguments are attributes of that name
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    net.eval()
    inputs = torch.from_numpy(x[:8].astype(np.float32))
    return [
        ("pickle", "pickle", logreg, {}, x[:20]),
        ("cloudpickle", "cloudpickle", logreg, {}, x[:20]),
        ("dill", "dill", logreg, {}, x[:20]),
        ("joblib", "joblib", logreg, {}, x[:20]),
        ("numpy", "numpy", np.arange(12.0).reshape(3, 4), {}, None),  # arrays do not predict
        ("safetensors", "safetensors", linear, {}, inputs),
        ("torch-module", "torch", net, {}, inputs),
        ("torch-state_dict", "torch", linear, {"mode": "state_dict"}, inputs),
        ("export", "export", net, {}, inputs),
        ("onnx-sklearn", "onnx", logreg, {}, x[:20].astype(np.float32)),
        ("onnx-torch", "onnx", net, {}, inputs),
    ]


def make_current() -> None:
    """One artifact per backend of the running persistkit into ``persistkit-<version>/``."""
    import warnings
    from importlib.metadata import version

    home = Path(tempfile.mkdtemp(prefix="golden-home-"))
    os.environ["PERSISTKIT_HOME"] = str(home)  # sealed by a throwaway key nobody trusts
    os.environ["PERSISTKIT_STORE"] = str(home / "store")
    import persistkit

    release = version("persistkit")
    out = GOLDEN / f"persistkit-{release}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cases = []
    try:
        for name, backend, model, options, example in current_cases():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                artifact = persistkit.save(
                    model, out / name, backend=backend, example=example, **options
                )
            libraries = artifact.manifest.environment.get("libraries", {})
            cases.append(
                {
                    "case": name,
                    "backend": backend,
                    "options": options,
                    "example": example is not None,
                    "libraries": libraries,
                }
            )
            print(f"persistkit {release}: {name} ({backend})", flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    index = read_index()
    index["persistkit"][release] = {"python": sys.version.split()[0], "cases": cases}
    write_index(index)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", nargs="+", default=list(PINS), choices=list(PINS))
    parser.add_argument("--jobs", type=int, default=2, help="environments built at once")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway folders")
    parser.add_argument(
        "--current",
        action="store_true",
        help="write this release's artifacts (one per backend) instead",
    )
    args = parser.parse_args(argv)
    if args.current:
        make_current()
    else:
        make_old(args.versions, args.jobs, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
