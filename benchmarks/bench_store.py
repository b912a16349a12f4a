"""What does the store cost over copying the same bytes with fsspec?

Saves and loads a ~100 MB model (a dict holding one float64 array, pickle backend) into a
local-folder store and into an S3 store (moto's server on 127.0.0.1, started here), and times
raw fsspec copies of the very same payload file next to them:

* local:  ``Store.save`` (default, and ``durable=True``) and ``Store.load`` (hashes checked,
  and with ``PERSISTKIT_REHASH=1`` forcing a full sha256) vs a raw ``LocalFileSystem.put_file``
  / ``get_file`` of the payload file;
* S3:     ``Store.save`` (upload + conditional claim), ``Store.load`` cold (download into the
  cache, sha256-checked) and warm (served from the cache) vs raw ``s3fs`` ``put_file`` /
  ``get_file`` of the payload file.

Also times N processes saving the same name at once (local and S3).

Run:  .venv/bin/python benchmarks/bench_store.py [--mb 100] [--repeat 3] [--writers 4] [--json]

Medians of --repeat runs, wall-clock seconds. The moto server runs in this process, on the
same 2 cores, so S3 numbers measure the protocol path, not a real network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def median_time(
    fn: Callable[[], Any], repeat: int, before: Callable[[], Any] | None = None
) -> float:
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def concurrent_writers(url: str, writers: int, env: dict[str, str]) -> tuple[float, list[int]]:
    helper = ROOT / "tests" / "store_helpers.py"
    start_at = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, str(helper), url, "race", "--start-at", str(start_at)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(writers)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    wall = time.time() - start_at
    versions = sorted(int(line.split()[0]) for out in outs for line in out.splitlines())
    return wall, versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    os.environ["PERSISTKIT_HOME"] = str(work / "home")
    os.environ["PERSISTKIT_QUIET"] = "1"
    from s3_server import start_s3_server

    server = start_s3_server()
    os.environ.update(server.env)

    import fsspec
    import numpy as np

    import persistkit
    from persistkit import cache
    from persistkit.store import Store, manifest_digest

    model = {"weights": np.random.default_rng(0).random(args.mb * 1024 * 1024 // 8)}
    results: dict[str, Any] = {"mb": args.mb, "repeat": args.repeat}
    try:
        # -- local ----------------------------------------------------------------------
        local = Store(work / "local")
        art = local.save(model, "bench", backend="pickle")
        payload = art.path / art.manifest.primary_file
        results["payload_bytes"] = payload.stat().st_size
        results["local_save_s"] = median_time(
            lambda: local.save(model, "bench", backend="pickle"), args.repeat
        )
        results["local_save_durable_s"] = median_time(
            lambda: local.save(model, "bench", backend="pickle", durable=True), args.repeat
        )
        results["local_load_s"] = median_time(lambda: local.load("bench"), args.repeat)
        os.environ["PERSISTKIT_REHASH"] = "1"
        results["local_load_rehash_s"] = median_time(lambda: local.load("bench"), args.repeat)
        del os.environ["PERSISTKIT_REHASH"]
        lfs = fsspec.filesystem("file")
        raw_dir = work / "raw"
        raw_dir.mkdir()
        results["raw_local_put_s"] = median_time(
            lambda: lfs.put_file(str(payload), str(raw_dir / "copy.bin")), args.repeat
        )
        results["raw_local_get_s"] = median_time(
            lambda: lfs.get_file(str(raw_dir / "copy.bin"), str(raw_dir / "back.bin")),
            args.repeat,
        )
        results["pickle_dump_s"] = median_time(
            lambda: _pickle_to(model, raw_dir / "dump.pkl"), args.repeat
        )
        results["raw_local_put_fsync_s"] = median_time(
            lambda: _copy_fsync(payload, raw_dir / "copy-sync.bin"), args.repeat
        )

        # -- S3 (moto) --------------------------------------------------------------------
        url = server.fresh_url()
        remote = Store(url)
        results["s3_save_s"] = median_time(
            lambda: remote.save(model, "bench", backend="pickle"), args.repeat
        )
        digest = manifest_digest(remote.manifest("bench"))

        def drop_cache() -> None:
            shutil.rmtree(cache.entry_path(digest), ignore_errors=True)

        results["s3_load_cold_s"] = median_time(
            lambda: remote.load("bench"), args.repeat, before=drop_cache
        )
        results["s3_load_warm_s"] = median_time(lambda: remote.load("bench"), args.repeat)
        s3 = fsspec.filesystem("s3", use_listings_cache=False)
        raw_key = f"{server.bucket}/raw-{time.time_ns()}/payload.bin"
        results["raw_s3_put_s"] = median_time(
            lambda: s3.put_file(str(payload), raw_key), args.repeat
        )
        results["raw_s3_get_s"] = median_time(
            lambda: s3.get_file(raw_key, str(raw_dir / "from-s3.bin")), args.repeat
        )

        # -- concurrent writers --------------------------------------------------------------
        env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
        for kind, target in (("local", str(work / "race")), ("s3", server.fresh_url())):
            wall, versions = concurrent_writers(target, args.writers, env)
            results[f"{kind}_{args.writers}_writers_s"] = wall
            results[f"{kind}_{args.writers}_writers_versions"] = versions
        del persistkit
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(results, indent=2))
        return
    mb = results["payload_bytes"] / 1e6
    print(f"payload: {mb:.0f} MB, medians of {args.repeat}")
    rows = [
        ("pickle.dump to a file (serialisation)", results["pickle_dump_s"]),
        ("local  save (store)", results["local_save_s"]),
        ("local  save durable=True", results["local_save_durable_s"]),
        ("local  raw fsspec put_file", results["raw_local_put_s"]),
        ("local  raw copy + fsync", results["raw_local_put_fsync_s"]),
        ("local  load (store)", results["local_load_s"]),
        ("local  load, PERSISTKIT_REHASH=1", results["local_load_rehash_s"]),
        ("local  raw fsspec get_file", results["raw_local_get_s"]),
        ("s3     save (store)", results["s3_save_s"]),
        ("s3     raw s3fs put_file", results["raw_s3_put_s"]),
        ("s3     load cold (download+sha256)", results["s3_load_cold_s"]),
        ("s3     load warm (cache)", results["s3_load_warm_s"]),
        ("s3     raw s3fs get_file", results["raw_s3_get_s"]),
    ]
    for label, seconds in rows:
        print(f"{label:38s} {seconds:7.3f} s  {mb / seconds:8.0f} MB/s")
    for kind in ("local", "s3"):
        wall = results[f"{kind}_{args.writers}_writers_s"]
        versions = results[f"{kind}_{args.writers}_writers_versions"]
        print(f"{kind:6s} {args.writers} concurrent writers: versions {versions} in {wall:.2f} s")


def _pickle_to(model: Any, path: Path) -> None:
    import pickle

    with open(path, "wb") as fh:
        pickle.dump(model, fh, protocol=5)


def _copy_fsync(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
