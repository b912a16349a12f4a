"""The safety policy: what an artifact may make us import or run when it loads.

See ``docs/security.md``. Backends that read pickle-family payloads must unpickle only through
:meth:`TrustPolicy.unpickle` (joblib files: :meth:`TrustPolicy.load_joblib`; full-module torch
files: :meth:`TrustPolicy.load_torch`). :func:`audit_file` and :func:`audit_pickle` describe a
file without loading it.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from persistkit.safety.allowlist import allowed_names
    from persistkit.safety.audit import FileAudit, audit_file
    from persistkit.safety.native_checks import check_native_structures
    from persistkit.safety.numpy_format import read_npy, read_npz
    from persistkit.safety.pickle_audit import PickleAudit, audit_pickle, scan_globals
    from persistkit.safety.policy import TrustPolicy
    from persistkit.safety.pt2_audit import Pt2Audit, audit_pt2, looks_like_pt2
    from persistkit.safety.safetensors_format import (
        SafetensorsHeader,
        TensorEntry,
        read_safetensors_header,
    )
    from persistkit.safety.signing import (
        SEAL_STATES,
        export_key,
        seal,
        seal_is_valid,
        seal_state,
        trust_key,
    )
    from persistkit.safety.unpickler import restricted_load

# Every name is imported on first use, from the one module that defines it: a load of a
# safetensors or numpy file needs neither the pickle VM nor the .pt2 audit, and a submodule
# import (``persistkit.safety.policy``) runs this file first. Each module imports what it
# checks with, so no check depends on the order names are asked for.
_LAZY = {
    "allowed_names": "persistkit.safety.allowlist",
    "FileAudit": "persistkit.safety.audit",
    "audit_file": "persistkit.safety.audit",
    "check_native_structures": "persistkit.safety.native_checks",
    "read_npy": "persistkit.safety.numpy_format",
    "read_npz": "persistkit.safety.numpy_format",
    "PickleAudit": "persistkit.safety.pickle_audit",
    "audit_pickle": "persistkit.safety.pickle_audit",
    "scan_globals": "persistkit.safety.pickle_audit",
    "TrustPolicy": "persistkit.safety.policy",
    "Pt2Audit": "persistkit.safety.pt2_audit",
    "audit_pt2": "persistkit.safety.pt2_audit",
    "looks_like_pt2": "persistkit.safety.pt2_audit",
    "SafetensorsHeader": "persistkit.safety.safetensors_format",
    "TensorEntry": "persistkit.safety.safetensors_format",
    "read_safetensors_header": "persistkit.safety.safetensors_format",
    "SEAL_STATES": "persistkit.safety.signing",
    "export_key": "persistkit.safety.signing",
    "seal": "persistkit.safety.signing",
    "seal_is_valid": "persistkit.safety.signing",
    "seal_state": "persistkit.safety.signing",
    "trust_key": "persistkit.safety.signing",
    "restricted_load": "persistkit.safety.unpickler",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'persistkit.safety' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "SEAL_STATES",
    "FileAudit",
    "PickleAudit",
    "Pt2Audit",
    "SafetensorsHeader",
    "TensorEntry",
    "TrustPolicy",
    "allowed_names",
    "audit_file",
    "audit_pickle",
    "audit_pt2",
    "check_native_structures",
    "export_key",
    "looks_like_pt2",
    "read_npy",
    "read_npz",
    "read_safetensors_header",
    "restricted_load",
    "scan_globals",
    "seal",
    "seal_is_valid",
    "seal_state",
    "trust_key",
]
