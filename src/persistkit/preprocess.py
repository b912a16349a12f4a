"""How a picture becomes a model input, declared as data (never code).

``save(..., preprocess={...})`` records a spec in the manifest using the keys of Hugging Face
image processors, so people who know those know this:

``do_resize`` / ``size`` (``{"height": H, "width": W}`` or ``{"shortest_edge": S}``),
``do_center_crop`` / ``crop_size`` (``{"height": H, "width": W}``),
``do_rescale`` / ``rescale_factor``, ``do_normalize`` / ``image_mean`` / ``image_std``,
``do_convert_rgb``/``do_convert_grayscale``, ``resample`` (Pillow's filter number as Hugging
Face writes it, or its name) and ``data_format`` (``"channels_first"`` or ``"channels_last"``).

The pipeline (:func:`apply`), in Hugging Face's order: convert colours, resize, center crop,
rescale, normalize, lay out channels; the signature's dtype comes last. A step runs when its
``do_`` key is true, or when that key is absent and the step's settings are given
(``size`` alone resizes); ``do_X: false`` turns a step off. Differences from Hugging Face,
stated so nothing is guessed:

- ``do_rescale: true`` without ``rescale_factor`` rescales by 1/255 (Hugging Face's default,
  written into the record); normalizing without saying whether to rescale is refused at save,
  because Hugging Face would rescale by default and persistkit never guesses.
- resizing uses bilinear filtering unless ``resample`` says otherwise: the default of
  ``ViTImageProcessor`` and ``ConvNextImageProcessor`` (``resample=2``; CLIP and many ResNet
  configs write ``resample: 3``, bicubic). ``{"shortest_edge": S}`` keeps the aspect ratio,
  the long side becoming ``int(S * long / short)`` as in Hugging Face.
- center crop takes the middle ``crop_size``, padding with zeros when the picture is smaller.
- without resize and crop, a picture is brought to the signature's size as without a spec
  (``fit=``); colours default to what the signature's channels say.

Without a spec, pictures are read by the 0–255 rule of :mod:`persistkit.inputs`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from persistkit.errors import InputError, ManifestError, PersistkitError

if TYPE_CHECKING:
    import numpy as np

BOOL_KEYS = (
    "do_resize",
    "do_center_crop",
    "do_rescale",
    "do_normalize",
    "do_convert_rgb",
    "do_convert_grayscale",
)
KEYS = (
    *BOOL_KEYS,
    "size",
    "crop_size",
    "rescale_factor",
    "image_mean",
    "image_std",
    "data_format",
    "resample",
)
#: Pillow's resampling filters by the numbers Hugging Face configs write
RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
DEFAULT_RESAMPLE = RESAMPLE["bilinear"]
DEFAULT_RESCALE = 1 / 255
DATA_FORMATS = ("channels_first", "channels_last")
_SIZE_KEYS = (("height", "width"), ("shortest_edge",))
MAX_SIDE = 16384


def checked_spec(spec: Any, *, manifest: bool = False) -> dict[str, Any] | None:
    """Validate a preprocessing spec (from ``save``'s ``preprocess=``, or from a manifest when
    ``manifest=True``) and return it in canonical form, or ``None`` for no spec."""
    if spec is None:
        return None
    error = ManifestError if manifest else InputError
    where = "the manifest's preprocess record" if manifest else "preprocess="
    if not isinstance(spec, dict):
        raise error(f"{where} must be a dict of settings, not {type(spec).__name__}")
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise error(
            f"{where} has unknown keys {', '.join(map(repr, unknown))}",
            hint=f"the keys are those of Hugging Face image processors: {', '.join(KEYS)}",
        )
    out: dict[str, Any] = {}
    for key in BOOL_KEYS:
        if key in spec:
            if not isinstance(spec[key], bool):
                raise error(f"{where}: {key} must be true or false")
            out[key] = spec[key]
    for key in ("size", "crop_size"):
        if key in spec:
            out[key] = _size(spec[key], key, where, error)
    if "rescale_factor" in spec:
        out["rescale_factor"] = _number(spec["rescale_factor"], "rescale_factor", where, error)
    channels = None
    for key in ("image_mean", "image_std"):
        if key in spec:
            value = spec[key]
            values = [value] if isinstance(value, (int, float)) else value
            if not isinstance(values, list) or len(values) not in (1, 3):
                raise error(f"{where}: {key} must be a number or a list of 1 or 3 numbers")
            out[key] = [_number(v, key, where, error) for v in values]
            if key == "image_std" and any(v == 0 for v in out[key]):
                raise error(f"{where}: image_std may not be 0")
            if channels is not None and len(out[key]) != channels:
                raise error(f"{where}: image_mean and image_std must have the same length")
            channels = len(out[key])
    if "data_format" in spec:
        if spec["data_format"] not in DATA_FORMATS:
            raise error(f"{where}: data_format must be one of {', '.join(DATA_FORMATS)}")
        out["data_format"] = spec["data_format"]
    if "resample" in spec:
        out["resample"] = _resample(spec["resample"], where, error)
    if out.get("do_rescale") and "rescale_factor" not in out:
        out["rescale_factor"] = DEFAULT_RESCALE  # Hugging Face's default, written down
    if (
        not manifest
        and _runs(out, "do_normalize", "image_mean")
        and not ("do_rescale" in out or "rescale_factor" in out)
    ):
        raise error(
            f"{where} normalizes but does not say whether pixels are rescaled first",
            hint='add "do_rescale": True (0-255 -> 0-1, as Hugging Face does by default) or '
            '"do_rescale": False',
        )
    if out.get("do_resize") and "size" not in out:
        raise error(f"{where}: do_resize needs size")
    if out.get("do_center_crop") and "crop_size" not in out:
        raise error(f"{where}: do_center_crop needs crop_size")
    normalizes = _runs(out, "do_normalize", "image_mean")
    if normalizes and not ("image_mean" in out and "image_std" in out):
        raise error(f"{where}: do_normalize needs image_mean and image_std")
    if out.get("do_convert_rgb") and out.get("do_convert_grayscale"):
        raise error(f"{where}: do_convert_rgb and do_convert_grayscale exclude each other")
    return out


def _resample(value: Any, where: str, error: type[PersistkitError]) -> int:
    if isinstance(value, str) and value.lower() in RESAMPLE:
        return RESAMPLE[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in RESAMPLE.values():
        return value
    raise error(
        f"{where}: resample must be one of {', '.join(RESAMPLE)} or their numbers 0-5",
        hint="Hugging Face configs write 2 (bilinear) or 3 (bicubic)",
    )


def _size(value: Any, key: str, where: str, error: type[Exception]) -> dict[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"height": value, "width": value}
    if not isinstance(value, dict) or tuple(sorted(value)) not in (
        tuple(sorted(k)) for k in _SIZE_KEYS
    ):
        raise error(f'{where}: {key} must be {{"height": H, "width": W}} or {{"shortest_edge": S}}')
    for side in value.values():
        if isinstance(side, bool) or not isinstance(side, int) or not 0 < side <= MAX_SIDE:
            raise error(f"{where}: {key} sides must be whole numbers from 1 to {MAX_SIDE}")
    return dict(value)


def _number(value: Any, key: str, where: str, error: type[Exception]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise error(f"{where}: {key} must be a finite number")
    return float(value)


# --- the pipeline --------------------------------------------------------------------------


def _runs(spec: dict[str, Any], flag: str, setting: str) -> bool:
    """A step runs when its flag is true, or is absent and the step's setting is given."""
    return bool(spec.get(flag, setting in spec))


