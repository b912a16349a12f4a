"""Importable PyTorch model classes for the torch tests (a fresh process imports them by name).

Each class keeps its constructor arguments as attributes of the same name, so the
``safetensors`` backend can recover them; ``Opaque`` deliberately does not.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


class MLP(nn.Module):
    """Linear layers of the given widths with an activation, optional BatchNorm and Dropout."""

    def __init__(
        self,
        widths: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        self.widths = list(widths)
        self.activation = activation
        self.dropout = dropout
        self.batchnorm = batchnorm
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                if batchnorm:
                    layers.append(nn.BatchNorm1d(b))
                layers.append(ACTIVATIONS[activation]())
                if dropout:
                    layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Conv layers over (N, C, H, W) images, pooled and classified."""

    def __init__(
        self, in_channels: int = 1, channels: int = 4, n_classes: int = 3, depth: int = 1
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.channels = channels
        self.n_classes = n_classes
        self.depth = depth
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(depth):
            layers += [nn.Conv2d(c, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()]
            c = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class TiedLM(nn.Module):
    """Embedding whose weight is shared with the output projection (tied weights)."""

    def __init__(self, vocab: int = 10, dim: int = 4) -> None:
        super().__init__()
        self.vocab = vocab
        self.dim = dim
        self.embed = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(self.embed(tokens))))


class WithTransposedView(nn.Module):
    """Holds a non-contiguous buffer (a transposed view) alongside a parameter."""

    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self.n = n
        self.weight = nn.Parameter(torch.randn(n, n + 1))
        self.register_buffer("mixer", torch.randn(n + 1, n).t())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + x @ self.mixer


class WithDerivedBuffer(nn.Module):
    """Has a non-persistent buffer computed in __init__ (not in the state dict)."""

    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self.n = n
        self.linear = nn.Linear(n, n)
        self.register_buffer("scale", torch.arange(1, n + 1, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


class Opaque(nn.Module):
    """Does not keep its constructor arguments: they cannot be recovered."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.layer = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def make_opaque(n_in: int = 3, n_out: int = 2) -> Opaque:
    """A factory for :class:`Opaque` (recorded by import path)."""
    return Opaque(n_in, n_out)


def train_a_few_steps(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, steps: int = 3
) -> nn.Module:
    """A few SGD steps so weights and BatchNorm statistics move away from their init."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(inputs)
        loss = (
            nn.functional.cross_entropy(out, targets)
            if targets.dtype == torch.long
            else (nn.functional.mse_loss(out, targets))
        )
        loss.backward()
        optimizer.step()
    return model
