"""Figures for the database catalog: listing and ref resolution over many versions, folder vs
SQLite vs PostgreSQL (and an S3 folder store vs PostgreSQL with its payloads on S3), 8
concurrent writers on PostgreSQL, and writers SIGKILLed mid-save on database stores.

Run:  .venv/bin/python benchmarks/bench_catalog.py [--versions 10000] [--s3-versions 500]
          [--rounds 5] [--writers 8] [--saves 25] [--kills 10] [--postgres URL] [--json]

PostgreSQL: ``--postgres URL`` or ``$PERSISTKIT_TEST_POSTGRES_URL`` (``bash scripts/postgres.sh
start`` prints one); each run makes and drops its own databases. S3 is moto's server in this
process (same 2 cores): S3 figures measure the protocol path, not a network.

How the versions are made (the fast path): one real save of a tiny model (version 1) into each
store; versions 2..N are its manifest with the version and ``created_at`` changed (so every
digest differs) and the seal dropped, written as a folder store writes them
(``<name>/<N>/persistkit.json``, the payload files hard-linked on a local folder) or inserted
as a database catalog's rows (one ``executemany``). Listing and resolution read manifests,
never payloads. An alias ``prod`` points at the middle version.

Timings are medians of --rounds, each store measured in turn within a round (interleaved),
all in this one process. "ls NAME cold" (``Store.versions``) empties the process's cache of
parsed manifest rows first (a new process); "warm" is a second listing in the same process;
"ls NAME --json cold" is what the command computes (``find`` + every column of each record).
A database store lists versions from their summary rows (no manifest parsed); a folder store
reads and parses every ``persistkit.json`` and computes its digest.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
HELPER = ROOT / "tests" / "store_helpers.py"
NAME = "gnome"


def _timed(fn: Callable[[], Any], before: Callable[[], Any] | None = None) -> float:
    if before is not None:
        before()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- filling stores fast ---------------------------------------------------------------------


def _manifests(template: Any, count: int) -> list[Any]:
    """Versions 2..count of the template: distinct created_at (so distinct digests), no seal."""
    base = time.time()
    out = []
    for v in range(2, count + 1):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + v)) + f".{v % 1000:03d}Z"
        out.append(template.replace(version=v, created_at=stamp, seal=None))
    return out


def fill_files(store: Any, count: int) -> None:
    """Versions 2..count written as a folder store's files (local: payload hard-linked)."""
    from persistkit.manifest import MANIFEST_NAME

    template = store.manifest(f"{NAME}:1")
    manifests = _manifests(template, count)
    if store.is_local:
        first = Path(store.url) / NAME / "1"
        for m in manifests:
            folder = Path(store.url) / NAME / str(m.version)
            folder.mkdir()
            for entry in template.files:
                os.link(first / entry.path, folder / entry.path)
            (folder / MANIFEST_NAME).write_text(m.to_json())
        return
    fs = store._fs
    blobs = {
        store._path(f"{NAME}/{m.version}/{MANIFEST_NAME}"): m.to_json().encode() for m in manifests
    }
    fs.pipe(blobs)


def fill_rows(store: Any, count: int) -> None:
    """Versions 2..count inserted as a database catalog's rows (as a save writes them)."""
    import sqlalchemy as sa

    from persistkit.catalog import Summary, schema
    from persistkit.catalog.sql import row_values
    from persistkit.store import manifest_digest

    template = store.manifest(f"{NAME}:1")
    rows = [
        row_values(m, manifest_digest(m), Summary.of(m).to_json())
        for m in _manifests(template, count)
    ]
    with store.catalog.engine.begin() as conn:
        conn.execute(sa.insert(schema.versions), rows)


def make_store(kind: str, url: str, count: int) -> Any:
    import numpy as np

    from persistkit.store import Store

    store = Store(url)
    store.save({"w": np.arange(4.0)}, NAME)
    store.save({"w": np.arange(2.0)}, "other")
    (fill_files if kind in ("folder", "s3 folder") else fill_rows)(store, count)
    store.alias(f"{NAME}:{count // 2}", "prod")
    return store


