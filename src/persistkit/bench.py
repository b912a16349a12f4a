"""``persistkit.bench``: which serializer suits *this* model, measured rather than guessed.

For every installed backend that can save the model it measures save and load time, size on
disk, the peak resident memory of a load (in a fresh process), single-input predict latency
after the load, and whether predictions after the round trip are bitwise identical. Backends
are interleaved within each repeat (and their order rotated) so machine drift hits all alike;
times are medians with min and max.

The benchmark saves into a scratch folder (never into a store) and loads its own fresh,
sealed artifacts, so pickle-family loads are trusted: it never loads a stranger's payload
beyond the model it was given.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from persistkit.errors import InputError, PersistkitError

DEFAULT_REPEAT = 3
_PREDICT_CALLS = 5
_MEMORY_PROBE_TIMEOUT_S = 900


@dataclass(frozen=True)
class Spread:
    """The median of repeated measurements with their min and max."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))


@dataclass
class BackendResult:
    """What one backend did with the model. ``error`` is set when it could not save or
    load it; then the measurements are ``None``."""

    backend: str
    save: Spread | None = None
    load: Spread | None = None
    size_bytes: int | None = None
    peak_load_mb: float | None = None
    predict: Spread | None = None
    identical: bool | None = None
    #: for a converting backend with a stated tolerance (onnx): the largest difference from
    #: the model's own predictions, when they are not identical
    max_abs_diff: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape: seconds for save/load, milliseconds for predict, MB for memory;
        each timing also has ``_min`` and ``_max``."""
        out: dict[str, Any] = {"backend": self.backend}
        for key, value, scale in (
            ("save_s", self.save, 1.0),
            ("load_s", self.load, 1.0),
            ("predict_ms", self.predict, 1000.0),
        ):
            for suffix, number in zip(("", "_min", "_max"), _spread_values(value)):
                out[key + suffix] = None if number is None else round(number * scale, 6)
        out["size_bytes"] = self.size_bytes
        out["peak_load_mb"] = None if self.peak_load_mb is None else round(self.peak_load_mb, 1)
        out["identical"] = self.identical
        out["max_abs_diff"] = self.max_abs_diff
        out["error"] = self.error
        return out


def _identical_text(result: BackendResult) -> str:
    if result.identical is False and result.max_abs_diff is not None:
        return f"within tolerance (max diff {result.max_abs_diff:.2g})"
    return {True: "yes", False: "NO", None: "not checked"}[result.identical]


def _spread_values(value: Spread | None) -> tuple[float | None, float | None, float | None]:
    if value is None:
        return None, None, None
    return value.median, value.low, value.high


@dataclass
class BenchReport:
    """Results for every backend tried, in the order they were first measured."""

    model: str
    results: list[BackendResult]
    repeat: int
    example: str = "none"

    def to_dict(self) -> dict[str, Any]:
        """Exactly ``{"model": ..., "results": [{"backend", "save_s", "load_s", "size_bytes",
        "peak_load_mb", "predict_ms", "identical", ...}]}``; each result also says how many
        rounds its medians cover (``repeat``) and where its example came from."""
        rows = [
            {**r.to_dict(), "repeat": self.repeat, "example": self.example} for r in self.results
        ]
        return {"model": self.model, "results": rows}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @property
    def measured(self) -> list[BackendResult]:
        return [r for r in self.results if r.error is None]

    def table(self) -> str:
        """A text table for people; ``*`` marks the fastest save, fastest load, smallest
        file, lowest load memory and fastest predict."""
        best = {
            "save": _best(self.measured, lambda r: r.save.median if r.save else None),
            "load": _best(self.measured, lambda r: r.load.median if r.load else None),
            "size": _best(self.measured, lambda r: r.size_bytes),
            "peak": _best(self.measured, lambda r: r.peak_load_mb),
            "predict": _best(self.measured, lambda r: r.predict.median if r.predict else None),
        }
        rows = []
        for r in self.results:
            if r.error is not None:
                rows.append([r.backend, "-", "-", "-", "-", "-", f"error: {r.error}"])
                continue
            rows.append(
                [
                    r.backend,
                    _mark(_spread_text(r.save, 1000, "ms"), best["save"] is r),
                    _mark(_spread_text(r.load, 1000, "ms"), best["load"] is r),
                    _mark(_size_text(r.size_bytes), best["size"] is r),
                    _mark(_mb_text(r.peak_load_mb), best["peak"] is r),
                    _mark(_spread_text(r.predict, 1000, "ms"), best["predict"] is r),
                    _identical_text(r),
                ]
            )
        headers = ["backend", "save", "load", "size", "peak load", "predict (1 input)", "identical"]
        from persistkit.cli.options import table

        lines = [
            f"{self.model}: median [min-max] of {self.repeat} run(s); * = best; "
            f"example: {self.example}",
            table(rows, headers),
        ]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Write a PNG bar chart (save, load, size, and peak load memory when it was measured,
        per backend)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        measured = self.measured
        if not measured:
            raise PersistkitError(
                "no backend could save this model, so there is nothing to plot",
                hint="see the errors in the table (`persistkit bench` without --plot)",
            )
        names = [r.backend for r in measured]
        panels = self.plot_panels()
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
        for ax, (title, values, lo, hi) in zip(axes, panels):
            ax.bar(names, values, yerr=[lo, hi], capsize=3, color="#4c72b0")
            ax.set_title(title)
            ax.tick_params(axis="x", rotation=45)
        fig.suptitle(f"persistkit bench: {self.model} (median of {self.repeat}, min-max bars)")
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out

    def plot_panels(self) -> list[tuple[str, list[float], list[float], list[float]]]:
        """The chart's panels: (title, value per measured backend, error below, error above).
        The memory panel is left out when no load memory was measured (``--no-memory``)."""
        measured = self.measured
        panels: list[tuple[str, list[float], list[float], list[float]]] = []
        for title, getter in (
            ("save (ms)", lambda r: r.save),
            ("load (ms)", lambda r: r.load),
        ):
            spreads = [getter(r) for r in measured]
            med = [s.median * 1000 if s else 0.0 for s in spreads]
            lo = [(s.median - s.low) * 1000 if s else 0.0 for s in spreads]
            hi = [(s.high - s.median) * 1000 if s else 0.0 for s in spreads]
            panels.append((title, med, lo, hi))
        sizes = [(r.size_bytes or 0) / 1e6 for r in measured]
        panels.append(("size (MB)", sizes, [0.0] * len(sizes), [0.0] * len(sizes)))
        if any(r.peak_load_mb is not None for r in measured):
            peaks = [r.peak_load_mb or 0.0 for r in measured]
            zeros = [0.0] * len(peaks)
            panels.append(("peak load memory (MB)", peaks, zeros, zeros))
        return panels


def bench(
    model_or_ref: Any,
    *,
    backends: Iterable[str] | None = None,
    repeat: int = DEFAULT_REPEAT,
    example: Any = None,
    store: Any = None,
    trusted: bool | Iterable[str] = False,
    measure_memory: bool = True,
    workdir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Benchmark every installed backend that can save ``model_or_ref``.

    ``model_or_ref`` is a model object, or a ref/path/URL that is loaded first (with
    ``store=`` and ``trusted=`` as for :func:`persistkit.load`); then its stored example is
    used. Predictions are compared on ``example`` if given, else the stored example, else one
    generated from the model (its number of input features); with none, ``identical`` is
    ``None``. ``backends`` limits the backends tried. ``repeat`` rounds of save+load run with
    the backends interleaved. ``measure_memory=False`` skips the fresh-process memory probe.
    ``progress`` receives a short status line before each step.
    """
    from persistkit.api import backends as list_backends
    from persistkit.api import freeze, predict
    from persistkit.arrays import to_numpy

    if repeat < 1:
        raise InputError(f"repeat must be at least 1, not {repeat}", hint="use --repeat 3")
    model, label, stored_example = _resolve(model_or_ref, store, trusted)
    model = freeze(model)
    inputs, example_origin = _pick_example(model, example, stored_example)
    reference = None if inputs is None else to_numpy(predict(model, inputs))

    installed = {b.name: b for b in list_backends()}
    names = _candidate_backends(model, installed, backends)
    results = {name: BackendResult(name) for name in names}
    samples: dict[str, dict[str, list[float]]] = {
        n: {"save": [], "load": [], "pred": []} for n in names
    }
    last_artifact: dict[str, Path] = {}
    scratch = Path(tempfile.mkdtemp(prefix="persistkit-bench-", dir=workdir))
    notify = progress or (lambda _line: None)
    try:
        for round_no in range(repeat):
            live = [n for n in names if results[n].error is None]
            if not live:
                break
            shift = round_no % len(live)
            for name in live[shift:] + live[:shift]:
                notify(f"round {round_no + 1}/{repeat}: {name}")
                target = scratch / f"{name}-{round_no}"
                try:
                    _one_round(model, name, target, inputs, reference, results[name], samples[name])
                except Exception as exc:  # one broken plugin must not end the whole benchmark
                    results[name].error = (
                        exc.message
                        if isinstance(exc, PersistkitError)
                        else f"{type(exc).__name__}: {exc}"
                    )
                    shutil.rmtree(target, ignore_errors=True)
                    continue
                previous = last_artifact.get(name)
                if previous is not None:
                    shutil.rmtree(previous, ignore_errors=True)
                last_artifact[name] = target
        for name in names:
            result, sample = results[name], samples[name]
            if result.error is not None:
                continue
            result.save = Spread.of(sample["save"])
            result.load = Spread.of(sample["load"])
            result.predict = Spread.of(sample["pred"]) if sample["pred"] else None
            if measure_memory and name in last_artifact:
                notify(f"peak memory of a load in a fresh process: {name}")
                result.peak_load_mb = peak_load_mb(last_artifact[name])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return BenchReport(
        model=label,
        results=[results[n] for n in names],
        repeat=repeat,
        example=example_origin,
    )


