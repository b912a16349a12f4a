"""Fuzz worker: mutate valid model files and load them, under a memory limit.

Run as a script (``python fuzz_worker.py SEEDS_DIR EXAMPLES``) by ``tests/test_fuzz_loaders.py``:
it caps its own address space (RLIMIT_AS) after the heavy imports, then lets hypothesis mutate
every seed file (byte flips, truncation, insertion) and loads each mutant through persistkit.
Only :class:`persistkit.errors.PersistkitError` subclasses may come out; anything else fails
the run (hypothesis prints the shrunk example). A crash shows as a negative exit code and a
hang as the parent's timeout.
"""

from __future__ import annotations

import io
import os
import resource
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np  # noqa: F401 - imported before the memory cap is set
import sklearn.ensemble  # noqa: F401
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persistkit
from persistkit.errors import PersistkitError
from persistkit.safety import TrustPolicy
from persistkit.safety.audit import audit_file

MEMORY_HEADROOM = 1536 * 1024**2


def cap_memory() -> None:
    """Allow the process only a fixed amount of address space beyond what it uses now."""
    with open("/proc/self/status") as fh:
        vm_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmSize:"))
    limit = vm_kb * 1024 + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def loaders_for(name: str) -> list[Callable[[Path], Any]]:
    policy = TrustPolicy()
    if name.endswith(".pkl"):
        return [lambda p: policy.unpickle(io.BytesIO(p.read_bytes())), persistkit.load]
    if name.endswith(".joblib"):
        return [policy.load_joblib, persistkit.load]
    if name.endswith(".pt"):
        return [policy.load_torch]
    return [persistkit.load]


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None, insert: bytes) -> bytes:
    buf = bytearray(data)
    for pos, value in flips:
        buf[pos % len(buf)] = value
    if insert:
        at = (flips[0][0] if flips else len(buf) // 2) % (len(buf) + 1)
        buf[at:at] = insert
    if cut is not None:
        del buf[cut % (len(buf) + 1) :]
    return bytes(buf)


def mutate_artifact(
    seed: Path, target: Path, change: Callable[[bytes], bytes], *, manifest: bool
) -> None:
    """Copy artifact ``seed`` to ``target`` and mutate its manifest, or its payload with the
    manifest's size and digest recomputed (so the mutant reaches the payload reader)."""
    import json
    import shutil

    from persistkit.digests import hexdigest_of

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(seed, target)
    manifest_path = target / "persistkit.json"
    if manifest:
        manifest_path.write_bytes(change(manifest_path.read_bytes()))
        return
    record = json.loads(manifest_path.read_text())
    entry = record["files"][0]
    payload = target / entry["path"]
    payload.write_bytes(change(payload.read_bytes()))
    entry["size"] = payload.stat().st_size
    algorithm = "blake3" if "blake3" in entry else "sha256"  # the one the seed's entry names
    entry[algorithm] = hexdigest_of(algorithm, payload.read_bytes())
    manifest_path.write_text(json.dumps(record))


def main(seeds_dir: Path, examples: int) -> None:
    seeds = sorted(seeds_dir.iterdir())
    workdir = Path(tempfile.mkdtemp())
    outcomes: dict[str, int] = {}
    cap_memory()

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        seed=st.sampled_from(seeds),
        flips=st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), max_size=6),
        cut=st.one_of(st.none(), st.integers(0, 2**31)),
        insert=st.binary(max_size=12),
    )
    def fuzz(seed: Path, flips: list[tuple[int, int]], cut: int | None, insert: bytes) -> None:
        target = workdir / seed.name
        kind = ""
        if seed.is_dir():
            in_manifest = len(insert) % 2 == 0
            mutate_artifact(
                seed, target, lambda data: mutate(data, flips, cut, insert), manifest=in_manifest
            )
            loaders: list[Callable[[Path], Any]] = [persistkit.load]
            kind = "" if in_manifest else "payload:"  # must reach the payload's reader
        else:
            target.write_bytes(mutate(seed.read_bytes(), flips, cut, insert))
            loaders = [*loaders_for(seed.name), audit_file]
        for load in loaders:
            try:
                load(target)
                outcome = "loaded"
            except PersistkitError as exc:
                outcome = type(exc).__name__
            outcomes[kind + outcome] = outcomes.get(kind + outcome, 0) + 1

    fuzz()
    print("OUTCOMES", sorted(outcomes.items()))
    print("EXAMPLES", examples)


if __name__ == "__main__":
    os.environ.setdefault("PERSISTKIT_HOME", tempfile.mkdtemp())
    main(Path(sys.argv[1]), int(sys.argv[2]))