# -- measurements --------------------------------------------------------------------------------

OPERATIONS: dict[str, Callable[[Any, int], Any]] = {
    "ls (names)": lambda s, n: s.list(),
    "ls NAME cold": lambda s, n: s.versions(NAME),
    "ls NAME warm": lambda s, n: s.versions(NAME),
    "ls NAME --json cold": lambda s, n: _ls_records(s),
    "resolve NAME@prod": lambda s, n: s.resolve(f"{NAME}@prod"),
    "resolve NAME:N/3": lambda s, n: s.resolve(f"{NAME}:{n // 3}"),
    "resolve NAME (latest)": lambda s, n: s.resolve(NAME),
    "manifest NAME@prod": lambda s, n: s.manifest(f"{NAME}@prod"),
}


def _ls_records(store: Any) -> list[dict[str, Any]]:
    """What ``persistkit ls NAME --json`` computes (every column the table shows, too), as
    its command does it (the cyclic collector paused)."""
    from persistkit.collector import collection_paused
    from persistkit.query import record

    with collection_paused():
        return [record(v) for v in store.find(NAME)]


def _cold() -> None:
    from persistkit.catalog import sql

    sql._parsed.cache_clear()


def measure(stores: dict[str, tuple[Any, int]], rounds: int) -> dict[str, dict[str, float]]:
    times: dict[str, dict[str, list[float]]] = {k: {op: [] for op in OPERATIONS} for k in stores}
    for _ in range(rounds):
        for op, fn in OPERATIONS.items():
            for kind, (store, count) in stores.items():
                before = _cold if "cold" in op else None
                call = lambda f=fn, s=store, n=count: f(s, n)  # noqa: E731
                times[kind][op].append(_timed(call, before))
    return {k: {op: statistics.median(v) for op, v in ops.items()} for k, ops in times.items()}


# -- writers -------------------------------------------------------------------------------------


def _env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PERSISTKIT_HOME": str(home), **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(HELPER.parent), str(ROOT / "src")])
    return env


def concurrent_writers(url: str, writers: int, saves: int, home: Path) -> dict[str, Any]:
    from persistkit.store import Store
    from store_helpers import use_slow_bytes

    start_at = time.time() + 4.0
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HELPER),
                url,
                "race",
                "--start-at",
                str(start_at),
                "--saves",
                str(saves),
            ],
            env=_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(writers)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    wall = time.time() - start_at
    failed = [err[-500:] for p, (_, err) in zip(procs, outs) if p.returncode != 0]
    saved = [int(line.split()[0]) for out, _ in outs for line in out.splitlines()]
    use_slow_bytes()
    store = Store(url)
    listed = [v.version for v in store.versions("race")]
    loads = sum(store.load(f"race:{v}").startswith(b"race-") for v in listed)
    return {
        "writers": writers,
        "saves_each": saves,
        "wall_s": round(wall, 2),
        "reported": len(saved),
        "unique": len(set(saved)),
        "listed": len(listed),
        "load_ok": loads,
        "lost": len(set(saved) - set(listed)),
        "failed_writers": len(failed),
    }


def kill_trials(url: str, trials: int, home: Path, seed: int = 20261201) -> dict[str, Any]:
    from persistkit.store import Store
    from store_helpers import use_slow_bytes

    use_slow_bytes()
    rng = random.Random(seed)
    args = [sys.executable, str(HELPER), url, "k", "--chunks", "8", "--delay", "0.05"]
    began = time.monotonic()
    assert subprocess.run(args, env=_env(home), capture_output=True).returncode == 0
    run_s = time.monotonic() - began
    store = Store(url)
    killed = partial = lost = 0
    seen: set[int] = {v.version for v in store.versions("k")}
    for _ in range(trials):
        proc = subprocess.Popen(
            args, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(0.0, 1.1 * run_s))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        killed += proc.returncode == -signal.SIGKILL
        versions = {v.version for v in store.versions("k")}
        lost += len(seen - versions)
        for v in versions:
            try:
                store.load(f"k:{v}")
            except Exception:
                partial += 1
        seen = versions
    orphans = len(store.gc(grace=0))
    return {
        "trials": trials,
        "killed_mid_run": killed,
        "visible_versions": len(seen),
        "partial_visible": partial,
        "lost": lost,
        "orphans_removed_by_gc": orphans,
    }