def _one_round(
    model: Any,
    name: str,
    target: Path,
    inputs: Any,
    reference: Any,
    result: BackendResult,
    sample: dict[str, list[float]],
) -> None:
    import numpy as np

    from persistkit.api import load, predict, save
    from persistkit.arrays import arrays_identical, to_numpy
    from persistkit.manager import get_plugins

    converts = get_plugins().backend(name).converts
    if converts and inputs is None:
        raise InputError(
            f"backend {name!r} converts the model by running it and there is no example",
            hint="pass an example batch (the model's stored example is used when it has one)",
        )
    gc.collect()
    started = time.perf_counter()
    # a converting backend traces the example and checks its reload on it: part of its cost
    artifact = save(model, target, backend=name, freeze=False, example=inputs if converts else None)
    sample["save"].append(time.perf_counter() - started)
    result.size_bytes = sum(
        e.size for e in artifact.manifest.files if not e.path.startswith("example/")
    )
    gc.collect()
    started = time.perf_counter()
    loaded = load(target)  # our own fresh, sealed save: trusted by its seal
    sample["load"].append(time.perf_counter() - started)
    if inputs is None:
        return
    single = inputs[:1]
    predict(loaded, single)  # the first call may initialise lazily; time the steady state
    for _ in range(_PREDICT_CALLS):
        started = time.perf_counter()
        predict(loaded, single)
        sample["pred"].append(time.perf_counter() - started)
    actual = to_numpy(predict(loaded, inputs))
    same = arrays_identical(reference, actual)
    result.identical = same if result.identical is None else (result.identical and same)
    conversion = artifact.manifest.model.get("conversion") or {}
    if not same and "tolerance" in conversion:  # passed the backend's stated tolerance
        diff = float(np.max(np.abs(np.asarray(reference, float) - np.asarray(actual, float))))
        result.max_abs_diff = max(diff, result.max_abs_diff or 0.0)


