"""Issue 16's figures ("speed at the limit"): persistkit beside the raw library floor, side by
side in one interleaved run, with the issue's targets.

    .venv/bin/python benchmarks/bench_limits.py                 # default run, ~2-4 min, 2 cores
    .venv/bin/python benchmarks/bench_limits.py --big           # also 1 GB saves and peak memory
    .venv/bin/python benchmarks/bench_limits.py --repeat 7 --json limits.json

Sections (each persistkit/raw pair alternates its order every round; medians [min-max]):

1. save, integrity on: a 200 MB torch MLP with the safetensors and torch backends against
   ``safetensors.torch.save_file`` / ``torch.save`` of the same module, and a kNN holding a
   200 MB float64 array with the joblib backend against ``joblib.dump``. ``--big``: 1 GB too.
2. first ``load`` in a fresh process (one subprocess per round; timed inside the child from
   just before the call to just after it, with the model's library -- scikit-learn, or torch
   and safetensors -- and ``persistkit`` itself already imported): a tiny LogisticRegression
   against ``joblib.load``, the 200 MB module against ``load_file`` + a ``meta``-device skeleton
   + ``load_state_dict(assign=True)``; and ``import persistkit`` alone in a fresh process.
3. ``persistkit predict NAME x.npy`` (the CLI, process start to exit) against a bare Python
   script that loads the same model with the raw library and prints the prediction, for a
   scikit-learn LogisticRegression and a small torch module (class in a temp ``--app-dir``).
4. restricted load of a 200-tree RandomForest from a bare ``.joblib`` made by ``joblib.dump``
   (nothing sealed: ``PERSISTKIT_HOME`` is a fresh folder) against ``joblib.load`` of the file,
   in a child process that has not imported torch (see :func:`section_restricted_in_child`).
5. ``--big`` only: peak resident memory (the high-water mark, in a child) of a 1 GB
   safetensors save over the child's resident memory before the model was built, as a
   multiple of the model's size; and the memory a load of it adds (it should stay mapped).
   The child reads the mark as ``VmHWM``: ``getrusage``'s ``ru_maxrss`` survives fork + exec,
   so a child of this process (which holds models) would start with the parent's mark.

Beside persistkit and the raw floor, each figure is also measured for the other tools a user
might pick instead, where they are installed (optional; BentoML is skipped with a note when
absent): MLflow (``mlflow.pytorch``/``mlflow.sklearn`` save and load, a bare script through
``mlflow.pyfunc``) and skops (``skops.io`` dump and load, the safe reader of scikit-learn
models). A peer's top-level ``import`` is not timed in the first-load children, just as
``import persistkit`` is not; everything its load call imports is.

Everything is written to temporary folders (page cache warm, no fsync), removed at the end;
before each timed save, every side's included, the dirty pages left by the previous one are
written back (``os.sync``, untimed), so no save pays for another's write-back;
``PERSISTKIT_HOME`` and ``PERSISTKIT_STORE`` point to fresh temporary folders for the run.
A full run (no ``--only``) replaces its section of ``benchmarks/RESULTS.md`` (``--results``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import suite_models  # noqa: E402

PYTHON = sys.executable
CLI = str(Path(sys.executable).parent / "persistkit")

# the suite's shapes (benchmarks/run.py): ~201 MB and ~1 GB of float32 weights
TORCH_200MB = (4096, 3)
TORCH_1GB = (4096, 15)


# --- results -----------------------------------------------------------------------------------


@dataclass
class Row:
    """One persistkit figure beside its raw floor, and the issue's target for it.

    ``rule``: ``ratio`` (pk median <= limit x raw median), ``slack`` (pk median <= raw median +
    limit seconds), ``below`` (pk median < limit seconds; no raw), ``size`` (samples are
    multiples of the model's size; pk median <= limit).
    """

    section: str
    what: str
    pk: list[float]
    raw: list[float] | None
    rule: str
    limit: float
    target: str
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: the same job done by another tool a user might pick instead (mlflow, skops, bentoml)
    peers: dict[str, list[float]] = field(default_factory=dict)

    @property
    def pk_median(self) -> float:
        return statistics.median(self.pk)

    @property
    def raw_median(self) -> float | None:
        return None if not self.raw else statistics.median(self.raw)

    @property
    def ratio(self) -> float | None:
        raw = self.raw_median
        return None if not raw else self.pk_median / raw

    @property
    def met(self) -> bool:
        pk, raw = self.pk_median, self.raw_median
        if self.rule == "ratio":
            return raw is not None and pk <= self.limit * raw
        if self.rule == "slack":
            return raw is not None and pk <= raw + self.limit
        if self.rule == "below":
            return pk < self.limit
        return pk <= self.limit  # "size"

    def to_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "what": self.what,
            "unit": "x model size" if self.rule == "size" else "s",
            "persistkit_samples": self.pk,
            "raw_samples": self.raw,
            "persistkit_median": self.pk_median,
            "raw_median": self.raw_median,
            "ratio": self.ratio,
            "target": self.target,
            "met": self.met,
            "note": self.note,
            "peer_samples": self.peers,
            "peer_medians": {k: statistics.median(v) for k, v in self.peers.items() if v},
            **self.extra,
        }


def _fmt(value: float, rule: str) -> str:
    if rule == "size":
        return f"{value:.2f}x"
    ms = value * 1000
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


#: other tools a user might pick instead, measured beside persistkit where installed
PEERS = ("mlflow", "skops", "bentoml")


def peer_installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def quiet_peers() -> None:
    """MLflow warns on every pickle-format torch save (the format the raw floor uses)."""
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)


def table_of(rows: list[Row]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The header and cells of a section's table (persistkit, raw floor, peers)."""
    header = ("what", "persistkit [min-max]", "raw", "ratio", "target", "met", *PEERS)
    table = []
    for r in rows:
        spread = (
            f"{_fmt(r.pk_median, r.rule)} [{_fmt(min(r.pk), r.rule)}-{_fmt(max(r.pk), r.rule)}]"
        )
        raw = "-" if r.raw_median is None else _fmt(r.raw_median, r.rule)
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        peers = tuple(
            _fmt(statistics.median(r.peers[p]), r.rule) if r.peers.get(p) else "-" for p in PEERS
        )
        table.append((r.what, spread, raw, ratio, r.target, "yes" if r.met else "NO", *peers))
    return header, table


def print_section(title: str, rows: list[Row]) -> None:
    header, table = table_of(rows)
    widths = [max(len(str(line[i])) for line in [header, *table]) for i in range(len(header))]
    unit = "x model size" if rows and rows[0].rule == "size" else "ms"
    print(f"\n{title} ({unit})")
    for line in [header, *table]:
        print(
            "  "
            + "  ".join(
                str(cell).ljust(w) if i in (0, 4) else str(cell).rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    for r in rows:
        if r.note:
            print(f"  - {r.what}: {r.note}")


# --- helpers -----------------------------------------------------------------------------------


def _timed(action: Callable[[], Any], *, settle: bool = False) -> float:
    gc.collect()
    if settle:
        os.sync()  # untimed: start with no dirty pages left by the previous action
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def interleaved(
    pk: Callable[[int], Any],
    raw: Callable[[int], Any],
    rounds: int,
    after: Callable[[], Any],
    peers: dict[str, Callable[[int], Any]] | None = None,
    *,
    settle: bool = False,
) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """``rounds`` rounds of every action (persistkit, raw, then each peer; the order rotates
    every round) after one untimed warm-up round; ``after`` cleans up after each round.

    ``settle`` (saves) writes back every dirty page (``os.sync``, untimed) before each timed
    action: otherwise the hundreds of MB the previous action left dirty push the kernel past
    its write-back threshold in the middle of whichever save comes next, and that save, of
    either side, waits a second or more on the disk (seen as 1.4-2.6x rows that flip from run
    to run)."""
    actions = {"pk": pk, "raw": raw, **(peers or {})}
    for action in actions.values():
        action(-2)
    after()
    samples: dict[str, list[float]] = {name: [] for name in actions}
    names = list(actions)
    for n in range(rounds):
        k = n % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(_timed(lambda a=actions[name], n=n: a(n), settle=settle))
        after()
    pk_s, raw_s = samples.pop("pk"), samples.pop("raw")
    return pk_s, raw_s, samples


def digest_pass(path: Path) -> float:
    """Seconds for one pass of the file digest saves use now (BLAKE3, or sha256 when
    ``PERSISTKIT_FILE_DIGEST=sha256`` or blake3 is missing) over ``path``, read in 1 MiB."""
    from persistkit.digests import new_hasher, save_algorithm

    started = time.perf_counter()
    digest = new_hasher(save_algorithm())
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return time.perf_counter() - started


def run_child(argv: list[str], *, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=os.environ.copy())
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed:\n{done.stderr[-3000:]}")
    return done.stdout


def wall_of(argv: list[str], *, cwd: Path | None = None) -> float:
    """Seconds from process start to exit (the child's output is checked, not timed)."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=os.environ.copy())
    elapsed = time.perf_counter() - started
    if done.returncode or not done.stdout.strip():
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed:\n{done.stderr[-3000:]}")
    return elapsed


# --- 1. save -----------------------------------------------------------------------------------


def section_save(scratch: Path, rounds: int, big: bool) -> list[Row]:
    import joblib
    import torch
    from safetensors.torch import save_file

    import persistkit

    rows = []
    sizes = [("200 MB", TORCH_200MB, 1.25, "<= 1.25x raw")]
    if big:
        sizes.append(("1 GB", TORCH_1GB, 1.1, "<= 1.1x raw"))
    for label, (width, depth), limit, target in sizes:
        model = suite_models.torch_mlp(width, depth)()
        state = model.state_dict()
        files: list[Path] = []

        def path(kind: str, n: int, files: list[Path] = files) -> Path:
            files.append(scratch / f"save-{kind}-{n}")
            return files[-1]

        def clean(files: list[Path] = files) -> None:
            for f in files:
                _remove(f)
            files.clear()

        pairs = [
            (
                "safetensors",
                lambda n, m=model: persistkit.save(m, path("pk-st", n), backend="safetensors"),
                lambda n, s=state: save_file(s, str(path("raw-st", n))),
                "safetensors.torch.save_file(state_dict)",
            ),
            (
                "torch",
                lambda n, m=model: persistkit.save(m, path("pk-pt", n), backend="torch"),
                lambda n, m=model: torch.save(m, path("raw-pt", n)),
                "torch.save(module)",
            ),
        ]
        peers: dict[str, Callable[[int], Any]] = {}
        if peer_installed("mlflow"):
            import mlflow.pytorch

            peers["mlflow"] = lambda n, m=model: mlflow.pytorch.save_model(
                m, path("mlflow", n), pip_requirements=["torch"], serialization_format="pickle"
            )
        for backend, pk, raw, raw_what in pairs:
            pk_s, raw_s, peer_s = interleaved(pk, raw, rounds, clean, peers, settle=True)
            raw(-1)  # one more raw file: the floor one digest pass over it sets
            sha = statistics.median(digest_pass(files[-1]) for _ in range(3))
            clean()
            rows.append(
                Row(
                    "save",
                    f"torch {label}, {backend} backend",
                    pk_s,
                    raw_s,
                    "ratio",
                    limit,
                    target,
                    note=_save_note(raw_what, sha, pk_s, raw_s)
                    + "; mlflow = mlflow.pytorch.save_model (pickle, requirements given)",
                    peers=peer_s,
                )
            )
        del model, state
        gc.collect()

    # 200 MB joblib payload: a brute-force kNN holding a 200 MB float64 array
    knn = suite_models.knn(200)()
    files = []

    def jl_path(kind: str, n: int) -> Path:
        files.append(scratch / f"save-{kind}-{n}")
        return files[-1]

    def clean_jl() -> None:
        for f in files:
            _remove(f)
        files.clear()

    knn_peers: dict[str, Callable[[int], Any]] = {}
    if peer_installed("mlflow"):
        import mlflow.sklearn

        knn_peers["mlflow"] = lambda n: mlflow.sklearn.save_model(
            knn, jl_path("mlflow", n), pip_requirements=["scikit-learn"]
        )
    if peer_installed("skops"):
        import skops.io

        knn_peers["skops"] = lambda n: skops.io.dump(knn, jl_path("skops", n))
    pk_s, raw_s, peer_s = interleaved(
        lambda n: persistkit.save(knn, jl_path("pk-jl", n), backend="joblib"),
        lambda n: joblib.dump(knn, jl_path("raw-jl", n)),
        rounds,
        clean_jl,
        knn_peers,
        settle=True,
    )
    raw_file = jl_path("raw-jl", 0)
    joblib.dump(knn, raw_file)
    sha = statistics.median(digest_pass(raw_file) for _ in range(3))
    clean_jl()
    rows.append(
        Row(
            "save",
            "kNN 200 MB array, joblib backend",
            pk_s,
            raw_s,
            "ratio",
            1.25,
            "<= 1.25x raw",
            note=_save_note("joblib.dump", sha, pk_s, raw_s)
            + "; mlflow = mlflow.sklearn.save_model (requirements given), skops = skops.io.dump",
            peers=peer_s,
        )
    )
    knn = None
    gc.collect()
    return rows


def _save_note(raw_what: str, sha: float, pk_s: list[float], raw_s: list[float]) -> str:
    """What the raw floor is, and persistkit's save against the real floor of a save that
    records a digest: the longer of the raw write and one digest pass over the bytes."""
    from persistkit.digests import save_algorithm

    algorithm = save_algorithm()
    floor = max(statistics.median(raw_s), sha)
    return (
        f"raw = {raw_what}; one {algorithm} pass over the file: {sha * 1000:.0f} ms; "
        f"persistkit / max(raw, {algorithm} pass) = {statistics.median(pk_s) / floor:.2f}"
    )


# --- 2. first load in a fresh process ---------------------------------------------------------

LOAD_CHILD = textwrap.dedent(
    """
    import json, sys, time
    kind, who, path, here = sys.argv[1:5]
    if kind == "import":
        started = time.perf_counter()
        import persistkit
        print(json.dumps(time.perf_counter() - started))
        raise SystemExit(0)
    if kind == "sklearn":
        import joblib, sklearn.linear_model  # the model's own library: not timed
    else:
        import torch, safetensors.torch  # the model's own library: not timed
        sys.path.insert(0, here)
        import suite_models
        cls = suite_models.WideMLP
        width, depth = int(sys.argv[5]), int(sys.argv[6])
    if who == "pk":
        import persistkit  # `import persistkit` is timed on its own row
        started = time.perf_counter()
        model = persistkit.load(path)
        elapsed = time.perf_counter() - started
    elif who == "mlflow":
        import mlflow  # the top-level package, like `import persistkit`: not timed
        started = time.perf_counter()
        if kind == "sklearn":
            import mlflow.sklearn
            model = mlflow.sklearn.load_model(path)
        else:
            import mlflow.pytorch
            model = mlflow.pytorch.load_model(path)
        elapsed = time.perf_counter() - started
    elif who == "skops":
        import skops  # the top-level package: not timed
        started = time.perf_counter()
        import skops.io
        model = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
        elapsed = time.perf_counter() - started
    elif kind == "sklearn":
        started = time.perf_counter()
        model = joblib.load(path)
        elapsed = time.perf_counter() - started
    else:
        started = time.perf_counter()
        with torch.device("meta"):
            model = cls(width, depth)
        model.load_state_dict(safetensors.torch.load_file(path), assign=True)
        model.eval()
        elapsed = time.perf_counter() - started
    print(json.dumps(elapsed))
    """
)


def section_first_load(scratch: Path, rounds: int) -> list[Row]:
    import joblib
    from safetensors.torch import save_file

    import persistkit

    child = scratch / "load_child.py"
    child.write_text(LOAD_CHILD)

    def measure(kind: str, who: str, path: str, *extra: str) -> float:
        return float(run_child([PYTHON, str(child), kind, who, path, str(HERE), *extra]))

    rows = []
    lr = suite_models.logistic_regression()
    lr_pk = scratch / "first-load-lr"
    art = persistkit.save(lr, lr_pk)
    lr_raw = scratch / "first-load-lr.joblib"
    joblib.dump(lr, lr_raw)
    peers: dict[str, Callable[[], float]] = {}
    peer_files: list[Path] = []
    if peer_installed("mlflow"):
        import mlflow.sklearn

        peer_files.append(scratch / "first-load-lr-mlflow")
        mlflow.sklearn.save_model(lr, peer_files[-1], pip_requirements=["scikit-learn"])
        peers["mlflow"] = lambda p=str(peer_files[-1]): measure("sklearn", "mlflow", p)
    if peer_installed("skops"):
        import skops.io

        peer_files.append(scratch / "first-load-lr.skops")
        skops.io.dump(lr, peer_files[-1])
        peers["skops"] = lambda p=str(peer_files[-1]): measure("sklearn", "skops", p)
    pk_s, raw_s, peer_s = _alternate(
        lambda: measure("sklearn", "pk", str(lr_pk)),
        lambda: measure("sklearn", "raw", str(lr_raw)),
        rounds,
        peers,
    )
    rows.append(
        Row(
            "first load",
            f"tiny LogisticRegression ({art.backend} backend)",
            pk_s,
            raw_s,
            "slack",
            0.010,
            "<= raw + 10 ms",
            note="raw = joblib.load; scikit-learn and persistkit imported before timing; "
            "peers: their top-level package imported before timing, their load's own imports "
            "timed (as persistkit's are): mlflow.sklearn.load_model, skops.io.load",
            peers=peer_s,
        )
    )

    width, depth = TORCH_200MB
    module = suite_models.torch_mlp(width, depth)()
    st_pk = scratch / "first-load-st"
    persistkit.save(module, st_pk, backend="safetensors")
    st_raw = scratch / "first-load.safetensors"
    save_file(module.state_dict(), str(st_raw))
    shape = [str(width), str(depth)]
    torch_peers: dict[str, Callable[[], float]] = {}
    if peer_installed("mlflow"):
        import mlflow.pytorch

        peer_files.append(scratch / "first-load-st-mlflow")
        mlflow.pytorch.save_model(
            module, peer_files[-1], pip_requirements=["torch"], serialization_format="pickle"
        )
        torch_peers["mlflow"] = lambda p=str(peer_files[-1]): measure("torch", "mlflow", p, *shape)
    del module
    gc.collect()
    pk_s, raw_s, peer_s = _alternate(
        lambda: measure("torch", "pk", str(st_pk), *shape),
        lambda: measure("torch", "raw", str(st_raw), *shape),
        rounds,
        torch_peers,
    )
    rows.append(
        Row(
            "first load",
            "torch 200 MB module, safetensors",
            pk_s,
            raw_s,
            "slack",
            0.010,
            "<= raw + 10 ms",
            note="raw = load_file + meta-device skeleton + load_state_dict(assign=True); "
            "torch, safetensors and persistkit imported before timing; mlflow = "
            "mlflow.pytorch.load_model of its pickle (it has no mapped load)",
            peers=peer_s,
        )
    )
    imports = [measure("import", "-", "-") for _ in range(rounds)]
    rows.append(
        Row(
            "first load",
            "import persistkit (fresh process)",
            imports,
            None,
            "below",
            0.050,
            "< 50 ms",
        )
    )
    for f in (lr_pk, st_pk, lr_raw, st_raw, *peer_files):
        _remove(f)
    return rows


def _alternate(
    pk: Callable[[], float],
    raw: Callable[[], float],
    rounds: int,
    peers: dict[str, Callable[[], float]] | None = None,
) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """Like :func:`interleaved`, for actions that measure themselves (in a child)."""
    actions = {"pk": pk, "raw": raw, **(peers or {})}
    samples: dict[str, list[float]] = {name: [] for name in actions}
    names = list(actions)
    for n in range(rounds):
        k = n % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(actions[name]())
    pk_s, raw_s = samples.pop("pk"), samples.pop("raw")
    return pk_s, raw_s, samples


# --- 3. persistkit predict against a bare script ------------------------------------------------

TINY_NET = textwrap.dedent(
    """
    from torch import nn


    class TinyNet(nn.Module):
        def __init__(self, d_in=32, hidden=64, d_out=4):
            super().__init__()
            self.d_in, self.hidden, self.d_out = d_in, hidden, d_out
            self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))

        def forward(self, x):
            return self.net(x)
    """
)

BARE_SKLEARN = textwrap.dedent(
    """
    import sys
    import joblib
    import numpy as np
    model = joblib.load(sys.argv[1])
    x = np.load(sys.argv[2])
    proba = model.predict_proba(x)
    for i, row in enumerate(proba):
        print(f"{sys.argv[2]}[{i}]: {model.classes_[row.argmax()]} ({row.max():.2f})")
    """
)

BARE_TORCH_SAFETENSORS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from safetensors.torch import load_file
    sys.path.append(sys.argv[3])
    from tinynet import TinyNet
    with torch.device("meta"):
        model = TinyNet()
    model.load_state_dict(load_file(sys.argv[1]), assign=True)
    model.eval()
    with torch.inference_mode():
        out = model(torch.from_numpy(np.load(sys.argv[2]))).numpy()
    for i, row in enumerate(out):
        print(f"{sys.argv[2]}[{i}]: {row.tolist()}")
    """
)

