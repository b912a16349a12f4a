"""Helpers for the store tests: a slow, safe test backend and a child-process saver.

Run as a script, this module saves one model into a store and prints the new version::

    python tests/store_helpers.py URL NAME [--chunks N] [--delay S] [--start-at T] [--saves K]
        [--die-before-claim]

and prints one line per save: ``<version> <text>``, the model being ``<text>`` * 100 in bytes.

``--start-at`` waits until that ``time.time()`` so several children save at the same moment;
``--chunks``/``--delay`` make the payload write slow so a test can kill it mid-save.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import persistkit
from persistkit.manager import build_plugins, reset_plugins
from persistkit.manifest import Manifest

CHUNK = b"persistkit-store-test-" * 4096  # ~90 KB


class SlowBytes(persistkit.Backend):
    """Saves ``bytes`` in chunks, optionally sleeping between them; safe to load."""

    info = persistkit.BackendInfo("slowbytes", description="test bytes", safe=True)
    file_name = "payload.bin"
    chunks = 4
    delay = 0.0

    def can_save(self, model: Any) -> bool:
        return isinstance(model, bytes)

    def save(self, model: Any, path: Path, options: dict[str, Any]) -> None:
        with open(path, "wb") as fh:
            for _ in range(self.chunks):
                fh.write(model)
                fh.flush()
                time.sleep(self.delay)

    def load(self, path: Path, manifest: Manifest, options: dict[str, Any], policy: Any) -> Any:
        data = path.read_bytes()
        return data[: len(data) // self.chunks] if self.chunks else data


def use_slow_bytes(chunks: int = 4, delay: float = 0.0) -> SlowBytes:
    """Install a plugin manager with the entry-point plugins plus a SlowBytes backend."""
    backend = SlowBytes()
    backend.chunks = chunks
    backend.delay = delay
    reset_plugins(build_plugins(backend))
    return backend


def store_url(kind: str, request: Any, tmp_path: Path) -> str:
    """A new, empty store URL of ``kind`` (``folder``, ``memory``, ``s3``, ``sqlite``,
    ``postgresql``, ``postgresql-s3``): a database's payloads in ``?blobs=``. S3 and
    PostgreSQL kinds take the ``s3_env`` / ``fresh_postgres_url`` fixtures from ``request``."""
    if kind == "folder":
        return str(tmp_path / "store")
    if kind == "memory":
        return f"memory://kinds-{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/catalog.db"
    s3 = request.getfixturevalue("s3_env") if "s3" in kind else None
    if kind == "s3":
        return str(s3.fresh_url())
    database = request.getfixturevalue("fresh_postgres_url")
    blobs = s3.fresh_url() if s3 is not None else str(tmp_path / "blobs")
    return f"{database}?blobs={blobs}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("name")
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--saves", type=int, default=1)
    parser.add_argument(
        "--die-before-claim",
        action="store_true",
        help="database stores: exit at once after the payload is stored, before the row",
    )
    args = parser.parse_args(argv)
    if args.die_before_claim:
        from persistkit.catalog.sql import SqlCatalog

        SqlCatalog._claim = lambda *a, **k: os._exit(137)  # type: ignore[method-assign]
    use_slow_bytes(args.chunks, args.delay)
    store = persistkit.Store(args.url)
    time.sleep(max(0.0, args.start_at - time.time()))
    for i in range(args.saves):
        text = f"{args.name}-{os.getpid()}-{i}"
        art = store.save(text.encode() * 100, args.name, backend="slowbytes")
        print(art.version, text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
