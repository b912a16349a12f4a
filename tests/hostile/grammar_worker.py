"""Run grammar-generated pickle programs (:mod:`hostile.grammar`) through persistkit.

Two halves:

- **the worker** (``python grammar_worker.py --seeds 0:100 --out DIR``) runs in its own
  process under an address-space limit (RLIMIT_AS, set after the heavy imports) with a
  ``sys.addaudithook`` that records - and blocks - process spawning, ``ctypes`` loading and
  network connections. For each seed it writes the program to a file (a bare ``.pkl``, a
  zlib ``.joblib`` or a torch zip ``.pt``, as the program asks), loads it with
  ``persistkit.load(path)`` under the default policy, calls ``predict``-like methods on what
  loaded (predict-time gadgets count), audits the file with
  :func:`persistkit.safety.audit.audit_file` (what ``persistkit scan`` prints), checks the
  marker folder and appends one JSON line per seed to ``results.jsonl`` (a ``begin`` line
  first, so a crash or a hang can be pinned on the seed that was running);
- **the runner** (:func:`run_seeds`, used by ``tests/test_safety_grammar_fuzz.py`` and
  ``tools/grammar_fuzz.py``) starts workers on batches of seeds, kills one that stops making
  progress, reruns a crashing or hanging seed alone to confirm it, and goes on with the rest
  of the batch; :func:`violations` is the oracle and :func:`summary` the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MEMORY_HEADROOM = 2 * 1024**3
#: audit events that mean the payload reached for a process, native code or the network
DANGEROUS_EVENTS = frozenset(
    {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.startfile",
        "subprocess.Popen",
        "pty.spawn",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.call_function",
        "socket.connect",
        "builtins.input",
        "webbrowser.open",
    }
)
PREDICT_METHODS = ("predict", "predict_proba", "decision_function", "transform", "score_samples")


# ====================================================================== worker side
def program_file(program: Any, folder: Path) -> Path:
    """Write ``program`` the way its ``container`` says and return the file's path."""
    if program.container == "joblib":
        path = folder / f"p{program.seed}.joblib"
        path.write_bytes(zlib.compress(program.data))
    elif program.container == "torch":
        path = folder / f"p{program.seed}.pt"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("archive/data.pkl", program.data)
            archive.writestr("archive/byteorder", b"little")
            archive.writestr("archive/version", b"3\n")
            for key, size in program.storages.items():
                archive.writestr(f"archive/data/{key}", bytes(max(size, 0)))
    else:
        path = folder / f"p{program.seed}.pkl"
        path.write_bytes(program.data)
    return path


def outcome_of(exc: BaseException | None) -> str:
    """``ok``, the name of a PersistkitError subclass, or ``NON:<type>`` for anything else."""
    from persistkit.errors import PersistkitError

    if exc is None:
        return "ok"
    if isinstance(exc, PersistkitError):
        return type(exc).__name__
    return f"NON:{type(exc).__name__}"


def family_of(exc: BaseException | None) -> str:
    """What a load outcome means for the scan agreement check: ``ok``, ``untrusted``
    (UntrustedArtifactError and its subclasses), ``damaged`` (any other PersistkitError)
    or ``NON`` (not a PersistkitError)."""
    from persistkit.errors import (
        NotFittedError,
        PersistkitError,
        PluginError,
        UntrustedArtifactError,
    )

    if exc is None:
        return "ok"
    # raised after the payload was built, by the step that prepares a model for inference
    # (an unfitted estimator, a payload that is None, an object too broken to prepare): scan
    # judges the payload, so these count as built
    if isinstance(exc, (NotFittedError, PluginError)) or "loaded, but" in str(exc):
        return "ok"
    if isinstance(exc, UntrustedArtifactError):
        return "untrusted"
    if isinstance(exc, PersistkitError):
        return "damaged"
    return "NON"


