"""Read full-module ``torch.save`` zip files under the trust policy (not implemented yet)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from persistkit.errors import UntrustedArtifactError

if TYPE_CHECKING:
    from persistkit.safety.policy import TrustPolicy


def read_torch_zip(path: Path, policy: TrustPolicy, *, map_location: Any = "cpu") -> Any:
    """Refuses for now: reading torch zip files through the allow-list is not implemented."""
    raise UntrustedArtifactError(
        f"refusing to load {policy.source}: it is a whole PyTorch module saved with "
        "torch.save (a pickle) that is not sealed by a key you trust, and reading such "
        "files through the allow-list is not implemented yet",
        hint="if you trust its source, pass trusted=True (that runs this file's code); "
        'save models with backend="safetensors" to share them safely',
    )
