"""The ``hf`` backend and the Hugging Face adapter: ``save_pretrained`` folders in and out.

Backend ``hf``: a folder holding ``config.json`` and the weights in ``model.safetensors`` (or
shards named by ``model.safetensors.index.json``), exactly what
``model.save_pretrained(folder)`` writes, so ``from_pretrained`` loads a persistkit artifact
folder as it is. Reading one back never runs code from the folder: the model class must be one
transformers itself exports (looked up by name on the top-level package), ``auto_map``
(``trust_remote_code``) is refused whatever the trust, the config is read from the opened file
as data, and the weights from the checked files (safetensors through persistkit's header
validator; a ``pytorch_model.bin`` only through the restricted torch reader). The folder's
path is never handed to transformers.

Adapter: ``PreTrainedModel`` instances predict with numpy fed as their main input
(``input_ids``, ``pixel_values``) and answer with their ``logits``; a classifier's
``config.id2label`` is described as its labels. Importing this module imports neither torch
nor transformers.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import persistkit
from persistkit import BackendInfo, Recommendation
from persistkit.errors import CannotSaveError, FormatError
from persistkit_hf import adapter
from persistkit_hf.config import (
    CONFIG,
    MAX_CONFIG_BYTES,
    architecture_name,
    auto_config,
    build_config,
    checked_config,
    looks_like_config,
    model_class,
    parse_config,
)
from persistkit_hf.weights import WEIGHT_FILES, check_loaded, check_size, weights_of

BACKEND = "hf"


class HfPlugin:
    """The ``hf`` backend plus the adapter hooks for ``transformers.PreTrainedModel``."""

    info = BackendInfo(
        BACKEND,
        description="Hugging Face save_pretrained folder: config.json + safetensors (sharded "
        "too); from_pretrained loads it as is; only transformers' own classes load, never "
        "remote code",
        safe=True,
        requires=("transformers", "safetensors", "torch"),
        extra="hf",
        save_options=("max_shard_size",),
        load_options=(),
    )

    # -- backend ------------------------------------------------------------------------------
    @persistkit.hookimpl
    def persistkit_backends(self) -> list[BackendInfo]:
        return [self.info]

    @persistkit.hookimpl
    def persistkit_can_save(self, model: Any, backend: str) -> bool | None:
        if backend != BACKEND:
            return None
        return adapter.is_hf_model(model) and adapter.exported_by_transformers(model)

    @persistkit.hookimpl
    def persistkit_save(
        self, model: Any, backend: str, directory: Path, options: dict[str, Any]
    ) -> list[str] | None:
        if backend != BACKEND:
            return None
        if not (adapter.is_hf_model(model) and adapter.exported_by_transformers(model)):
            raise CannotSaveError(
                f"the hf backend saves models of transformers' own classes, not a "
                f"{type(model).__module__}.{type(model).__qualname__}",
                hint="a subclass defined elsewhere would not load back: save it with "
                'backend="safetensors", or pick another backend',
            )
        kwargs = {}
        if options.get("max_shard_size") is not None:
            kwargs["max_shard_size"] = options["max_shard_size"]
        with _quiet():
            model.save_pretrained(str(directory), **kwargs)
        return sorted(
            p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()
        )

    @persistkit.hookimpl
    def persistkit_sniff(self, path: Path, head: bytes) -> str | None:
        """A folder holding a Hugging Face ``config.json`` and weights (safetensors, or a
        ``pytorch_model.bin`` that the load reads through the restricted torch reader)."""
        if head or not path.is_dir():
            return None
        if not any(_is_file(path / name) for name in WEIGHT_FILES):
            return None
        raw = _read_small(path / CONFIG)
        if raw is None:
            return None
        try:
            return BACKEND if looks_like_config(parse_config(raw)) else None
        except FormatError:
            return None

    @persistkit.hookimpl
    def persistkit_folder_facts(self, backend: str, path: Path) -> dict[str, Any] | None:
        """The folder's ``preprocessor_config.json`` as persistkit's preprocess record, so
        ``persistkit predict FOLDER photo.jpg`` reads pictures as the model expects."""
        if backend != BACKEND:
            return None
        raw = _read_small(path / PREPROCESSOR_CONFIG)
        spec = preprocess_from_hf(raw) if raw is not None else None
        return {"preprocess": spec} if spec is not None else None

    @persistkit.hookimpl
    def persistkit_load(self, backend: str, manifest: Any, policy: Any, files: Any) -> Any | None:
        if backend != BACKEND:
            return None
        if files is None or CONFIG not in files.files:
            raise FormatError(
                f"a Hugging Face folder needs {CONFIG}, and this one has none",
                hint="save the model again with save_pretrained",
            )
        config = checked_config(parse_config(files[CONFIG].read_bytes()))
        tensors = weights_of(files, policy)
        return _build(config, tensors)

    # -- adapter ------------------------------------------------------------------------------
    @persistkit.hookimpl(tryfirst=True)  # before the torch adapter: keyword inputs, logits
    def persistkit_predict(self, model: Any, inputs: Any, options: dict[str, Any]) -> Any | None:
        return adapter.predict(model, inputs, options) if adapter.is_hf_model(model) else None

    @persistkit.hookimpl(tryfirst=True)  # merged last: family "hf" over the torch adapter's
    def persistkit_describe(self, model: Any) -> dict[str, Any] | None:
        return adapter.describe(model) if adapter.is_hf_model(model) else None

    @persistkit.hookimpl
    def persistkit_recommend(self, model: Any) -> list[Recommendation] | None:
        if not (adapter.is_hf_model(model) and adapter.exported_by_transformers(model)):
            return None
        return [
            Recommendation(
                BACKEND,
                90,
                "a transformers model: its save_pretrained folder (config.json + "
                "safetensors), which from_pretrained and persistkit both load, no pickle",
            )
        ]


def _build(config: dict[str, Any], tensors: dict[str, Any]) -> Any:
    """The model ``config`` describes, with ``tensors`` as its weights.

    The class and config come from transformers. A copy built on the meta device first
    must need no more weights than the files hold (a config asking for huge layers
    allocates nothing). Then ``from_pretrained`` gets the config and the tensors as a state
    dict with no path (``None``): it reads no file and fetches nothing
    (``local_files_only``); it renames checkpoint keys, ties and places weights as it always
    does, and any weight it reports missing, unexpected or misshapen refuses the load.
    """
    import torch

    name = architecture_name(config)
    if name is None:
        from transformers import AutoModel

        made = auto_config(config)
        cls = AutoModel._model_mapping[type(made)]  # transformers' own class for that type
        if isinstance(cls, (list, tuple)):
            cls = cls[0]
        model_class(cls.__name__)  # the same check as a named architecture
    else:
        cls = model_class(name)
    try:
        with torch.device("meta"):
            probe = cls._from_config(build_config(cls, config))
    except (ValueError, TypeError, RuntimeError, AttributeError, KeyError) as exc:
        raise FormatError(
            f"{CONFIG} does not build a {cls.__name__}: {type(exc).__name__}: {exc}",
            hint="the config is damaged or needs another transformers version",
        ) from None
    check_size(probe, tensors)
    del probe
    try:
        with _quiet():
            model, info = cls.from_pretrained(
                None,
                config=build_config(cls, config),
                state_dict=tensors,
                output_loading_info=True,
                local_files_only=True,
                trust_remote_code=False,
            )
    except (ValueError, RuntimeError, KeyError) as exc:  # shapes transformers cannot fit
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise FormatError(
            f"the weights do not fit {cls.__name__}: {type(exc).__name__}: {detail}",
            hint="the folder's weights and config.json are from different models",
        ) from None
    check_loaded(model, info)
    return model.eval()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No transformers progress bars while persistkit saves or loads (they would interleave
    with ``persistkit predict``'s output); the user's setting is restored after."""
    from transformers.utils import logging

    was_on = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            logging.enable_progress_bar()


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