def _import_everything() -> None:
    """Import every module on the allow-list (and the readers) before the memory cap, so
    lazy imports neither count against it nor run during a load."""
    import importlib
    import warnings

    warnings.simplefilter("ignore")
    import numpy  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import torch  # noqa: F401

    import persistkit  # noqa: F401
    from persistkit.safety import audit, joblib_reader, torch_reader  # noqa: F401
    from persistkit.safety.allowlist import ALLOWED

    for module in sorted({m for m, _ in ALLOWED}):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def _cap_memory(headroom: int) -> None:
    import resource

    with open("/proc/self/status") as fh:
        vm_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmSize:"))
    limit = vm_kb * 1024 + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class _Watch:
    """The audit hook's memory: dangerous events (blocked) and code compiled with the marker."""

    def __init__(self, marker_text: str) -> None:
        self.marker_text = marker_text
        self.events: list[str] = []
        self.armed = False

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.armed:
            return
        if event in DANGEROUS_EVENTS:
            self.events.append(f"{event}{_short(args)}")
            raise RuntimeError(f"grammar fuzz worker blocked {event}")
        if event in ("compile", "exec") and args:
            source = args[0]
            text = source if isinstance(source, str) else repr(source)
            if self.marker_text in text:
                self.events.append(f"{event} of marker code")
                raise RuntimeError(f"grammar fuzz worker blocked {event}")


def _short(args: Any) -> str:
    try:
        text = repr(args)
    except Exception:
        text = "(...)"
    return text[:120]


def _predict_inputs(obj: Any) -> list[Any]:
    import numpy as np

    n = 3
    try:
        width = obj.__dict__.get("n_features_in_") if hasattr(obj, "__dict__") else None
        if isinstance(width, int) and 0 < width < 64:
            n = width
    except Exception:
        pass
    return [np.zeros((2, n)), np.ones((1, 1))]


def try_predict(obj: Any, budget: int = 8) -> list[str]:
    """Call predict-like methods (and ``__call__``) of ``obj`` and a few objects it holds.
    Returns what each attempt gave (``name:ok`` or ``name:ExcType``); exceptions are fine."""
    import numpy as np

    tried: list[str] = []
    candidates: list[Any] = [obj]
    try:
        if isinstance(obj, (list, tuple)):
            candidates += list(obj[:4])
        elif isinstance(obj, dict):
            candidates += list(obj.values())[:4]
    except Exception:
        pass
    for candidate in candidates:
        if len(tried) >= budget:
            break
        if isinstance(candidate, type):
            continue  # calling a class the payload merely named is our code, not theirs
        for X in _predict_inputs(candidate):
            for method in PREDICT_METHODS:
                try:
                    bound = getattr(candidate, method, None)
                except Exception as exc:
                    tried.append(f"{method}:getattr:{type(exc).__name__}")
                    continue
                if bound is None or not callable(bound):
                    continue
                tried.append(f"{method}:{_attempt(bound, X)}")
            if callable(candidate):
                tried.append(f"call:{_attempt(candidate, X)}")
                try:
                    import torch

                    if isinstance(candidate, torch.nn.Module):
                        tensor = torch.zeros(X.shape, dtype=torch.float32)
                        tried.append(f"forward:{_attempt(candidate, tensor)}")
                except ImportError:
                    pass
                # scorers take (estimator, X, y)
                tried.append(f"call3:{_attempt(candidate, candidate, X, np.zeros(len(X)))}")
    return tried


def _attempt(func: Any, *args: Any) -> str:
    try:
        func(*args)
        return "ok"
    except BaseException as exc:  # a payload may raise anything, SystemExit included
        if isinstance(exc, KeyboardInterrupt):
            raise
        return type(exc).__name__


def _new_markers(marker_dir: Path, seen: set[str]) -> list[str]:
    return sorted(p.name for p in marker_dir.iterdir() if p.name not in seen)


def scan_verdict(path: Path) -> str:
    """``clean``, ``untrusted`` or ``error`` as ``persistkit scan`` would say, or
    ``NON:<type>`` when the audit itself raised something that is not a PersistkitError."""
    from persistkit.safety.audit import audit_file

    try:
        result = audit_file(path)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        outcome = outcome_of(exc)
        return outcome if outcome.startswith("NON:") else "error"
    if result.error is not None:
        return "error"
    return "untrusted" if result.untrusted or result.refused else "clean"


