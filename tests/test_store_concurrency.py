"""Concurrent writers and writers killed mid-save, against a local folder and the S3 server.

Each writer is a separate process (``tests/store_helpers.py``); memory:// is per-process, so
it is raced with threads instead.

The process campaigns here (12 kills on a folder, 6 on S3) are marked ``slow``: the suite runs
the same scenarios on every store kind, with fewer kills, in ``test_store_kinds.py``. Run
them with ``pytest -m slow tests/test_store_concurrency.py``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from persistkit.store import Store
from s3_server import S3Server, s3_server  # noqa: F401  (fixture)
from store_helpers import use_slow_bytes

HELPER = Path(__file__).with_name("store_helpers.py")
WRITERS = 4
SAVES_EACH = 2
# PERSISTKIT_KILL_TRIALS=N runs N trials per store kind (for a longer campaign by hand)
_TRIALS = os.environ.get("PERSISTKIT_KILL_TRIALS")
KILL_TRIALS = {"local": int(_TRIALS or 12), "s3": int(_TRIALS or 6)}


@pytest.fixture(params=["local", "s3"])
def shared_store(
    request: pytest.FixtureRequest, tmp_path: Path, isolated_home: Path
) -> tuple[str, dict[str, str]]:
    """A store URL and the environment child processes need to reach it."""
    env = {**os.environ, "PERSISTKIT_HOME": str(isolated_home)}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([str(HELPER.parent), src])
    if request.param == "local":
        return str(tmp_path / "store"), env
    server: S3Server = request.getfixturevalue("s3_server")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)  # this process reads the store too
        env[key] = value
    return server.fresh_url(), env


def _writer(url: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HELPER), url, "m", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_every_version_loads(store: Store) -> list[int]:
    versions = [v.version for v in store.versions("m")]
    for version in versions:
        data = store.load(f"m:{version}")  # verify=True: every file's sha256 is checked
        assert data.startswith(b"m-")
    return versions


@pytest.mark.slow
def test_concurrent_writers_get_distinct_versions_that_all_load(
    shared_store: tuple[str, dict[str, str]],
) -> None:
    url, env = shared_store
    use_slow_bytes()
    start_at = time.time() + 3.0  # every child is imported and waiting by then
    writers = [
        _writer(
            url, env, "--start-at", str(start_at), "--saves", str(SAVES_EACH), "--delay", "0.01"
        )
        for _ in range(WRITERS)
    ]
    outputs = [w.communicate(timeout=120) for w in writers]
    assert [w.returncode for w in writers] == [0] * WRITERS, [err for _, err in outputs]
    wall = time.time() - start_at
    saved = dict(line.split(" ", 1) for out, _ in outputs for line in out.splitlines())
    assert sorted(map(int, saved)) == list(range(1, WRITERS * SAVES_EACH + 1))
    store = Store(url)
    for version, text in saved.items():
        assert store.load(f"m:{version}") == text.encode() * 100
    kind = "s3" if url.startswith("s3://") else "local"
    print(f"{WRITERS} writers x {SAVES_EACH} saves, {kind}: {wall:.2f} s")


def test_concurrent_threads_on_a_memory_store_get_distinct_versions() -> None:
    use_slow_bytes()
    store = Store(f"memory://race-{uuid.uuid4().hex[:8]}")
    payloads = [b"m-%d" % i for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        arts = list(pool.map(lambda data: store.save(data, "m", backend="slowbytes"), payloads))
    assert sorted(a.version for a in arts) == list(range(1, 17))
    for art, data in zip(arts, payloads):
        assert store.load(f"m:{art.version}") == data


@pytest.mark.slow
def test_writers_killed_mid_save_leave_only_complete_versions(
    shared_store: tuple[str, dict[str, str]],
) -> None:
    url, env = shared_store
    use_slow_bytes()
    kind = "local" if "://" not in url else "s3"
    rng = random.Random(20261126)
    store = Store(url)
    store.stale_after = 0  # no live writers between trials: every leftover is stale
    # one undisturbed save first: it measures how long a whole run takes, so the kills below
    # land anywhere from interpreter start-up to the last byte of the publication
    began = time.monotonic()
    first = _writer(url, env, "--chunks", "8", "--delay", "0.05")
    assert first.wait(timeout=120) == 0
    run_seconds = time.monotonic() - began
    seen = _check_every_version_loads(store)
    killed = 0
    for _ in range(KILL_TRIALS[kind]):
        writer = _writer(url, env, "--chunks", "8", "--delay", "0.05")
        time.sleep(rng.uniform(0.0, 1.1 * run_seconds))
        writer.send_signal(signal.SIGKILL)
        writer.communicate(timeout=60)
        killed += writer.returncode == -signal.SIGKILL
        versions = _check_every_version_loads(store)
        assert set(seen) <= set(versions), "a version published earlier was lost"
        seen = versions
    after = store.save(b"m-after" * 10, "m", backend="slowbytes")
    assert after.version > max(seen, default=0)
    assert _check_every_version_loads(store) == [*seen, after.version]
    if kind == "local":
        assert list((Path(url) / ".staging").iterdir()) == []
    else:
        assert len(store._scan("m").payloads) == len(seen) + 1, "orphaned uploads were kept"
    print(
        f"{kind}: {killed} of {KILL_TRIALS[kind]} writers killed mid-run "
        f"(a run takes {run_seconds:.2f} s); versions after: {seen}"
    )