@dataclass(frozen=True)
class Steps:
    """Which steps of a checked spec run (see the module's documentation)."""

    resize: bool
    crop: bool
    rescale: bool
    normalize: bool

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Steps:
        return cls(
            resize=_runs(spec, "do_resize", "size"),
            crop=_runs(spec, "do_center_crop", "crop_size"),
            rescale=_runs(spec, "do_rescale", "rescale_factor"),
            normalize=_runs(spec, "do_normalize", "image_mean"),
        )


def colour_mode(spec: dict[str, Any], default: str) -> str:
    """The Pillow mode a picture is converted to: ``"RGB"``/``"L"`` as the spec says, else
    ``default`` (what the signature's channels say)."""
    if spec.get("do_convert_rgb"):
        return "RGB"
    if spec.get("do_convert_grayscale"):
        return "L"
    return default


def resized_size(width: int, height: int, size: dict[str, int]) -> tuple[int, int]:
    """The (width, height) a resize to ``size`` gives; ``shortest_edge`` keeps the aspect
    ratio, the long side truncated as Hugging Face's ``get_resize_output_image_size`` does."""
    if "shortest_edge" in size:
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)
    return size["width"], size["height"]


def resize(image: Any, spec: dict[str, Any]) -> Any:
    """The Pillow ``image`` resized as ``spec["size"]`` says, with ``spec``'s filter."""
    target = resized_size(image.width, image.height, spec["size"])
    if target == image.size:
        return image
    return image.resize(target, spec.get("resample", DEFAULT_RESAMPLE))