def run_one(seed: int, folder: Path, marker_dir: Path, watch: _Watch, log: Any) -> None:
    """Generate, write, load, predict and scan program ``seed``; log one JSON line."""
    import persistkit
    from hostile.grammar import generate

    program = generate(seed, marker=str(marker_dir / f"m{seed}"))
    seen = {p.name for p in marker_dir.iterdir()}
    path = program_file(program, folder)
    log({"seed": seed, "phase": "begin"})
    record: dict[str, Any] = {
        "seed": seed,
        "phase": "done",
        "container": program.container,
        "protocol": program.protocol,
        "size": len(program.data),
        "features": dict(program.features),
        "must_refuse": sorted(program.must_refuse),
    }
    watch.events = []
    watch.armed = True
    loaded: Any = None
    error: BaseException | None = None
    try:
        loaded = persistkit.load(path)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        error = exc
    finally:
        watch.armed = False
    record["load"] = outcome_of(error)
    record["family"] = family_of(error)
    record["load_message"] = str(error).splitlines()[0][:300] if error else None
    record["load_events"] = list(watch.events)
    record["marker_after_load"] = _new_markers(marker_dir, seen)
    if error is None:
        record["type"] = f"{type(loaded).__module__}.{type(loaded).__qualname__}"
        log({"seed": seed, "phase": "predict"})
        watch.events = []
        watch.armed = True
        try:
            record["predict"] = try_predict(loaded)
        finally:
            watch.armed = False
        record["predict_events"] = list(watch.events)
    del loaded
    record["scan"] = scan_verdict(path)
    record["marker"] = _new_markers(marker_dir, seen)
    seen.update(p.name for p in marker_dir.iterdir())
    log(record)
    path.unlink()


