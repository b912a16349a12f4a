"""Read model inputs from files: images, ``.npy``, ``.csv`` and ``.json``.

Every reader returns a *batch* shaped to the model's input signature (see
:func:`persistkit.signature.conform`). Images are decoded with Pillow (imported only for
images): converted to grayscale or RGB and resized to the signature's height and width,
flattened when the signature is 2-D; pixel values stay 0–255, converted to the signature's
dtype without rescaling — a model fed pictures must be trained on 0–255 pixel values.
A picture of another aspect ratio is stretched (the default), center-cropped or padded with
black (``fit=``); every change is described in ``changes`` so callers can say what was done.
A model saved with ``preprocess=`` gets its pictures as that spec declares instead (resize,
crop, rescale, normalize: see :mod:`persistkit.preprocess`); the rule above is the default.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from persistkit.errors import InputError, PersistkitWarning
from persistkit.signature import TensorSpec, conform

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
DATA_SUFFIXES = frozenset({".npy", ".csv", ".json"})
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # refuse decompression bombs well before memory runs out
_SUPPORTED = "images (.png, .jpg, ...), .npy, .csv or .json"
#: how a picture of another aspect ratio is fitted to the model's input size
FITS = ("stretch", "crop", "pad")
_MODE_NAMES = {"L": "grayscale", "RGB": "RGB"}


@dataclass(frozen=True)
class ImageLayout:
    """How a picture becomes one input item: size, colour mode and array layout."""

    height: int | None  # None: keep the picture's own size
    width: int | None
    mode: str  # "L" (grayscale) or "RGB"
    layout: str  # "HW", "HWC", "CHW" or "flat"


def read_inputs(
    paths: Iterable[str | Path],
    spec: TensorSpec | None,
    *,
    image_size: tuple[int, int] | None = None,
    fit: str = "stretch",
    changes: list[str] | None = None,
    preprocess: dict[str, Any] | None = None,
) -> list[np.ndarray]:
    """One batch per file, each conformed to ``spec`` (see :func:`read_input`)."""
    return [
        read_input(p, spec, image_size=image_size, fit=fit, changes=changes, preprocess=preprocess)
        for p in paths
    ]


def file_inputs(inputs: Any, spec: TensorSpec | None) -> list[Path] | None:
    """The files ``inputs`` names, or ``None`` when they are data.

    A path object (or a list of them) always names files. Strings name files unless the
    model takes text (a ``BYTES`` input): they do when every one is a file here, and, for a
    model whose input is known to be numeric, always (so a missing file is reported as
    missing, not as text the model cannot read).
    """
    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if not items or not all(isinstance(i, (str, os.PathLike)) for i in items):
        return None
    if all(isinstance(i, os.PathLike) for i in items):
        return [Path(i) for i in items]
    if spec is not None and spec.datatype == "BYTES":
        return None
    if spec is not None or all(os.path.isfile(i) for i in items):
        return [Path(i) for i in items]
    return None


def read_batch(
    paths: Iterable[str | Path],
    spec: TensorSpec | None,
    *,
    preprocess: Any = None,
    changes: list[str] | None = None,
) -> np.ndarray:
    """Every file in ``paths`` read (see :func:`read_input`) into one batch. ``preprocess``
    is a manifest's record, checked here."""
    from persistkit.preprocess import checked_spec

    spec_checked = checked_spec(preprocess, manifest=True)
    batches = read_inputs(paths, spec, changes=changes, preprocess=spec_checked)
    return np.concatenate(batches) if len(batches) > 1 else batches[0]


def read_file_inputs(inputs: Any, manifest: Any) -> Any:
    """``inputs`` as a batch when they name files (:func:`file_inputs`), read by the
    ``manifest``'s signature and preprocessing; other inputs come back unchanged. Changes
    made to pictures are said as a :class:`~persistkit.errors.PersistkitWarning` each."""
    from persistkit.signature import Signature

    spec = Signature.from_manifest(manifest.signature).input
    paths = file_inputs(inputs, spec)
    if paths is None:
        return inputs
    changes: list[str] = []
    batch = read_batch(paths, spec, preprocess=manifest.preprocess, changes=changes)
    for change in changes:
        warnings.warn(PersistkitWarning(change), stacklevel=3)
    return batch