def center_crop(pixels: np.ndarray, crop: dict[str, int]) -> np.ndarray:
    """The middle ``crop`` of ``pixels`` (H, W, C), zero-padded where the picture is smaller
    (Hugging Face's ``center_crop``: the top-left offset is rounded down)."""
    import numpy as np

    height, width = pixels.shape[:2]
    want_h, want_w = crop["height"], crop["width"]
    new_h, new_w = max(height, want_h), max(width, want_w)
    if (new_h, new_w) != (height, width):
        padded = np.zeros((new_h, new_w, *pixels.shape[2:]), dtype=pixels.dtype)
        pad_top, pad_left = math.ceil((new_h - height) / 2), math.ceil((new_w - width) / 2)
        padded[pad_top : pad_top + height, pad_left : pad_left + width] = pixels
        top, left = (height - want_h) // 2 + pad_top, (width - want_w) // 2 + pad_left
        pixels = padded
    else:
        top, left = (height - want_h) // 2, (width - want_w) // 2
    top, left = max(0, top), max(0, left)
    return pixels[top : top + want_h, left : left + want_w]


def rescale_and_normalize(
    pixels: np.ndarray, spec: dict[str, Any], steps: Steps, *, source: str
) -> np.ndarray:
    """Pixels (H, W, C) as float64 after rescaling and normalizing; unchanged (0–255
    integers) when neither step runs."""
    import numpy as np

    if not (steps.rescale or steps.normalize):
        return pixels
    values = pixels.astype(np.float64)
    if steps.rescale:
        values = values * spec["rescale_factor"]
    if steps.normalize:
        mean = np.asarray(spec["image_mean"], dtype=np.float64)
        std = np.asarray(spec["image_std"], dtype=np.float64)
        channels = values.shape[-1]
        if len(mean) not in (1, channels):
            raise InputError(
                f"{source} has {channels} colour channel(s) but the preprocess record "
                f"normalizes {len(mean)}",
                hint="save the model with image_mean/image_std of one value per channel",
            )
        values = (values - mean) / std
    return values


def lay_out(pixels: np.ndarray, data_format: str | None, layout: str) -> np.ndarray:
    """Pixels (H, W, C) in the layout the spec (``data_format``) or else the signature
    (``"HW"``, ``"HWC"``, ``"CHW"``, ``"flat"``) asks for."""
    import numpy as np

    if data_format == "channels_first" or (data_format is None and layout == "CHW"):
        return np.transpose(pixels, (2, 0, 1))
    if data_format == "channels_last":
        return pixels
    if layout == "flat":
        return pixels.reshape(-1)
    if layout == "HW" and pixels.shape[-1] == 1:
        return pixels[:, :, 0]
    return pixels