def worker_main(argv: Sequence[str]) -> None:
    """Entry point of the worker process (see the module docstring)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", required=True, help="comma-separated seeds")
    parser.add_argument("--out", required=True, type=Path, help="results.jsonl goes here")
    parser.add_argument("--marker-dir", required=True, type=Path)
    parser.add_argument("--memory", type=int, default=MEMORY_HEADROOM)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    os.environ.setdefault("PERSISTKIT_HOME", tempfile.mkdtemp(prefix="pk-grammar-home-"))
    sys.path.insert(0, str(HERE.parent))
    _import_everything()
    import hostile.grammar  # noqa: F401 - before the cap as well

    folder = Path(tempfile.mkdtemp(prefix="pk-grammar-"))
    args.marker_dir.mkdir(parents=True, exist_ok=True)
    watch = _Watch(str(args.marker_dir))
    sys.addaudithook(watch.hook)
    fd = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(record: dict[str, Any]) -> None:
        os.write(fd, (json.dumps(record, default=str) + "\n").encode())

    if args.memory > 0:
        _cap_memory(args.memory)
    for seed in seeds:
        run_one(seed, folder, args.marker_dir, watch, log)
    log({"phase": "finished"})
    os.close(fd)


# ====================================================================== runner side
def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut short by a crash
            records.append(json.loads(line))
    return records


def _spawn(
    seeds: Sequence[int],
    out: Path,
    marker_dir: Path,
    *,
    memory: int,
    stall: float,
    pythonpath: str | None = None,
) -> tuple[list[dict[str, Any]], str | None, str]:
    """Run one worker on ``seeds``. Returns the finished records, and - if the worker died
    or stopped making progress - ``"CRASH:<signal or code>"``/``"HANG:<phase>"`` for the
    seed it was running, plus the tail of its output."""
    results = out.with_suffix(".jsonl")
    results.unlink(missing_ok=True)
    log_path = out.with_suffix(".log")
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--seeds",
        ",".join(map(str, seeds)),
        "--out",
        str(results),
        "--marker-dir",
        str(marker_dir),
        "--memory",
        str(memory),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_environment(pythonpath),
        )
        last_size, last_change = -1, time.monotonic()
        startup = 120.0  # imports on a busy machine
        problem: str | None = None
        code: int | None = None
        while True:
            try:
                code = process.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            size = results.stat().st_size if results.exists() else 0
            now = time.monotonic()
            if size != last_size:
                last_size, last_change = size, now
            elif now - last_change > (startup if size == 0 else stall):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                problem = "HANG"
                code = None
                break
    records = _read_records(results)
    tail = log_path.read_bytes()[-3000:].decode("utf-8", "replace")
    finished = any(r.get("phase") == "finished" for r in records)
    if problem is None and not finished:
        if code is not None and code < 0:
            problem = f"CRASH:{signal.Signals(-code).name}"
        else:
            problem = f"CRASH:exit{code}"
    if problem is not None:
        phases = [r for r in records if r.get("phase") in ("begin", "predict", "done")]
        if phases and phases[-1]["phase"] != "done":
            problem = f"{problem}:{phases[-1]['phase'].replace('begin', 'load')}"
    return [r for r in records if r.get("phase") == "done"], problem, tail


def _environment(pythonpath: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    return env


def run_batch(
    seeds: Sequence[int],
    folder: Path,
    *,
    memory: int = MEMORY_HEADROOM,
    stall: float = 60.0,
    pythonpath: str | None = None,
) -> list[dict[str, Any]]:
    """Run ``seeds`` in worker processes: a seed that crashes or hangs its worker is rerun
    alone to confirm, and the seeds after it run in a fresh worker."""
    folder.mkdir(parents=True, exist_ok=True)
    marker_dir = folder / f"markers-{seeds[0]}"
    done: list[dict[str, Any]] = []
    todo = list(seeds)
    while todo:
        records, problem, _tail = _spawn(
            todo,
            folder / f"batch-{todo[0]}",
            marker_dir,
            memory=memory,
            stall=stall,
            pythonpath=pythonpath,
        )
        done += records
        finished = {r["seed"] for r in records}
        todo = [s for s in todo if s not in finished]
        if problem is None or not todo:
            break
        culprit = todo.pop(0)
        solo, solo_problem, solo_tail = _spawn(
            [culprit],
            folder / f"solo-{culprit}",
            marker_dir,
            memory=memory,
            stall=stall,
            pythonpath=pythonpath,
        )
        if solo:
            record = solo[0]
            record["batch_problem"] = problem  # died in the batch, not alone
            done.append(record)
        else:
            from hostile.grammar import generate

            program = generate(culprit)
            done.append(
                {
                    "seed": culprit,
                    "container": program.container,
                    "protocol": program.protocol,
                    "phase": "done",
                    "load": solo_problem or problem,
                    "scan": scan_of_seed(culprit, folder, pythonpath),
                    "marker": any(marker_dir.iterdir()) if marker_dir.exists() else False,
                    "tail": solo_tail[-1500:],
                    "features": dict(program.features),
                    "must_refuse": sorted(program.must_refuse),
                }
            )
    return done


def scan_of_seed(seed: int, folder: Path, pythonpath: str | None = None) -> str:
    """The scan verdict for ``seed`` computed in a fresh process (its load crashed)."""
    marker = str(folder / "scan-markers" / f"m{seed}")
    code = (
        f"import sys; sys.path.insert(0, {str(HERE.parent)!r}); "
        "from pathlib import Path; from hostile.grammar import generate; "
        "from hostile.grammar_worker import program_file, scan_verdict; "
        f"print(scan_verdict(program_file(generate({seed}, marker={marker!r}), "
        f"Path({str(folder)!r}))))"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env=_environment(pythonpath),
        )
    except subprocess.TimeoutExpired:
        return "HANG"
    if result.returncode != 0:
        return f"CRASH:{result.returncode}"
    return result.stdout.strip().splitlines()[-1]


def run_seeds(
    seeds: Iterable[int],
    folder: Path,
    *,
    jobs: int = 1,
    batch: int = 100,
    memory: int = MEMORY_HEADROOM,
    stall: float = 60.0,
    pythonpath: str | None = None,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Run all ``seeds`` in batches of ``batch``, ``jobs`` workers at a time."""
    seeds = list(seeds)
    batches = [seeds[i : i + batch] for i in range(0, len(seeds), batch)]
    lock = threading.Lock()
    results: list[dict[str, Any]] = []

    def one(chunk: list[int]) -> None:
        records = run_batch(chunk, folder, memory=memory, stall=stall, pythonpath=pythonpath)
        with lock:
            results.extend(records)
            if progress is not None:
                progress(len(results), len(seeds))

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for future in [pool.submit(one, chunk) for chunk in batches]:
            future.result()
    return sorted(results, key=lambda r: r["seed"])


# ====================================================================== the oracle
#: (load family, scan verdict) pairs that agree: load ok <=> scan clean, load refused as
#: untrusted <=> scan untrusted, load damaged (FormatError & co.) => scan error or untrusted
AGREEING = {
    ("ok", "clean"),
    ("untrusted", "untrusted"),
    ("damaged", "error"),
    ("damaged", "untrusted"),
}


def load_class(record: dict[str, Any]) -> str:
    """The load's family (see :func:`family_of`); crashes and hangs keep their outcome."""
    return str(record.get("family") or record.get("load", "?"))


