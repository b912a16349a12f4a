"""Save and load seconds of persistkit's torch and safetensors backends against raw torch and
raw safetensors, for a ~200 MB model, in the same run.

    .venv/bin/python benchmarks/bench_torch_io.py [--mb 200] [--repeats 5] [--json]

Every variant runs once per round, in a shuffled order, and rounds are interleaved, so
background load spreads over all of them; the table shows medians. Files are written to a
fresh temporary folder (page cache warm, no fsync). "+touch" also reads every weight once
(mmap-based loads are lazy).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn


class BenchMLP(nn.Module):
    """A stack of square Linear layers; keeps its constructor arguments as attributes."""

    def __init__(self, width: int = 3584, depth: int = 4) -> None:
        super().__init__()
        self.width = width
        self.depth = depth
        self.layers = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _touch(obj: Any) -> float:
    tensors = obj.values() if isinstance(obj, dict) else obj.state_dict().values()
    return float(sum(float(t.float().sum()) for t in tensors))


def _timed(action: Callable[[Path], Any], path: Path) -> tuple[float, float]:
    """Seconds to load ``path``, and to load it and then read every weight once."""
    start = time.perf_counter()
    result = action(path)
    loaded = time.perf_counter() - start
    _touch(result)
    return loaded, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200.0, help="approximate model size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    # import this file as a module so the class has an importable name (not __main__)
    from bench_torch_io import BenchMLP as ImportableMLP  # type: ignore[import-not-found]
    from safetensors.torch import load_file, save_file

    import persistkit

    depth = 4
    width = int((args.mb * 1e6 / 4 / depth) ** 0.5)
    torch.manual_seed(0)
    model = persistkit.freeze(ImportableMLP(width=width, depth=depth))
    state = model.state_dict()
    work = Path(tempfile.mkdtemp(prefix="bench-torch-io-"))

    def fresh(name: str) -> Path:
        path = work / f"{name}-{time.perf_counter_ns()}"
        return path

    def raw_meta_assign(path: Path) -> Any:
        with torch.device("meta"):
            rebuilt = ImportableMLP(width=width, depth=depth)
        rebuilt.load_state_dict(load_file(str(path)), assign=True)
        return rebuilt

    saves: dict[str, Callable[[Path], Any]] = {
        "raw torch.save(module)": lambda p: torch.save(model, p),
        "raw torch.save(state_dict)": lambda p: torch.save(state, p),
        "raw safetensors save_file": lambda p: save_file(state, str(p)),
        "persistkit torch": lambda p: persistkit.save(model, p, backend="torch"),
        "persistkit torch state_dict": lambda p: persistkit.save(
            model, p, backend="torch", mode="state_dict"
        ),
        "persistkit safetensors": lambda p: persistkit.save(model, p, backend="safetensors"),
    }
    # load variant -> (which saved file it reads, how)
    loads: dict[str, tuple[str, Callable[[Path], Any]]] = {
        "raw torch.load(module)": (
            "raw torch.save(module)",
            lambda p: torch.load(p, weights_only=False),
        ),
        "raw torch.load(state_dict, weights_only)": (
            "raw torch.save(state_dict)",
            lambda p: torch.load(p, weights_only=True),
        ),
        "raw torch.load(state_dict, mmap)": (
            "raw torch.save(state_dict)",
            lambda p: torch.load(p, weights_only=True, mmap=True),
        ),
        "raw safetensors load_file": ("raw safetensors save_file", lambda p: load_file(str(p))),
        "raw meta build + load_file + assign": ("raw safetensors save_file", raw_meta_assign),
        "persistkit torch": ("persistkit torch", persistkit.load),
        "persistkit torch state_dict": ("persistkit torch state_dict", persistkit.load),
        "persistkit safetensors": ("persistkit safetensors", persistkit.load),
    }

    save_times: dict[str, list[float]] = {name: [] for name in saves}
    load_times: dict[str, list[float]] = {name: [] for name in loads}
    touch_times: dict[str, list[float]] = {name: [] for name in loads}
    sizes: dict[str, int] = {}
    for round_number in range(args.repeats):
        latest: dict[str, Path] = {}
        # a different order each round, so page-cache writeback pressure hits every variant
        order = list(saves.items())
        random.Random(round_number).shuffle(order)
        for name, action in order:
            path = fresh(name.replace(" ", "_").replace("(", "").replace(")", ""))
            start = time.perf_counter()
            action(path)
            save_times[name].append(time.perf_counter() - start)
            latest[name] = path
            sizes[name] = _size(path)
        load_order = list(loads.items())
        random.Random(round_number).shuffle(load_order)
        for name, (source, action) in load_order:
            loaded, touched = _timed(action, latest[source])
            load_times[name].append(loaded)
            touch_times[name].append(touched)
        for path in latest.values():
            _remove(path)

    results = {
        "model": f"BenchMLP(width={width}, depth={depth})",
        "parameters": sum(p.numel() for p in model.parameters()),
        "repeats": args.repeats,
        "save": {
            name: {"median_s": statistics.median(t), "size_bytes": sizes[name]}
            for name, t in save_times.items()
        },
        "load": {
            name: {
                "median_s": statistics.median(load_times[name]),
                "median_with_touch_s": statistics.median(touch_times[name]),
            }
            for name in loads
        },
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{results['model']}: {results['parameters'] * 4 / 1e6:.0f} MB of float32 weights, "
        f"medians of {args.repeats} interleaved rounds, torch {torch.__version__}"
    )
    print(f"\n{'save':<40} {'seconds':>9} {'file MB':>9}")
    for name, row in results["save"].items():
        print(f"{name:<40} {row['median_s']:>9.3f} {row['size_bytes'] / 1e6:>9.1f}")
    print(f"\n{'load':<40} {'seconds':>9} {'+touch s':>9}")
    for name, row in results["load"].items():
        print(f"{name:<40} {row['median_s']:>9.3f} {row['median_with_touch_s']:>9.3f}")


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _remove(path: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path)
    else:
        os.unlink(path)


if __name__ == "__main__":
    main()
