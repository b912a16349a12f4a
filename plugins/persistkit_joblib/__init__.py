"""The ``joblib`` backend: pickle with numpy arrays stored as raw buffers; ``compress=``
passes through (0-9, or a ``(method, level)`` pair such as ``("lz4", 3)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import persistkit
from persistkit import Backend, BackendInfo, Manifest


class JoblibBackend(Backend):
    info = BackendInfo(
        "joblib",
        description="joblib: pickle with fast raw numpy buffers, optional compression",
        restricted=True,
        append_only=True,
        save_options=("compress",),
        load_options=(),
        requires=("joblib",),
        extra="joblib",
        suffixes=(".joblib", ".jl", ".joblib.gz", ".joblib.z", ".joblib.lz4"),
    )
    file_name = "model.joblib"

    def save(self, model: Any, path: Path, options: dict[str, Any]) -> None:
        import joblib

        compress = options.get("compress", 0)
        if isinstance(compress, list):  # ("lz4", 3) comes back from JSON as a list
            compress = tuple(compress)
        try:
            if compress in (0, None, False) and _dumps_to_file_objects(joblib):
                # hashed from the buffers joblib hands over, as they are written
                with persistkit.payload_writer(path) as fh:
                    joblib.dump(model, fh)
            else:
                joblib.dump(model, path, compress=compress)
        except Exception as exc:
            if type(exc).__name__ in ("PicklingError", "AttributeError", "TypeError"):
                raise persistkit.errors.CannotSaveError(
                    f"joblib cannot serialize this {type(model).__qualname__}: {exc}",
                    hint='try backend="cloudpickle" (pip install "persistkit[cloudpickle]")',
                ) from None
            raise

    def load(self, path: Path, manifest: Manifest, options: dict[str, Any], policy: Any) -> Any:
        return self.load_path(path, manifest, options, policy)

    def load_payload(
        self, payload: Any, manifest: Manifest, options: dict[str, Any], policy: Any
    ) -> Any:
        # from the checked descriptor; companion files (old joblib) from the load's files
        return policy.load_joblib_payload(payload)


def _dumps_to_file_objects(joblib: Any) -> bool:
    """joblib >= 0.10 writes to a file object (older ones wrote companion ``.npy`` files
    beside a file name)."""
    import re

    found = re.match(r"(\d+)\.(\d+)", getattr(joblib, "__version__", ""))
    return found is not None and (int(found.group(1)), int(found.group(2))) >= (0, 10)


plugin = JoblibBackend()
