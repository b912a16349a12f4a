"""Write the golden database-backed store: ``tests/golden/catalog-<schema>/``.

    python tools/make_golden_catalog.py [OUT_DIR]

A SQLite catalog (``catalog.db``) with its payloads beside it (``catalog.blobs/``), made by
this release: two models, versions with save-time and added tags, a deleted version, aliases,
and ``expected.json`` (what a later release must read back: versions, digests, aliases,
tags, the arrays). ``tests/test_catalog_schema.py`` opens a copy with the persistkit under
test. Run it only when the schema version goes up, into a new folder; never rewrite an old one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

import persistkit
from persistkit.catalog import migrations


def build(out: Path) -> None:
    if out.exists():
        raise SystemExit(f"{out} exists: golden stores are never rewritten")
    os.environ["PERSISTKIT_HOME"] = tempfile.mkdtemp(prefix="golden-home-")  # a throwaway key
    work = Path(tempfile.mkdtemp(prefix="golden-catalog-"))
    store = persistkit.Store(f"sqlite:///{work}/catalog.db")
    weights = {
        1: {"w": np.arange(4, dtype=np.float32)},
        2: {"w": np.arange(4, dtype=np.float32) * 2},
        3: {"w": np.arange(4, dtype=np.float32) * 3},
    }
    for number, arrays in weights.items():
        store.save(arrays, "gnome", tags={"team": "garden"}, metadata={"round": number})
    store.save({"b": np.ones((2, 2), dtype=np.float64)}, "other")
    store.alias("gnome:2", "prod")
    store.alias("gnome:3", "candidate")
    store.tag("gnome:2", "stage", "prod")
    store.delete("gnome:3", force=True)
    store.alias("other:1", "prod")
    expected = {
        "schema": migrations.SCHEMA_VERSION,
        "persistkit": persistkit.__version__,
        "names": store.list(),
        "versions": {n: [v.version for v in store.versions(n)] for n in store.list()},
        "deleted": {"gnome": [3]},
        "aliases": {n: store.aliases(n) for n in store.list()},
        "digests": {f"{n}:{v.version}": v.digest for n in store.list() for v in store.versions(n)},
        "tags": {f"{n}:{v.version}": v.tags for n in store.list() for v in store.versions(n)},
        "arrays": {"gnome:1": [0, 1, 2, 3], "gnome@prod": [0, 2, 4, 6], "other@prod": [1, 1, 1, 1]},
    }
    store.close()  # the last connection checkpoints the WAL into catalog.db
    out.mkdir(parents=True)
    shutil.copy2(work / "catalog.db", out / "catalog.db")
    shutil.copytree(work / "catalog.blobs", out / "catalog.blobs", ignore=_staging)
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")


def _staging(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n.startswith(".")]


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[1] / "tests" / "golden"
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    build(target / f"catalog-{migrations.SCHEMA_VERSION}")