BARE_TORCH_PICKLE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    sys.path.append(sys.argv[3])
    model = torch.load(sys.argv[1], weights_only=False).eval()
    with torch.inference_mode():
        out = model(torch.from_numpy(np.load(sys.argv[2]))).numpy()
    for i, row in enumerate(out):
        print(f"{sys.argv[2]}[{i}]: {row.tolist()}")
    """
)


PEER_MLFLOW_PYFUNC = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.append(sys.argv[3])
    import mlflow.pyfunc
    model = mlflow.pyfunc.load_model(sys.argv[1])
    out = np.asarray(model.predict(np.load(sys.argv[2])))
    for i, row in enumerate(out):
        print(f"{sys.argv[2]}[{i}]: {row.tolist()}")
    """
)

PEER_SKOPS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import skops.io
    model = skops.io.load(sys.argv[1], trusted=skops.io.get_untrusted_types(file=sys.argv[1]))
    proba = model.predict_proba(np.load(sys.argv[2]))
    for i, row in enumerate(proba):
        print(f"{sys.argv[2]}[{i}]: {model.classes_[row.argmax()]} ({row.max():.2f})")
    """
)


def _predict_peers(
    work: Path, model: Any, x: Path, app: Path, *, flavor: str
) -> dict[str, Callable[[], float]]:
    """Bare scripts that answer through MLflow's pyfunc (and skops, for scikit-learn), from
    process start to exit, each on its own saved copy of ``model``."""
    peers: dict[str, Callable[[], float]] = {}
    if peer_installed("mlflow"):
        saved = work / f"mlflow-{flavor}"
        if flavor == "sklearn":
            import mlflow.sklearn

            mlflow.sklearn.save_model(model, saved, pip_requirements=["scikit-learn"])
        else:
            import mlflow.pytorch

            mlflow.pytorch.save_model(
                model, saved, pip_requirements=["torch"], serialization_format="pickle"
            )
        script = work / "peer_mlflow.py"
        script.write_text(PEER_MLFLOW_PYFUNC)
        argv = [PYTHON, str(script), str(saved), str(x), str(app)]
        peers["mlflow"] = lambda: wall_of(argv, cwd=work)
    if flavor == "sklearn" and peer_installed("skops"):
        import skops.io

        saved = work / "model.skops"
        skops.io.dump(model, saved)
        script = work / "peer_skops.py"
        script.write_text(PEER_SKOPS)
        skops_argv = [PYTHON, str(script), str(saved), str(x)]
        peers["skops"] = lambda: wall_of(skops_argv, cwd=work)
    return peers


def section_predict(scratch: Path, rounds: int) -> list[Row]:
    import joblib
    import numpy as np
    import torch
    from safetensors.torch import save_file

    import persistkit

    work = scratch / "predict"
    app = work / "app"
    app.mkdir(parents=True)
    rows = []

    lr = suite_models.logistic_regression()
    persistkit.save(lr, "bench-lr")
    joblib.dump(lr, work / "lr.joblib")
    x_lr = work / "x_lr.npy"
    np.save(x_lr, np.random.default_rng(1).standard_normal((3, 64)))
    bare_lr = work / "bare_sklearn.py"
    bare_lr.write_text(BARE_SKLEARN)
    pk_s, raw_s, peer_s = _alternate(
        lambda: wall_of([CLI, "predict", "bench-lr", str(x_lr)], cwd=work),
        lambda: wall_of([PYTHON, str(bare_lr), str(work / "lr.joblib"), str(x_lr)], cwd=work),
        rounds,
        _predict_peers(work, lr, x_lr, app, flavor="sklearn"),
    )
    rows.append(
        Row(
            "predict",
            "LogisticRegression",
            pk_s,
            raw_s,
            "ratio",
            1.15,
            "<= 1.15x bare",
            note="bare = joblib.load + predict_proba, printed like the CLI; peers: bare "
            "scripts through mlflow.pyfunc.load_model + predict and skops.io.load + predict_proba",
            peers=peer_s,
        )
    )

    (app / "tinynet.py").write_text(TINY_NET)
    sys.path.append(str(app))
    try:
        from tinynet import TinyNet  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(app))
    torch.manual_seed(0)
    net = TinyNet().eval()
    art = persistkit.save(net, "bench-tiny")
    if art.backend == "safetensors":
        raw_file = work / "tiny.safetensors"
        save_file(net.state_dict(), str(raw_file))
        bare_text, raw_what = BARE_TORCH_SAFETENSORS, "load_file + meta skeleton + assign"
    else:
        raw_file = work / "tiny.pt"
        torch.save(net, raw_file)
        bare_text, raw_what = BARE_TORCH_PICKLE, "torch.load(weights_only=False)"
    bare_torch = work / "bare_torch.py"
    bare_torch.write_text(bare_text)
    x_net = work / "x_net.npy"
    np.save(x_net, np.random.default_rng(2).standard_normal((3, 32)).astype(np.float32))
    pk_s, raw_s, peer_s = _alternate(
        lambda: wall_of(
            [CLI, "predict", "bench-tiny", str(x_net), "--app-dir", str(app)], cwd=work
        ),
        lambda: wall_of([PYTHON, str(bare_torch), str(raw_file), str(x_net), str(app)], cwd=work),
        rounds,
        _predict_peers(work, net, x_net, app, flavor="torch"),
    )
    rows.append(
        Row(
            "predict",
            f"small torch module ({art.backend} backend)",
            pk_s,
            raw_s,
            "ratio",
            1.15,
            "<= 1.15x bare",
            note=f"bare = {raw_what} + forward, printed; process start to exit; mlflow: a "
            "bare script through mlflow.pyfunc.load_model + predict",
            peers=peer_s,
        )
    )
    shutil.rmtree(work, ignore_errors=True)
    return rows


# --- 4. restricted load of a foreign forest ------------------------------------------------------


def section_restricted_in_child(scratch: Path, rounds: int) -> list[Row]:
    """:func:`section_restricted` in a fresh process that imports scikit-learn, not torch.

    The restricted reader is a Python pickle machine: it allocates many objects, so the cyclic
    garbage collector runs during it, and each full collection walks every object the process
    holds. In this process (torch imported, models built) that would add tens of ms that a
    process loading a forest does not pay."""
    argv = [PYTHON, __file__, "--child-section", "restricted", "--repeat", str(rounds)]
    out = run_child([*argv, "--scratch", str(scratch)])
    return [Row(**fields) for fields in json.loads(out.strip().splitlines()[-1])]


def section_restricted(scratch: Path, rounds: int) -> list[Row]:
    import joblib
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    import persistkit

    # bench_safe_load.py's forest: 200 trees on 20000 samples of 10 features
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 10))
    y = (X[:, 0] + rng.normal(scale=0.5, size=20000) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=200, random_state=0, n_jobs=2).fit(X, y)
    path = scratch / "forest.joblib"
    joblib.dump(forest, path)

    def pk_load() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return persistkit.load(path)

    expected = forest.predict(X[:500])
    if not np.array_equal(pk_load().predict(X[:500]), expected):
        raise RuntimeError("the restricted load of the forest predicts differently")
    peers: dict[str, Callable[[int], Any]] = {}
    skops_file = scratch / "forest.skops"
    if peer_installed("skops"):
        # the other safe reader of scikit-learn models: its own format, its trusted types
        import skops.io

        skops.io.dump(forest, skops_file)
        trusted = skops.io.get_untrusted_types(file=skops_file)
        peers["skops"] = lambda n: skops.io.load(skops_file, trusted=trusted)
    pk_s, raw_s, peer_s = interleaved(
        lambda n: pk_load(), lambda n: joblib.load(path), rounds, gc.collect, peers
    )
    size = path.stat().st_size
    _remove(path)
    _remove(skops_file)
    return [
        Row(
            "restricted load",
            "200-tree forest, bare .joblib",
            pk_s,
            raw_s,
            "ratio",
            2.0,
            "<= 2x joblib.load",
            note=f"file {size / 1e6:.1f} MB made by joblib.dump, untrusted (no seal); "
            "raw = joblib.load; skops = skops.io.load of the forest in its own format with "
            "get_untrusted_types() trusted",
            peers=peer_s,
        )
    ]


# --- 5. peak memory (--big) ---------------------------------------------------------------------

MEMORY_CHILD = textwrap.dedent(
    """
    import json, os, resource, sys
    action, who, path, here, width, depth = sys.argv[1:7]
    import torch, safetensors.torch
    sys.path.insert(0, here)
    import suite_models
    import persistkit
    persistkit.save, persistkit.load  # resolve the lazy API before the baseline

    def rss():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def high_water():
        # getrusage's ru_maxrss, read from the process's own memory map: ru_maxrss itself
        # keeps the high-water of the parent's memory across fork + exec (a parent holding a
        # 1 GB model would count), VmHWM starts afresh at exec
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    size = 4 * (int(depth) * (int(width) ** 2 + int(width)) + int(width) * 10 + 10)
    base = rss()
    if action == "save":
        model = suite_models.torch_mlp(int(width), int(depth))()
        size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        with_model = high_water()
        if who == "pk":
            persistkit.save(model, path, backend="safetensors")
        else:
            safetensors.torch.save_file(model.state_dict(), path)
        peak = high_water()
        print(json.dumps({"size": size, "base": base, "before": with_model, "peak": peak}))
    else:
        cls = suite_models.WideMLP
        if who == "pk":
            model = persistkit.load(path)
        else:
            with torch.device("meta"):
                model = cls(int(width), int(depth))
            model.load_state_dict(safetensors.torch.load_file(path), assign=True)
        print(json.dumps({"size": size, "base": base, "after": rss(), "peak": high_water()}))
    """
)


def section_memory(scratch: Path, rounds: int) -> list[Row]:
    child = scratch / "memory_child.py"
    child.write_text(MEMORY_CHILD)
    width, depth = TORCH_1GB
    pk_path, raw_path = scratch / "mem-pk", scratch / "mem-raw.safetensors"

    def run(action: str, who: str) -> dict[str, float]:
        path = pk_path if who == "pk" else raw_path
        if action == "save":
            _remove(path)
        argv = [PYTHON, str(child), action, who, str(path), str(HERE), str(width), str(depth)]
        return json.loads(run_child(argv))

    saves: dict[str, list[dict[str, float]]] = {"pk": [], "raw": []}
    for n in range(rounds):
        for who in ("pk", "raw") if n % 2 == 0 else ("raw", "pk"):
            saves[who].append(run("save", who))
    loads: dict[str, list[dict[str, float]]] = {"pk": [], "raw": []}
    for n in range(rounds):
        for who in ("pk", "raw") if n % 2 == 0 else ("raw", "pk"):
            loads[who].append(run("load", who))
    _remove(pk_path)
    _remove(raw_path)

    def over(samples: list[dict[str, float]], top: str) -> list[float]:
        return [(s[top] - s["base"]) / s["size"] for s in samples]

    save_extra = statistics.median((s["peak"] - s["before"]) / s["size"] for s in saves["pk"])
    return [
        Row(
            "memory",
            "1 GB safetensors save: peak over baseline",
            over(saves["pk"], "peak"),
            over(saves["raw"], "peak"),
            "size",
            1.1,
            "<= 1.1x size",
            note="baseline = the child's resident memory before the model was built (so the "
            "model itself counts 1.0x); persistkit's save alone raised the high-water by "
            f"{save_extra:.2f}x size; raw = save_file",
        ),
        Row(
            "memory",
            "1 GB safetensors load: resident added",
            over(loads["pk"], "after"),
            over(loads["raw"], "after"),
            "size",
            0.1,
            "mapped (< 0.1x size)",
            note="resident memory after the load over the child's baseline (pages of a mapped "
            "file count only once touched); raw = load_file + meta skeleton + assign",
        ),
    ]


# --- RESULTS.md ---------------------------------------------------------------------------------

RESULTS_START = "<!-- bench_limits: start (written by benchmarks/bench_limits.py) -->"
RESULTS_END = "<!-- bench_limits: end -->"


def peers_line() -> str:
    """Which peers were measured, and which were skipped because they are not installed."""
    missing = [p for p in PEERS if not peer_installed(p)]
    if not missing:
        return "Peers measured: " + ", ".join(PEERS) + "."
    present = [p for p in PEERS if p not in missing]
    return (
        f"Peers measured: {', '.join(present) or 'none'}; not installed, skipped (columns "
        f"show -): {', '.join(missing)}."
    )


def results_markdown(
    titled: list[tuple[str, list[Row]]], info: dict[str, Any], args: Any, wall: float
) -> str:
    """The issue-16 section of ``benchmarks/RESULTS.md`` for this run."""
    command = ".venv/bin/python benchmarks/bench_limits.py" + (" --big" if args.big else "")
    if args.repeat != 5:
        command += f" --repeat {args.repeat}"
    lines = [
        RESULTS_START,
        "## Speed at the limit (issue 16)",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"(wall time {wall:.0f} s); medians of {args.repeat} interleaved rounds; "
        f"{info['cores']} cores, load average at start {info['load_average_at_start']}; "
        f"Python {info['python']}, "
        + ", ".join(
            f"{k} {info[k]}" for k in ("numpy", "scikit-learn", "torch", "safetensors") if k in info
        )
        + ".",
        "",
        peers_line(),
        "",
    ]
    for title, rows in titled:
        header, table = table_of(rows)
        unit = "x model size" if rows and rows[0].rule == "size" else "ms"
        lines += [f"### {title} ({unit})", "", "| " + " | ".join(header) + " |"]
        lines.append(
            "| " + " | ".join("---" if i in (0, 4) else "---:" for i in range(len(header))) + " |"
        )
        lines += ["| " + " | ".join(row) + " |" for row in table]
        lines.append("")
        lines += [f"- {r.what}: {r.note}" for r in rows if r.note]
        lines.append("")
    met = sum(r.met for _, rows in titled for r in rows)
    total = sum(len(rows) for _, rows in titled)
    lines += [
        f"Targets met: {met}/{total}. Why the rest are missed: `docs/performance.md`.",
        RESULTS_END,
    ]
    return "\n".join(lines) + "\n"


def write_results(path: Path, section: str) -> None:
    """Replace this benchmark's section of ``path`` (or append it); the rest is kept."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start, end = text.find(RESULTS_START), text.find(RESULTS_END)
    if start != -1 and end != -1:
        text = text[:start] + section + text[end + len(RESULTS_END) + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


# --- main ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    for dist in ("persistkit", "numpy", "scikit-learn", "joblib", "torch", "safetensors"):
        try:
            info[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds per pair (default 5)")
    parser.add_argument("--big", action="store_true", help="also 1 GB saves and peak memory")
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    parser.add_argument(
        "--results",
        default=str(HERE / "RESULTS.md"),
        help="markdown file whose issue-16 section is replaced by this run (full runs only; "
        "'-' to skip)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated sections: save,load,predict,restricted,memory",
    )
    parser.add_argument("--child-section", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.child_section == "restricted":  # run by section_restricted_in_child
        rows = section_restricted(Path(args.scratch), args.repeat)
        print(json.dumps([dataclasses.asdict(r) for r in rows]))
        return 0
    only = set(args.only.split(",")) if args.only else None

    root = Path(tempfile.mkdtemp(prefix="pk-bench-limits-"))
    os.environ["PERSISTKIT_HOME"] = str(root / "home")
    os.environ["PERSISTKIT_STORE"] = str(root / "store")
    scratch = root / "scratch"
    scratch.mkdir()
    started = time.perf_counter()
    info = machine()
    print(
        f"persistkit {info.get('persistkit')}, torch {info.get('torch')}, scikit-learn "
        f"{info.get('scikit-learn')}, {info['cores']} cores, load average "
        f"{info['load_average_at_start']}; medians of {args.repeat} interleaved rounds"
    )
    sections: list[tuple[str, str, Callable[[], list[Row]]]] = [
        ("save", "1. save, integrity on", lambda: section_save(scratch, args.repeat, args.big)),
        (
            "load",
            "2. first load in a fresh process (timed inside the child)",
            lambda: section_first_load(scratch, args.repeat),
        ),
        (
            "predict",
            "3. persistkit predict vs a bare script (process start to exit)",
            lambda: section_predict(scratch, args.repeat),
        ),
        (
            "restricted",
            "4. restricted load of a foreign file",
            lambda: section_restricted_in_child(scratch, args.repeat),
        ),
    ]
    if args.big:
        sections.append(
            (
                "memory",
                "5. peak memory, 1 GB safetensors (child process)",
                lambda: section_memory(scratch, args.repeat),
            )
        )
    rows: list[Row] = []
    titled: list[tuple[str, list[Row]]] = []
    print(peers_line())
    quiet_peers()
    try:
        for key, title, run in sections:
            if only is not None and key not in only:
                continue
            section_rows = run()
            print_section(title, section_rows)
            rows.extend(section_rows)
            titled.append((title, section_rows))
            sys.stdout.flush()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - started
    met = sum(r.met for r in rows)
    print(f"\ntargets met: {met}/{len(rows)}; wall time {wall:.0f} s")
    if only is None and args.results != "-":
        write_results(Path(args.results), results_markdown(titled, info, args, wall))
        print(f"wrote {args.results}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": info,
                    "repeat": args.repeat,
                    "big": args.big,
                    "wall_s": wall,
                    "rows": [r.to_dict() for r in rows],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
