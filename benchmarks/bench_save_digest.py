"""Where a 200 MB save's time goes, by file digest: the raw library call, the same call
writing through ``persistkit.payload_writer`` (BLAKE3 and sha256), and ``persistkit.save``,
interleaved in one process (medians and minimums; the minimum is a round in which the second
core was free to hash beside the write).

    env -u PYTHONDONTWRITEBYTECODE .venv/bin/python benchmarks/bench_save_digest.py [ROUNDS]
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import suite_models  # noqa: E402


def cases() -> dict[str, Callable[[Path], Any]]:
    """Name -> action writing to the path it is given (a file or an artifact folder)."""
    import joblib
    import torch
    from safetensors.torch import save_file

    import persistkit
    from persistkit.writer import PayloadWriter

    model = suite_models.torch_mlp(4096, 3)()
    stable = [t.untyped_storage() for t in model.state_dict().values()]
    knn = suite_models.knn(200)()

    def through_writer(dump: Callable[[Any], Any], algorithm: str, **kw: Any) -> Any:
        def action(path: Path) -> None:
            with PayloadWriter(path, algorithm=algorithm, **kw) as fh:
                dump(fh)

        return action

    return {
        "save_file(state_dict)": lambda p: save_file(model.state_dict(), str(p)),
        "persistkit.save safetensors": lambda p: persistkit.save(model, p, backend="safetensors"),
        "torch.save(path)": lambda p: torch.save(model, p),
        "torch.save(writer, blake3)": through_writer(
            lambda fh: torch.save(model, fh), "blake3", stable=stable
        ),
        "torch.save(writer, sha256)": through_writer(
            lambda fh: torch.save(model, fh), "sha256", stable=stable
        ),
        "persistkit.save torch": lambda p: persistkit.save(model, p, backend="torch"),
        "joblib.dump(path)": lambda p: joblib.dump(knn, p),
        "joblib.dump(writer, blake3)": through_writer(lambda fh: joblib.dump(knn, fh), "blake3"),
        "joblib.dump(writer, sha256)": through_writer(lambda fh: joblib.dump(knn, fh), "sha256"),
        "persistkit.save joblib": lambda p: persistkit.save(knn, p, backend="joblib"),
    }


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    scratch = Path(tempfile.mkdtemp(prefix="persistkit-digest-"))
    os.environ["PERSISTKIT_HOME"] = str(scratch / "home")
    try:
        actions = cases()
        samples: dict[str, list[float]] = {name: [] for name in actions}
        for r in range(rounds):
            for i, (name, action) in enumerate(actions.items()):
                path = scratch / f"{r}-{i}"
                started = time.perf_counter()
                action(path)
                samples[name].append(time.perf_counter() - started)
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"{rounds} interleaved rounds, ms (median / min):")
        for name, values in samples.items():
            print(f"  {name:30s} {statistics.median(values) * 1e3:6.1f} / {min(values) * 1e3:6.1f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
