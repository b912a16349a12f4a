"""The safety policy: what an artifact may make us import or run when it loads.

See ``docs/security.md``. Backends that read pickle-family payloads must unpickle only through
:meth:`TrustPolicy.unpickle`.
"""

from persistkit.safety.policy import TrustPolicy
from persistkit.safety.safetensors_format import (
    SafetensorsHeader,
    TensorEntry,
    read_safetensors_header,
)
from persistkit.safety.signing import export_key, seal, seal_is_valid, trust_key
from persistkit.safety.unpickler import restricted_load, scan_globals

__all__ = [
    "SafetensorsHeader",
    "TensorEntry",
    "TrustPolicy",
    "export_key",
    "read_safetensors_header",
    "restricted_load",
    "scan_globals",
    "seal",
    "seal_is_valid",
    "trust_key",
]
