"""Models for ``bench_freeze.py``, in a module of their own so their classes import by name
(the ``safetensors`` backend and the fresh-process memory probe need that)."""

from __future__ import annotations

from typing import Any


def _cnn_class() -> Any:
    from torch import nn

    class DigitCNN(nn.Module):
        """Two conv blocks (BatchNorm, ReLU, max-pool) and a linear head, for 1x28x28."""

        def __init__(self, channels: int = 16, classes: int = 10) -> None:
            super().__init__()
            self.channels, self.classes = channels, classes
            self.features = nn.Sequential(
                nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.BatchNorm2d(2 * channels),
                nn.ReLU(), nn.MaxPool2d(2),
            )
            self.head = nn.Linear(2 * channels * 7 * 7, classes)

        def forward(self, x: Any) -> Any:
            return self.head(self.features(x).flatten(1))

    DigitCNN.__module__ = __name__
    DigitCNN.__qualname__ = "DigitCNN"
    return DigitCNN


def __getattr__(name: str) -> Any:
    # created on first use, so importing this module does not import torch
    if name == "DigitCNN":
        cls = _cnn_class()
        globals()["DigitCNN"] = cls
        return cls
    raise AttributeError(name)
