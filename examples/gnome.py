"""The first hour: train a small network to tell garden gnomes from other pictures, keep it,
and ask it about a new photo next week — from a new process, the command line or over HTTP.

Run:  python examples/gnome.py [OUT_DIR]

The network's class is defined right here, in ``__main__``, as in most tutorials and
notebooks. persistkit freezes it with torch.export into a class-free ``.pt2`` file (chosen
automatically, because ``GnomeNet`` cannot be imported by name), so nothing else needs this
script to load it. The labels and the picture preprocessing are saved with it as data, so
``persistkit predict gnome photo.jpg`` answers ``photo.jpg: gnome (0.99)``.

Pictures are drawn here (no downloads): a gnome is a red pointed hat over a face and a white
beard; anything else is a few random shapes. It saves into ``$PERSISTKIT_STORE`` (a
throw-away store in OUT_DIR if unset) and writes OUT_DIR/photo.jpg and OUT_DIR/other.jpg.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

import persistkit

LABELS = ["gnome", "not gnome"]
SIZE = 32
# how any picture becomes the network's input, in Hugging Face image-processor terms: saved
# with the model as data, applied by persistkit predict, serve and the upload page
PREPROCESS = {
    "do_convert_rgb": True,
    "do_resize": True,
    "size": {"height": SIZE, "width": SIZE},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "data_format": "channels_first",
}


class GnomeNet(nn.Module):
    """Two convolution blocks and a linear head: logits for LABELS."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(16 * 8 * 8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def picture(is_gnome: bool, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A gnome (red hat, face, white beard) or a few random shapes, on a random background."""
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(40, 200, 3)))
    draw = ImageDraw.Draw(image)
    s, cx = size * rng.uniform(0.45, 0.8), size * (0.5 + rng.uniform(-0.12, 0.12))
    top = size * rng.uniform(0.05, 0.2)
    if is_gnome:
        red = (int(rng.integers(200, 256)), int(rng.integers(0, 40)), int(rng.integers(0, 40)))
        draw.polygon([(cx, top), (cx - s / 3, top + s / 2), (cx + s / 3, top + s / 2)], fill=red)
        draw.ellipse([cx - s / 5, top + s / 2 - s / 12, cx + s / 5, top + s / 2 + s / 4],
                     fill=(240, 200, 160))
        draw.polygon([(cx - s / 4, top + s * 0.62), (cx + s / 4, top + s * 0.62), (cx, top + s)],
                     fill=(245, 245, 245))
        return image
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = rng.uniform(0, size * 0.6, 2)
        w = rng.uniform(size * 0.15, size * 0.5)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + w * rng.uniform(0.5, 1.5)],
              fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def as_input(image: Image.Image) -> np.ndarray:
    """PREPROCESS by hand, for training: what persistkit applies to every picture later."""
    pixels = np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR), np.float32) / 255
    return ((pixels - 0.5) / 0.5).transpose(2, 0, 1)


def train(rng: np.random.Generator) -> tuple[GnomeNet, np.ndarray, float]:
    """Train on 640 pictures, validate on 160; return the net, a few inputs and accuracy."""
    labels = rng.integers(0, 2, 800)
    X = torch.tensor(np.stack([as_input(picture(label == 0, rng)) for label in labels]))
    y = torch.tensor(labels)
    torch.manual_seed(0)
    net = GnomeNet()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _epoch in range(5):
        net.train()
        order = torch.randperm(640)
        for start in range(0, 640, 32):
            batch = order[start : start + 32]
            optimiser.zero_grad()
            nn.functional.cross_entropy(net(X[batch]), y[batch]).backward()
            optimiser.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(X[640:]).argmax(1) == y[640:]).float().mean().item()
    return net, X[640:644].numpy(), accuracy


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="gnome-"))
    out.mkdir(parents=True, exist_ok=True)
    store = os.environ.setdefault("PERSISTKIT_STORE", str(out / "store"))
    rng = np.random.default_rng(0)

    # 1. train and validate
    net, example, accuracy = train(rng)
    print(f"validation accuracy: {accuracy:.3f}")

    # 2. keep it: frozen (torch.export: GnomeNet lives in __main__), hashed, sealed, versioned,
    #    with the labels and the preprocessing as data
    art = persistkit.save(net, "gnome", example=example, labels=LABELS, preprocess=PREPROCESS,
                          metrics={"validation_accuracy": accuracy})
    print(f"saved {art.uri} (backend {art.backend}) into {store}")

    # 3. next week's photos: bigger than the network's input, as JPEG files
    picture(True, np.random.default_rng(7), size=96).save(out / "photo.jpg", quality=95)
    picture(False, np.random.default_rng(8), size=96).save(out / "other.jpg", quality=95)
    print(f"wrote {out / 'photo.jpg'} (a gnome) and {out / 'other.jpg'} (not a gnome)")

    # 4. in a new process, which has never seen GnomeNet: load it and ask about the photo
    code = "import sys, persistkit; print(persistkit.answer('gnome', sys.argv[1])[0])"
    answer = subprocess.run([sys.executable, "-c", code, str(out / "photo.jpg")],
                            capture_output=True, text=True, check=True).stdout.strip()
    print(f"a new process loaded gnome and says photo.jpg is: {answer}")


if __name__ == "__main__":
    main()
