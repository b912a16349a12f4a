"""Helpers for the predict and serve tests: a digits model trained on 0–255 pixels, pictures of
digits, and a real uvicorn server on a free loopback port running in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Digits:
    """8×8 digit pictures as 0–255 uint8 pixels, the same as flat float rows, and labels."""

    pictures: np.ndarray  # (n, 8, 8) uint8
    rows: np.ndarray  # (n, 64) float64: the pixels the model is trained on
    labels: np.ndarray


def digits() -> Digits:
    """scikit-learn's bundled digits (values 0–16) scaled to whole 0–255 pixel values, so a
    PNG written from them holds exactly the pixels the model was trained on."""
    from sklearn.datasets import load_digits

    data = load_digits()
    pictures = np.round(data.images * 255 / 16).astype(np.uint8)
    return Digits(pictures, pictures.reshape(len(pictures), -1).astype(np.float64), data.target)


def train_digits_model(data: Digits) -> Any:
    """A quick classifier with predict_proba (k-nearest neighbours fits instantly)."""
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=3).fit(data.rows, data.labels)


def write_png(picture: np.ndarray, path: Path) -> Path:
    from PIL import Image

    Image.fromarray(picture).save(path)
    return path


@dataclass
class RunningServer:
    url: str  # http://127.0.0.1:PORT
    host_port: str  # 127.0.0.1:PORT, as tritonclient wants it
    app: Any


@contextmanager
def running_server(app: Any) -> Iterator[RunningServer]:
    """Run ``app`` with uvicorn on 127.0.0.1 and a free port in a thread; stop it after."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# --- a picture model saved with labels and a preprocess spec ------------------------------

COLOURS = ["red", "green", "blue"]
#: Hugging Face image-processor keys: shortest edge to 8, middle 8x8, 0-1, then (x - .5) / .5
PICTURE_PREPROCESS = {
    "do_convert_rgb": True,
    "size": {"shortest_edge": 8},
    "crop_size": {"height": 8, "width": 8},
    "do_rescale": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "data_format": "channels_first",
}


def channel_means(x: np.ndarray) -> np.ndarray:
    """A picture "classifier": its logits are the mean of each colour channel (N, 3, H, W)."""
    return np.asarray(x, dtype=np.float32).mean(axis=(2, 3))


def framed_picture() -> np.ndarray:
    """24x16 RGB: dull red in the middle, bright blue bands at the left and right edges.
    The whole picture is bluer than red; its middle (what the center crop keeps) is red."""
    picture = np.zeros((16, 24, 3), dtype=np.uint8)
    picture[:, :, 0] = 120
    picture[:, :4] = (0, 0, 255)
    picture[:, 20:] = (0, 0, 255)
    return picture


def expected_picture_input(picture: np.ndarray) -> np.ndarray:
    """PICTURE_PREPROCESS worked by hand: Pillow's bilinear resize (the filter Hugging Face's
    ViT processor uses) to 12x8, columns 2..9, /255, (x - .5) / .5, channels first."""
    from PIL import Image

    resized = np.asarray(Image.fromarray(picture).resize((12, 8), Image.Resampling.BILINEAR))
    middle = resized[:, 2:10].astype(np.float64) / 255
    return ((middle - 0.5) / 0.5).transpose(2, 0, 1)[np.newaxis].astype(np.float32)


def save_picture_model(target: Any, **options: Any) -> Any:
    """``channel_means`` saved with colour labels, logits and PICTURE_PREPROCESS."""
    import persistkit

    example = expected_picture_input(framed_picture())
    return persistkit.save(
        channel_means,
        target,
        example=example,
        labels=COLOURS,
        output="logits",
        preprocess=PICTURE_PREPROCESS,
        **options,
    )


# --- `persistkit serve` in a process of its own ----------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on right now (the OS may hand it out again later)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(*args: str) -> list[str]:
    """The command line of ``persistkit serve ARGS`` run by this test's Python."""
    import sys

    return [sys.executable, "-c", "from persistkit.cli import main; main()", "serve", *args]


@contextmanager
def serving_process(
    args: list[str], port: int, env: dict[str, str], timeout: float = 90
) -> Iterator[Any]:
    """Run ``persistkit serve ARGS`` (which must listen on ``port``) until its REST side is
    ready; yield the process; stop it after. Fails with the server's stderr if it exits."""
    import subprocess

    import httpx

    process = subprocess.Popen(serve_command(*args), env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"persistkit serve exited: {process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("persistkit serve did not get ready in time")
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stderr.close()  # type: ignore[union-attr]


def text_lengths(texts: np.ndarray) -> np.ndarray:
    """A "text model": the length of each string (a BYTES input, an INT64 output)."""
    return np.array([len(text) for text in np.asarray(texts).ravel()], dtype=np.int64)


def always_zero(x: np.ndarray) -> np.ndarray:
    """A "model" that answers 0 for every row."""
    return np.zeros(len(x), dtype=np.int64)


def explode(x: np.ndarray) -> np.ndarray:
    """A "model" that fails on every call (a bug in the model, not in the request)."""
    raise ValueError("the model's own bug")


def sum_and_count(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A model of two named inputs and two named outputs (a dict in, a dict out)."""
    return {"sum": batch["a"] + batch["b"], "count": np.full(len(batch["a"]), 2, np.int64)}