PREPROCESSOR_CONFIG = "preprocessor_config.json"
#: keys of an image processor's config that say what it is, not what it does to pixels
_DESCRIPTIVE_KEYS = frozenset(
    {"image_processor_type", "processor_class", "feature_extractor_type", "_processor_class"}
)
#: the keys persistkit's preprocess record reads (see persistkit.preprocess)
_PIXEL_KEYS = frozenset(
    {
        "do_resize", "size", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
        "do_normalize", "image_mean", "image_std", "do_convert_rgb", "resample",
        "data_format",
    }
)


def preprocess_from_hf(raw: bytes) -> dict[str, Any] | None:
    """An image processor's ``preprocessor_config.json`` as a preprocess record: its pixel
    keys, channels first (what transformers' vision models take). ``None`` when it is not
    JSON, or when it asks for a step persistkit does not apply (``crop_pct``, padding, ...):
    then no picture is guessed at, and a picture input fails with the model's own error."""
    import json

    try:
        config = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    unknown = set(config) - _PIXEL_KEYS - _DESCRIPTIVE_KEYS
    if unknown:
        return None
    spec = {k: v for k, v in config.items() if k in _PIXEL_KEYS}
    spec.setdefault("data_format", "channels_first")
    return spec


def _read_small(path: Path) -> bytes | None:
    """A regular file's bytes (not through a link), for recognising the folder only: the
    load reads ``config.json`` again from the opened, checked file."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CONFIG_BYTES:
            return None
        return os.read(fd, MAX_CONFIG_BYTES + 1)
    finally:
        os.close(fd)


plugin = HfPlugin()

__all__ = ["BACKEND", "HfPlugin", "plugin"]