def _resolve(model_or_ref: Any, store: Any, trusted: bool | Iterable[str]) -> tuple[Any, str, Any]:
    """The model object, a label for it, and its stored example inputs (or ``None``)."""
    from persistkit.records import Artifact

    if not isinstance(model_or_ref, (str, os.PathLike, Artifact)):
        cls = type(model_or_ref)
        return model_or_ref, f"{cls.__module__}.{cls.__qualname__}", None
    import numpy as np

    from persistkit.api import load_located, locate

    found = locate(model_or_ref, store)
    model = load_located(found, trusted=trusted)
    stored = None
    if found.manifest.example and not found.bare:
        stored = np.load(found.directory / found.manifest.example["inputs"], allow_pickle=False)
    elif found.manifest.signature:
        stored = example_from_signature(found.manifest.signature)
    return model, found.uri, stored


def _pick_example(model: Any, given: Any, stored: Any) -> tuple[Any, str]:
    from persistkit.arrays import to_numpy

    if given is not None:
        return to_numpy(given), "given"
    if stored is not None:
        return to_numpy(stored), "stored with the model"
    generated = generated_example(model)
    if generated is not None:
        return generated, "generated from the model's input width"
    return None, "none (identical not checked)"


def example_from_signature(signature: dict[str, Any]) -> Any:
    """A small deterministic input batch matching a stored signature (``None`` if unknown)."""
    import numpy as np

    from persistkit.signature import numpy_dtype

    specs = signature.get("inputs") or []
    if len(specs) != 1:
        return None
    spec = specs[0]
    try:
        dtype = numpy_dtype(spec["datatype"])
    except (KeyError, ValueError):
        return None
    if dtype.kind == "O":
        return None
    shape = [4 if d == -1 else int(d) for d in spec.get("shape", [])]
    rng = np.random.default_rng(0)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.integers(0, 10, shape).astype(dtype)


