"""persistkit: freeze a trained model, save it (hashed, versioned), load it safely, predict.

Public API (see README.md)::

    art = persistkit.save(model, "digits", example=X[:5])
    model = persistkit.load("digits")
    y = persistkit.predict("digits", X_new)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from persistkit import errors
from persistkit.manager import hookimpl
from persistkit.records import Artifact, BackendInfo, Recommendation

if TYPE_CHECKING:
    from persistkit.answers import Answer, answer
    from persistkit.api import (
        backends,
        freeze,
        inspect,
        load,
        predict,
        save,
        verify,
    )
    from persistkit.arrays import arrays_identical, to_numpy
    from persistkit.backend import Backend, PickleProtocolBackend
    from persistkit.batch import BatchReport, predict_many
    from persistkit.bench import bench
    from persistkit.convert import convert
    from persistkit.lineage import data_digest
    from persistkit.manifest import Manifest
    from persistkit.reports import VerifyReport
    from persistkit.safety import TrustPolicy, export_key, trust_key
    from persistkit.store import Store
    from persistkit.writer import payload_writer

# Attributes resolved on first use, so `import persistkit` stays cheap (no numpy until needed).
_LAZY = {
    "save": "persistkit.api",
    "load": "persistkit.api",
    "predict": "persistkit.api",
    "freeze": "persistkit.api",
    "inspect": "persistkit.api",
    "verify": "persistkit.api",
    "backends": "persistkit.api",
    "VerifyReport": "persistkit.reports",
    "answer": "persistkit.answers",
    "Answer": "persistkit.answers",
    "Backend": "persistkit.backend",
    "PickleProtocolBackend": "persistkit.backend",
    "to_numpy": "persistkit.arrays",
    "arrays_identical": "persistkit.arrays",
    "Manifest": "persistkit.manifest",
    "Store": "persistkit.store",
    "TrustPolicy": "persistkit.safety",
    "trust_key": "persistkit.safety",
    "export_key": "persistkit.safety",
    "bench": "persistkit.bench",
    "convert": "persistkit.convert",
    "predict_many": "persistkit.batch",
    "BatchReport": "persistkit.batch",
    "payload_writer": "persistkit.writer",
    "data_digest": "persistkit.lineage",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'persistkit' has no attribute {name!r}")
    import importlib

    from persistkit.collector import collection_paused

    with collection_paused():  # a full collection here would sweep torch's objects too
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Answer",
    "Artifact",
    "Backend",
    "BackendInfo",
    "BatchReport",
    "Manifest",
    "PickleProtocolBackend",
    "Recommendation",
    "Store",
    "TrustPolicy",
    "VerifyReport",
    "__version__",
    "answer",
    "arrays_identical",
    "backends",
    "bench",
    "convert",
    "data_digest",
    "errors",
    "export_key",
    "freeze",
    "hookimpl",
    "inspect",
    "load",
    "payload_writer",
    "predict",
    "predict_many",
    "save",
    "to_numpy",
    "trust_key",
    "verify",
]
