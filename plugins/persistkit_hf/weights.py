"""The weights of a Hugging Face folder, read from the opened and checked files.

``model.safetensors``, or ``model.safetensors.index.json`` and the shards it names (each must
be a file of the folder: the index maps tensor names to shard file names, and a name that is
not one of the listed files, such as ``../x.safetensors``, is refused). Each safetensors file is
checked by persistkit's strict header validator before the library maps it.

A folder with only ``pytorch_model.bin`` (a ``torch.save`` pickle, possibly sharded the same
way) is read by persistkit's restricted torch reader (``policy.load_torch_payload``: the
allow-list, never ``torch.load``), and must hold nothing but named tensors.
"""

from __future__ import annotations

import json
from typing import Any

from persistkit.errors import FormatError
from persistkit.safety import read_safetensors_header

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
#: the files that make a folder a Hugging Face model folder, preferred first
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, PICKLE, PICKLE_INDEX)
MAX_INDEX_BYTES = 64 * 1024 * 1024
_HINT = "the folder is damaged or incomplete; save the model again with save_pretrained"


def weights_of(files: Any, policy: Any) -> dict[str, Any]:
    """Every tensor of the folder by name, from the first layout present (safetensors
    before pickle, as transformers prefers)."""
    names = set(files.files)
    for single, index in ((SAFETENSORS, SAFETENSORS_INDEX), (PICKLE, PICKLE_INDEX)):
        if single in names:
            return _read_shard(files[single], policy)
        if index in names:
            return _read_sharded(files, index, policy)
    raise FormatError(f"the folder holds no weights: none of {', '.join(WEIGHT_FILES)}", hint=_HINT)


def _read_sharded(files: Any, index: str, policy: Any) -> dict[str, Any]:
    weight_map = _weight_map(files[index].read_bytes(), index)
    tensors: dict[str, Any] = {}
    suffix = ".safetensors" if index == SAFETENSORS_INDEX else ".bin"
    for shard in sorted(set(weight_map.values())):
        if shard not in files.files or not shard.endswith(suffix):
            raise FormatError(
                f"{index} names the shard {shard[:200]!r}, which is not a {suffix} file of "
                "this folder",
                hint="a shard index may name only files beside it",
            )
        wanted = {name for name, where in weight_map.items() if where == shard}
        loaded = _read_shard(files[shard], policy)
        if set(loaded) != wanted:
            stray = sorted(set(loaded) ^ wanted)[:5]
            raise FormatError(
                f"{shard} does not hold the tensors {index} assigns to it "
                f"(differing: {', '.join(stray)})",
                hint=_HINT,
            )
        tensors.update(loaded)
    return tensors


def _weight_map(raw: bytes, index: str) -> dict[str, str]:
    if len(raw) > MAX_INDEX_BYTES:
        raise FormatError(f"{index} is {len(raw)} bytes, over the {MAX_INDEX_BYTES} limit")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{index} is not valid JSON: {exc}", hint=_HINT) from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if (
        not isinstance(weight_map, dict)
        or not weight_map
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items())
    ):
        raise FormatError(f"{index} has no weight_map of tensor names to files", hint=_HINT)
    return weight_map


def _read_shard(payload: Any, policy: Any) -> dict[str, Any]:
    if payload.name.endswith(".safetensors"):
        return _read_safetensors(payload)
    return _read_pickled(payload, policy)


def _read_safetensors(payload: Any) -> dict[str, Any]:
    # the header check and the library's map both read the opened file (the path naming
    # its descriptor), never the folder entry again
    bound = payload.bound_path()
    try:
        read_safetensors_header(bound)
    except FormatError as exc:
        raise FormatError(
            f"{payload.name} is not a valid safetensors file: {exc.message}", hint=_HINT
        ) from None
    from safetensors.torch import load_file

    try:
        return dict(load_file(bound, device="cpu"))
    except Exception as exc:
        if type(exc).__name__ == "SafetensorError" or isinstance(exc, (OSError, ValueError)):
            raise FormatError(f"{payload.name} could not be read: {exc}", hint=_HINT) from None
        raise


def _read_pickled(payload: Any, policy: Any) -> dict[str, Any]:
    import torch

    state = policy.load_torch_payload(payload, map_location="cpu")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise FormatError(
            f"{payload.name} holds a {type(state).__name__}, not a dict of named tensors",
            hint="a Hugging Face weights file holds the model's state dict only",
        )
    return dict(state)


def check_size(model: Any, tensors: dict[str, Any]) -> None:
    """Refuse a config that asks for more weights than the folder holds, before anything is
    allocated: ``model`` is built on the meta device. (Names are checked by the load itself,
    through transformers' own renaming of checkpoint keys.) Tied weights, which
    ``save_pretrained`` leaves out, are not counted."""
    tied = _tied_targets(model)
    state = {k: t for k, t in model.state_dict().items() if k not in tied}
    wanted = sum(t.numel() for t in state.values())
    held = sum(t.numel() for t in tensors.values())
    if wanted > held:
        missing = [k for k in state if k not in tensors]
        named = f": missing {len(missing)} ({', '.join(missing[:5])})" if missing else ""
        raise FormatError(
            f"config.json describes a {type(model).__name__} of {wanted:,} weights, but the "
            f"folder's weight files hold {held:,}{named}",
            hint=_MISMATCH_HINT,
        )


def check_loaded(model: Any, info: dict[str, Any]) -> None:
    """Refuse a load that transformers reports as inexact: a weight it had to initialise
    (missing from the files), a tensor it did not use, one of another shape."""
    parts = []
    for what, key in (
        ("missing", "missing_keys"),
        ("unexpected", "unexpected_keys"),
        ("misshapen", "mismatched_keys"),
        ("failed", "error_msgs"),
    ):
        keys = sorted(str(k) for k in info.get(key) or ())
        if keys:
            parts.append(f"{what} {len(keys)} ({', '.join(keys[:5])})")
    if parts:
        raise FormatError(
            f"the weights do not fit {type(model).__name__}: {'; '.join(parts)}",
            hint=_MISMATCH_HINT,
        )


_MISMATCH_HINT = (
    "the folder's weights and config.json are from different models, or the folder is "
    "incomplete; save the model again with save_pretrained"
)


def _tied_targets(model: Any) -> set[str]:
    """The parameter names transformers fills by tying (not stored by ``save_pretrained``)."""
    expanded = getattr(model, "all_tied_weights_keys", None)  # transformers 5
    if isinstance(expanded, dict):
        return set(expanded)
    if not getattr(model.config, "tie_word_embeddings", False):
        return set()
    names = getattr(model, "_tied_weights_keys", None) or []  # transformers 4: names
    state = set(model.state_dict())
    return {n for n in names if n in state}