def generated_example(model: Any) -> Any:
    """Four deterministic random rows for a model whose input width is known (scikit-learn
    ``n_features_in_``, or the ``in_features`` of a torch model's first linear layer)."""
    import numpy as np

    rng = np.random.default_rng(0)
    width = getattr(model, "n_features_in_", None)
    if isinstance(width, (int, np.integer)) and width > 0:
        return rng.standard_normal((4, int(width)))
    modules = getattr(model, "modules", None)
    if callable(modules):
        try:
            for module in modules():
                width = getattr(module, "in_features", None)
                if isinstance(width, int) and width > 0:
                    return rng.standard_normal((4, width)).astype(np.float32)
        except Exception:  # an exotic modules() is no reason to fail the benchmark
            return None
    return None


def _candidate_backends(
    model: Any, installed: dict[str, Any], wanted: Iterable[str] | None
) -> list[str]:
    from persistkit.manager import get_plugins

    if wanted is not None:
        names = [w.strip() for w in wanted if w.strip()]
        unknown = [n for n in names if n not in installed]
        if unknown:
            raise InputError(
                f"unknown backend(s): {', '.join(unknown)}",
                hint=f"installed backends: {', '.join(sorted(installed))}",
            )
        return names
    hook = get_plugins().hook
    names = []
    for name, info in sorted(installed.items()):
        if not info.available:
            continue
        try:
            if hook.persistkit_can_save(model=model, backend=name) is False:
                continue
        except Exception:  # a plugin's check failing just means we try and record the error
            pass
        names.append(name)
    if not names:
        raise InputError(
            f"no installed backend can save a {type(model).__qualname__}",
            hint="`persistkit backends` lists what each backend needs",
        )
    return names


# --- memory of a load, in a fresh process ---------------------------------------------------

_PROBE = r"""
import json, sys
def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None
import persistkit
from persistkit.api import inspect
manifest = inspect(sys.argv[1])
import importlib
# import what the load will import, so the measured peak is the load's own memory
modules = [(manifest.model_class or "").rpartition(".")[0]]
modules += [n.replace("scikit-learn", "sklearn").replace("-", "_")
            for n in manifest.environment.get("libraries", {})]
for name in modules:
    try:
        importlib.import_module(name)
    except Exception:
        pass
persistkit.manager.get_plugins()
before = status("VmRSS")
try:  # reset the high-water mark so it measures the load alone (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    reset = True
except OSError:
    reset = False
model = persistkit.load(sys.argv[1])
print(json.dumps({"before": before, "peak": status("VmHWM"), "after": status("VmRSS"),
                  "reset": reset}))
"""


def peak_load_mb(artifact: Path) -> float | None:
    """Peak resident memory (MB) a load of ``artifact`` adds, measured in a fresh process after
    persistkit and the model's libraries are imported; ``None`` where it cannot be measured."""
    if not Path("/proc/self/status").exists():
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, str(artifact)],
            capture_output=True,
            text=True,
            env=env,
            timeout=_MEMORY_PROBE_TIMEOUT_S,
            check=False,
        )
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError, OSError):
        return None
    if not data.get("reset") or data.get("peak") is None or data.get("before") is None:
        return None
    return float(max(data["peak"] - data["before"], 0)) / 1e6


def machine_description() -> dict[str, Any]:
    """CPU, core count, memory and versions: what a benchmark result depends on."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gb = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    from persistkit import __version__

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "persistkit": __version__,
    }


# --- text helpers -----------------------------------------------------------------------------


def _best(results: list[BackendResult], key: Callable[[BackendResult], Any]) -> Any:
    scored = [(key(r), r) for r in results if key(r) is not None]
    if len(scored) < 2:
        return None
    return min(scored, key=lambda pair: pair[0])[1]


def _mark(text: str, best: bool) -> str:
    return f"{text} *" if best else text


def _spread_text(value: Spread | None, scale: float, unit: str) -> str:
    if value is None:
        return "-"
    return (
        f"{_num(value.median * scale)} {unit} [{_num(value.low * scale)}-"
        f"{_num(value.high * scale)}]"
    )


def _num(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _size_text(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _mb_text(mb: float | None) -> str:
    if mb is None:
        return "-"
    return f"{mb:.1f} MB" if mb < 10 else f"{mb:.0f} MB"


def status_line(stream: TextIO | None = None) -> Callable[[str], None] | None:
    """A progress callback that redraws one line on a terminal, or ``None`` off a terminal."""
    from persistkit import progress

    out = sys.stderr if stream is None else stream
    if not progress.enabled(out):
        return None
    started = time.monotonic()

    def show(line: str) -> None:
        out.write(f"\r\033[Kbench [{time.monotonic() - started:5.1f}s] {line}")
        out.flush()

    return show


class _CallableModule(types.ModuleType):
    """``persistkit.bench`` is both this module and the function: importing the submodule
    makes the package attribute the module, so the module itself must be callable."""

    def __call__(self, *args: Any, **kwargs: Any) -> BenchReport:
        return bench(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["BackendResult", "BenchReport", "Spread", "bench", "machine_description"]
