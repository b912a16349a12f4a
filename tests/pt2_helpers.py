"""What the .pt2 safety tests share: one real torch.export archive to attack."""

from __future__ import annotations

import functools
import io

import pytest

torch = pytest.importorskip("torch")

from torch_helpers import mlp_inputs, trained_mlp  # noqa: E402


@functools.cache
def mlp_archive() -> bytes:
    """A real torch.export archive of a trained MLP with a dynamic batch (symbolic sizes)."""
    model = trained_mlp().eval()
    x = torch.from_numpy(mlp_inputs(4))
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()
