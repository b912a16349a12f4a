"""How a picture becomes a model input, declared as data (never code).

``save(..., preprocess={...})`` records a spec in the manifest using the keys of Hugging Face
image processors, so people who know those know this:

``do_resize`` / ``size`` (``{"height": H, "width": W}`` or ``{"shortest_edge": S}``),
``do_center_crop`` / ``crop_size`` (``{"height": H, "width": W}``),
``do_rescale`` / ``rescale_factor``, ``do_normalize`` / ``image_mean`` / ``image_std``,
``do_convert_rgb``/``do_convert_grayscale``, and ``data_format`` (``"channels_first"`` or
``"channels_last"``).

Without a spec, pictures are read by the 0–255 rule of :mod:`persistkit.inputs`.
"""

from __future__ import annotations

import math
from typing import Any

from persistkit.errors import InputError, ManifestError

BOOL_KEYS = (
    "do_resize",
    "do_center_crop",
    "do_rescale",
    "do_normalize",
    "do_convert_rgb",
    "do_convert_grayscale",
)
KEYS = (*BOOL_KEYS, "size", "crop_size", "rescale_factor", "image_mean", "image_std",
        "data_format")
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
    if out.get("do_resize") and "size" not in out:
        raise error(f"{where}: do_resize needs size")
    if out.get("do_center_crop") and "crop_size" not in out:
        raise error(f"{where}: do_center_crop needs crop_size")
    if out.get("do_normalize") and not ("image_mean" in out and "image_std" in out):
        raise error(f"{where}: do_normalize needs image_mean and image_std")
    if out.get("do_convert_rgb") and out.get("do_convert_grayscale"):
        raise error(f"{where}: do_convert_rgb and do_convert_grayscale exclude each other")
    return out


def _size(value: Any, key: str, where: str, error: type[Exception]) -> dict[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"height": value, "width": value}
    if not isinstance(value, dict) or tuple(sorted(value)) not in (
        tuple(sorted(k)) for k in _SIZE_KEYS
    ):
        raise error(
            f'{where}: {key} must be {{"height": H, "width": W}} or {{"shortest_edge": S}}'
        )
    for side in value.values():
        if isinstance(side, bool) or not isinstance(side, int) or not 0 < side <= MAX_SIDE:
            raise error(f"{where}: {key} sides must be whole numbers from 1 to {MAX_SIDE}")
    return dict(value)


def _number(value: Any, key: str, where: str, error: type[Exception]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise error(f"{where}: {key} must be a finite number")
    return float(value)