# -- main ----------------------------------------------------------------------------------------


def _postgres_database(server: str) -> tuple[str, Callable[[], None]]:
    import sqlalchemy as sa

    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin_url = "postgresql+psycopg://" + server.split("://", 1)[1]
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()

    return server.rsplit("/", 1)[0] + f"/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--s3-versions", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--saves", type=int, default=25)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--postgres", default=os.environ.get("PERSISTKIT_TEST_POSTGRES_URL"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    os.environ["PERSISTKIT_HOME"] = str(work / "home")
    os.environ["PERSISTKIT_QUIET"] = "1"
    from s3_server import start_s3_server

    s3 = start_s3_server()
    os.environ.update(s3.env)
    cleanups: list[Callable[[], None]] = [s3.stop]
    results: dict[str, Any] = {"versions": args.versions, "s3_versions": args.s3_versions}
    try:
        urls = {
            "folder": (str(work / "folder"), args.versions),
            "sqlite": (f"sqlite:///{work}/catalog.db", args.versions),
            "s3 folder": (s3.fresh_url(), args.s3_versions),
        }
        if args.postgres:
            for kind, count, blobs in (
                ("postgresql", args.versions, str(work / "pg-blobs")),
                ("postgresql+s3", args.s3_versions, s3.fresh_url()),
            ):
                db, drop = _postgres_database(args.postgres)
                cleanups.append(drop)
                urls[kind] = (f"{db}?blobs={blobs}", count)
        stores = {}
        for kind, (url, count) in urls.items():
            began = time.perf_counter()
            stores[kind] = (make_store(kind, url, count), count)
            print(
                f"filled {kind}: {count} versions in {time.perf_counter() - began:.1f} s",
                file=sys.stderr,
            )
        timings = measure(stores, args.rounds)
        results["timings_s"] = timings
        if args.postgres:
            db, drop = _postgres_database(args.postgres)
            cleanups.append(drop)
            results["postgres_writers"] = concurrent_writers(
                f"{db}?blobs={work}/race-blobs", args.writers, args.saves, work / "home"
            )
            db, drop = _postgres_database(args.postgres)
            cleanups.append(drop)
            results["kills_postgresql"] = kill_trials(
                f"{db}?blobs={work}/kill-blobs", args.kills, work / "home"
            )
        results["kills_sqlite"] = kill_trials(
            f"sqlite:///{work}/kill.db", args.kills, work / "home"
        )
    finally:
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as exc:  # report, and clean up the rest
                print(f"cleanup failed: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    _print_tables(results)


def _print_tables(results: dict[str, Any]) -> None:
    timings = results["timings_s"]
    kinds = list(timings)
    print(
        f"\nlisting and resolution, {results['versions']} versions "
        f"(S3 kinds: {results['s3_versions']}), median ms"
    )
    print(f"{'operation':24}" + "".join(f"{k:>15}" for k in kinds) + "   folder/sqlite  folder/pg")
    for op in OPERATIONS:
        cells = "".join(f"{timings[k][op] * 1000:15.1f}" for k in kinds)
        ratios = ""
        for db in ("sqlite", "postgresql"):
            if db in timings:
                ratios += f"{timings['folder'][op] / timings[db][op]:13.1f}x"
        extra = ""
        if "postgresql+s3" in timings:
            extra = f"   s3/pg+s3 {timings['s3 folder'][op] / timings['postgresql+s3'][op]:.1f}x"
        print(f"{op:24}{cells}{ratios}{extra}")
    for key in ("postgres_writers", "kills_postgresql", "kills_sqlite"):
        if key in results:
            print(f"\n{key}: " + ", ".join(f"{k}={v}" for k, v in results[key].items()))


if __name__ == "__main__":
    main()