def violations(record: dict[str, Any]) -> list[str]:
    """Everything wrong with one record; empty when the oracle holds."""
    found: list[str] = []
    load = record.get("load", "?")
    scan = record.get("scan", "?")
    if record.get("marker") or record.get("marker_after_load"):
        found.append("marker file created")
    for event in record.get("load_events", []):
        found.append(f"code ran at load: {event}")
    for event in record.get("predict_events", []):
        found.append(f"code ran at predict: {event}")
    if load.startswith(("CRASH", "HANG")):
        found.append(f"worker {load}")
    elif load.startswith("NON:"):
        found.append(f"load raised {load[4:]}, not a PersistkitError")
    if scan.startswith(("NON:", "CRASH", "HANG")):
        found.append(f"scan gave {scan}")
    if load == "ok" and record.get("must_refuse"):
        found.append("loaded a program the invariants forbid: " + "; ".join(record["must_refuse"]))
    pair = (load_class(record), scan)
    if ":" not in load and not scan.startswith("NON:") and pair not in AGREEING:
        found.append(f"scan disagrees: load {load} ({pair[0]}), scan {scan}")
    return found


def kind_of(violation: str) -> str:
    """The category of a violation message (for tables)."""
    if violation.startswith("loaded a program the invariants forbid"):
        return "invariant: forbidden program loaded"
    if violation.startswith("scan disagrees"):
        return violation
    if violation.startswith("code ran"):
        return violation.split(":")[0] + ": " + violation.split(":")[1].strip().split("(")[0]
    return violation


def summary(records: list[dict[str, Any]], *, examples: int = 5) -> str:
    """A text report: outcomes, the scan agreement table, violations with seeds, coverage."""
    lines: list[str] = [f"programs: {len(records)}"]
    outcomes = Counter(r.get("load", "?") for r in records)
    lines.append("load outcomes: " + ", ".join(f"{k}={v}" for k, v in outcomes.most_common()))
    scans = Counter(r.get("scan", "?") for r in records)
    lines.append("scan verdicts: " + ", ".join(f"{k}={v}" for k, v in scans.most_common()))
    table = Counter((load_class(r), r.get("load", "?"), r.get("scan", "?")) for r in records)
    lines.append("load x scan (family, outcome, scan verdict, programs):")
    for (family, load, scan), n in sorted(table.items()):
        agree = (family, scan) in AGREEING
        lines.append(f"  {family:10} {load:26} {scan:10} {n:7}  {'' if agree else 'DISAGREE'}")
    kinds: dict[str, list[int]] = {}
    for record in records:
        for violation in violations(record):
            kinds.setdefault(kind_of(violation), []).append(record["seed"])
    bad = {r["seed"] for r in records if violations(r)}
    lines.append(f"oracle violations: {len(bad)} programs")
    for kind, seeds in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  {len(seeds):6}  {kind}  seeds {seeds[:examples]}")
    predicted = [r for r in records if r.get("predict")]
    lines.append(f"loaded objects predicted on: {len(predicted)}")
    coverage: Counter[str] = Counter()
    for record in records:
        coverage.update(record.get("features", {}).keys())
        if record.get("must_refuse"):
            coverage["(any must-refuse reason)"] += 1
    lines.append("coverage (programs that ...):")
    for name, n in sorted(coverage.items()):
        lines.append(f"  {n:7}  {name}")
    types = Counter(r.get("type") for r in records if r.get("load") == "ok")
    lines.append("types loaded: " + ", ".join(f"{k}={v}" for k, v in types.most_common(12)))
    return "\n".join(lines)


def save_failures(records: list[dict[str, Any]], folder: Path) -> list[int]:
    """Write each failing program (``<seed>.pickle``) and its record (``<seed>.json``) to
    ``folder``; returns the failing seeds."""
    from hostile.grammar import generate

    folder.mkdir(parents=True, exist_ok=True)
    failing = []
    for record in records:
        found = violations(record)
        if not found:
            continue
        seed = record["seed"]
        failing.append(seed)
        program = generate(seed, marker=str(folder / "markers" / f"m{seed}"))
        (folder / f"{seed}.pickle").write_bytes(program.data)
        (folder / f"{seed}.json").write_text(
            json.dumps({**record, "violations": found}, indent=1, default=str)
        )
    return failing


if __name__ == "__main__":
    worker_main(sys.argv[1:])