def read_input(
    path: str | Path,
    spec: TensorSpec | None,
    *,
    image_size: tuple[int, int] | None = None,
    fit: str = "stretch",
    changes: list[str] | None = None,
    preprocess: dict[str, Any] | None = None,
) -> np.ndarray:
    """Read one file as a batch fitting ``spec`` (a single item gets a batch dimension of 1).

    ``image_size`` (height, width) overrides the size taken from the signature; ``fit``,
    ``changes`` and ``preprocess`` (a checked spec) are as for :func:`read_image`.
    Raises :class:`InputError` for unreadable, unsupported or ill-fitting files.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"input file {path} does not exist", hint="check the path")
    if suffix == ".npy":
        return conform(_read_npy(path), spec, source=path.name)
    if suffix == ".csv":
        return conform(_read_csv(path, spec), spec, source=path.name)
    if suffix == ".json":
        return conform(_read_json(path, spec), spec, source=path.name)
    if suffix in IMAGE_SUFFIXES or _pillow_knows(suffix):
        picture = read_image(
            path.read_bytes(),
            spec,
            image_size=image_size,
            source=path.name,
            fit=fit,
            changes=changes,
            preprocess=preprocess,
        )
        return picture_batch(picture, spec, preprocess)
    raise InputError(
        f"cannot read {path.name}: unknown file type {suffix or '(no suffix)'}",
        hint=f"give {_SUPPORTED}",
    )


def _pillow_knows(suffix: str) -> bool:
    if not suffix:
        return False
    from PIL import Image

    return suffix in Image.registered_extensions()


# --- images ------------------------------------------------------------------------------


def image_layout(spec: TensorSpec | None, image_size: tuple[int, int] | None = None) -> ImageLayout:
    """Decide size, colour mode and layout for pictures from the input signature.

    ``(N, H, W)``: grayscale; ``(N, H, W, C)``: channels last (C = 1 gray, 3 RGB);
    ``(N, C, H, W)``: channels first; ``(N, K)``: flattened, square pictures — grayscale when
    K is a square number, RGB when K/3 is (``image_size`` settles other cases).
    """
    size = image_size or (None, None)
    sample = spec.sample_shape if spec is not None else None
    if sample is None:
        return ImageLayout(size[0], size[1], "RGB", "HWC")
    fixed = [None if d == -1 else d for d in sample]
    if len(sample) == 2:
        return ImageLayout(size[0] or fixed[0], size[1] or fixed[1], "L", "HW")
    if len(sample) == 3 and sample[2] in (1, 3):
        mode = "L" if sample[2] == 1 else "RGB"
        return ImageLayout(size[0] or fixed[0], size[1] or fixed[1], mode, "HWC")
    if len(sample) == 3 and sample[0] in (1, 3):
        mode = "L" if sample[0] == 1 else "RGB"
        return ImageLayout(size[0] or fixed[1], size[1] or fixed[2], mode, "CHW")
    if len(sample) == 1 and sample[0] > 0:
        return _flat_layout(sample[0], image_size, spec)
    raise InputError(
        f"the model's input {spec.describe_shape() if spec else ''} does not look like a picture",
        hint="save the model with example= shaped (N, H, W), (N, H, W, C), (N, C, H, W) or "
        "(N, H*W)",
    )


def _flat_layout(
    count: int, image_size: tuple[int, int] | None, spec: TensorSpec | None
) -> ImageLayout:
    if image_size is not None:
        pixels = image_size[0] * image_size[1]
        if pixels == count:
            return ImageLayout(*image_size, "L", "flat")
        if 3 * pixels == count:
            return ImageLayout(*image_size, "RGB", "flat")
        raise InputError(
            f"--image-size {image_size[0]}x{image_size[1]} gives {pixels} pixels, which does "
            f"not fill the model's {count} input values",
            hint="pick a size whose pixels (or pixels × 3 for RGB) match",
        )
    side = math.isqrt(count)
    if side * side == count:
        return ImageLayout(side, side, "L", "flat")
    side = math.isqrt(count // 3)
    if count % 3 == 0 and side * side * 3 == count:
        return ImageLayout(side, side, "RGB", "flat")
    raise InputError(
        f"the model takes {count} values per item, which is no square picture",
        hint="give the picture's size with --image-size HEIGHTxWIDTH",
    )


def picture_batch(
    picture: np.ndarray, spec: TensorSpec | None, preprocess: dict[str, Any] | None
) -> np.ndarray:
    """:func:`read_image`'s result as a batch: it is one already when a signature shaped it;
    without one (another tool's model folder), the preprocess record made a single item."""
    return picture[np.newaxis] if spec is None and preprocess else picture


def read_image(
    data: bytes,
    spec: TensorSpec | None,
    *,
    image_size: tuple[int, int] | None = None,
    source: str = "the picture",
    fit: str = "stretch",
    changes: list[str] | None = None,
    preprocess: dict[str, Any] | None = None,
) -> np.ndarray:
    """Decode a picture (any format Pillow reads) into a batch of one fitting ``spec``.

    The same function serves ``persistkit predict``, ``persistkit.predict`` and the server,
    so all give the model the same pixels. ``preprocess`` is a checked spec (see
    :mod:`persistkit.preprocess`); without one, the 0–255 rule applies: a picture of another
    aspect ratio than the model's input is stretched (``fit="stretch"``, the default),
    center-cropped to that ratio (``"crop"``) or fitted inside it and padded with black, 0
    (``"pad"``). When the picture had to be changed (size, colours, alpha), one line saying
    what was done is appended to ``changes``, e.g.
    ``"one.png: 20x12 RGBA -> 8x8 grayscale (stretched, alpha dropped)"``.
    """
    from persistkit import preprocess as pre

    if fit not in FITS:
        raise InputError(f"unknown fit {fit!r} for pictures", hint=f"pass one of {', '.join(FITS)}")
    if spec is not None and spec.datatype == "BYTES":
        raise InputError(f"the model takes text, not pictures like {source}", hint="pass text")
    layout = image_layout(spec, image_size)
    steps = pre.Steps.of(preprocess) if preprocess else None
    mode = pre.colour_mode(preprocess, layout.mode) if preprocess else layout.mode
    with _decoded(data, source) as opened:
        original = (opened.width, opened.height, opened.mode, _has_alpha(opened))
        image = opened.convert(mode)
    details = []
    if preprocess and steps is not None and steps.resize:
        image = pre.resize(image, preprocess)
        # resizing is what the model's own spec asks for: only a change of shape is news
        same_ratio = original[0] * image.height == original[1] * image.width
        if not same_ratio and "shortest_edge" not in preprocess["size"]:
            details.append("stretched")
    elif not (steps and steps.crop):
        width, height = layout.width or image.width, layout.height or image.height
        if (width, height) != image.size:
            same_ratio = image.width * height == image.height * width
            image = _fit_size(image, (width, height), fit)
            details.append("resized" if same_ratio else _FIT_WORDS[fit])
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if preprocess and steps is not None:
        if steps.crop:  # declared by the spec, like the resize: not reported
            pixels = pre.center_crop(pixels, preprocess["crop_size"])
        pixels = pre.rescale_and_normalize(pixels, preprocess, steps, source=source)
        pixels = pre.lay_out(pixels, preprocess.get("data_format"), layout.layout)
    else:
        pixels = pre.lay_out(pixels, None, layout.layout)
    if changes is not None:
        size = _model_size(image, preprocess, steps)
        change = describe_change(original, (*size, mode), fit, details=details)
        if change:
            changes.append(f"{source}: {change}")
    return conform(pixels, spec, source=source)


def _model_size(image: Any, preprocess: dict[str, Any] | None, steps: Any) -> tuple[int, int]:
    """The (width, height) the model gets: the crop's when one was taken, else the image's."""
    if preprocess and steps is not None and steps.crop:
        crop = preprocess["crop_size"]
        return crop["width"], crop["height"]
    return int(image.width), int(image.height)


_FIT_WORDS = {"stretch": "stretched", "crop": "center-cropped", "pad": "padded with black"}


@contextmanager
def _decoded(data: bytes, source: str) -> Iterator[Any]:
    """The picture in ``data`` opened with Pillow, refusing decompression bombs; decoding
    errors (also those raised while the caller converts it) become :class:`InputError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_IMAGE_PIXELS:
                raise InputError(
                    f"{source} is {opened.width}x{opened.height} pixels, too large to decode",
                    hint=f"send a picture under {MAX_IMAGE_PIXELS // 1_000_000} megapixels",
                )
            yield opened
    except UnidentifiedImageError:
        raise InputError(
            f"{source} is not a picture in any format Pillow reads",
            hint="send a PNG, JPEG or another common picture format",
        ) from None
    except (Image.DecompressionBombError, OSError, ValueError) as exc:
        raise InputError(
            f"cannot decode {source}: {exc}",
            hint="send an intact PNG, JPEG or another common picture format",
        ) from None


def _fit_size(image: Any, size: tuple[int, int], fit: str) -> Any:
    """``image`` brought to ``size`` (width, height) the way ``fit`` says."""
    from PIL import Image, ImageOps

    method = Image.Resampling.BILINEAR
    if fit == "crop":
        return ImageOps.fit(image, size, method=method)
    if fit == "pad":
        return ImageOps.pad(image, size, method=method, color=0)
    return image.resize(size, method)


def _has_alpha(image: Any) -> bool:
    return "A" in image.getbands() or "transparency" in image.info


def describe_change(
    original: tuple[int, int, str, bool],
    result: tuple[int, int, str],
    fit: str,
    *,
    details: list[str] | None = None,
) -> str:
    """What turning a ``(width, height, mode, has_alpha)`` picture into ``(width, height,
    mode)`` did, in a few words, or ``""`` when the model gets the picture as it was.
    ``details`` names the size changes made (else they are told from ``fit``)."""
    width, height, mode, alpha = original
    new_width, new_height, new_mode = result
    if details is None:
        details = []
        if (width, height) != (new_width, new_height):
            same_ratio = width * new_height == height * new_width
            details.append("resized" if same_ratio else _FIT_WORDS[fit])
    else:
        details = list(details)
    if alpha:
        details.append("alpha dropped")
    # a palette picture keeps its colours in RGB; black-and-white ones keep theirs in grayscale
    same_colours = mode == new_mode or (mode, new_mode) in {("1", "L"), ("P", "RGB")}
    if not details and same_colours:
        return ""
    shown = _MODE_NAMES.get(new_mode, new_mode)
    return f"{width}x{height} {mode} -> {new_width}x{new_height} {shown}" + (
        f" ({', '.join(details)})" if details else ""
    )


# --- data files --------------------------------------------------------------------------


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except ValueError as exc:
        raise InputError(
            f"cannot read {path.name}: {exc}",
            hint="save a numeric or string array (np.save) without Python objects",
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read {path.name}: {exc}", hint="is it a .npy file?") from None


def _read_csv(path: Path, spec: TensorSpec | None) -> np.ndarray:
    """Rows are items, columns are features; a first row that is not numeric is a header."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    rows = [row for row in csv.reader(io.StringIO(text)) if row and any(c.strip() for c in row)]
    if not rows:
        raise InputError(f"{path.name} holds no rows", hint="put one item per row")
    textual = spec is not None and spec.datatype == "BYTES"
    if not textual and not _numeric(rows[0]):
        rows = rows[1:]
    if not rows or len({len(r) for r in rows}) != 1:
        raise InputError(
            f"{path.name} has rows of different lengths (or only a header)",
            hint="give every row the same number of columns",
        )
    if textual:
        return np.array(rows, dtype=str)
    try:
        return np.array([[float(c) for c in row] for row in rows])
    except ValueError as exc:
        raise InputError(
            f"{path.name} holds a value that is not a number: {exc}",
            hint="a CSV input must be all numbers (a header row is allowed)",
        ) from None


def _numeric(row: list[str]) -> bool:
    try:
        [float(c) for c in row]
    except ValueError:
        return False
    return True


def _read_json(path: Path, spec: TensorSpec | None) -> np.ndarray:
    """A (nested) list, or an object holding one under ``"instances"``, ``"inputs"`` or
    ``"data"``."""
    try:
        value: Any = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"{path.name} is not valid JSON: {exc}", hint="fix the file") from None
    if isinstance(value, dict):
        for key in ("instances", "inputs", "data"):
            if key in value:
                value = value[key]
                break
        else:
            raise InputError(
                f"{path.name} is a JSON object without an 'instances', 'inputs' or 'data' list",
                hint='write a list of items, or {"instances": [...]}',
            )
    try:
        array = np.array(value)
    except ValueError as exc:
        raise InputError(
            f"{path.name} does not hold a regular array: {exc}",
            hint="give every item the same shape",
        ) from None
    textual = spec is not None and spec.datatype == "BYTES"
    if array.dtype == object or (array.dtype.kind in "US" and not textual):
        raise InputError(
            f"{path.name} does not hold an array of numbers",
            hint="give every item the same shape, with numbers only",
        )
    return array
