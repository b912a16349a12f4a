"""A Hugging Face ``config.json``, read as untrusted data: what it may name, and the model
class it builds.

The rules: the architecture is a class that the ``transformers`` package itself exports (looked
up on the top-level package only, never by a dotted path), and a subclass of
``PreTrainedModel``; a config that asks for the folder's own code (``auto_map``, what
``trust_remote_code`` would run) is refused whatever the trust; keys that would make building
the model fetch something or pick a kernel from the Hub are refused or dropped.
"""

from __future__ import annotations

import json
import re
from typing import Any

from persistkit.errors import FormatError, Remedy, UntrustedArtifactError

CONFIG = "config.json"
MAX_CONFIG_BYTES = 16 * 1024 * 1024
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}\Z")
# keys the build would act on beyond shapes: attention/expert kernels (a Hub kernel is code
# fetched at run time) are left to transformers' built-in default
_DROPPED_KEYS = (
    "attn_implementation",
    "_attn_implementation",
    "experts_implementation",
    "_experts_implementation",
)


class NoRemoteCode(Remedy):
    """What to do about a folder whose model is not one of transformers' own classes:
    persistkit never runs such code, trusted or not, so trusting it is no remedy."""

    def render(self, interface: Any) -> str:
        return (
            "persistkit builds only models that transformers itself defines and never runs "
            "a model folder's own code (trust_remote_code); if you trust this folder, load "
            "it with transformers yourself and save that model with persistkit.save"
        )


def parse_config(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw`` (a ``config.json``), or a :class:`FormatError`."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise FormatError(f"{CONFIG} is {len(raw)} bytes, over the {MAX_CONFIG_BYTES} limit")
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FormatError(
            f"{CONFIG} is not valid JSON: {exc}",
            hint="the folder is damaged; save the model again with save_pretrained",
        ) from None
    if not isinstance(config, dict):
        raise FormatError(f"{CONFIG} holds a {type(config).__name__}, not a JSON object")
    return config


def looks_like_config(config: dict[str, Any]) -> bool:
    """A Hugging Face model config: it names ``architectures`` or a ``model_type``."""
    return isinstance(config.get("model_type"), str) or isinstance(
        config.get("architectures"), list
    )


def checked_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` fit to build from, after refusing what it may not ask for."""
    _refuse_remote_code(config)
    if config.get("quantization_config") is not None:
        raise FormatError(
            f"{CONFIG} describes a quantized model (quantization_config), which persistkit "
            "does not load",
            hint="load it with transformers and its quantization library",
        )
    return _cleaned(config)


def _refuse_remote_code(value: Any, where: str = CONFIG) -> None:
    """``auto_map`` anywhere (sub-configs too) names the folder's own Python code."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("auto_map", "custom_pipelines", "trust_remote_code"):
                raise UntrustedArtifactError(
                    f"refusing to load: {where} has {key!r}, so this model needs the "
                    "folder's own Python code (trust_remote_code), which persistkit never runs",
                    remedies=(NoRemoteCode(),),
                )
            _refuse_remote_code(inner, where)
    elif isinstance(value, list):
        for inner in value:
            _refuse_remote_code(inner, where)


def _cleaned(value: Any) -> Any:
    """``value`` without kernel choices, and with pretrained backbones off: the weights come
    from the folder, and building must fetch nothing."""
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _cleaned(v) for k, v in value.items() if k not in _DROPPED_KEYS}
    if "use_pretrained_backbone" in out:
        out["use_pretrained_backbone"] = False
    backbone = out.get("backbone")
    fetched = isinstance(backbone, str) and not out.get("use_timm_backbone")
    if fetched and out.get("backbone_config") is None:
        raise FormatError(
            f"{CONFIG} names the backbone {str(backbone)[:100]!r} to fetch from the Hub "
            "instead of describing it (backbone_config), and persistkit fetches nothing",
            hint="save the model with save_pretrained from a transformers version that "
            "writes backbone_config",
        )
    return out


def architecture_name(config: dict[str, Any]) -> str | None:
    """The one architecture ``config`` names (``None`` when it names none)."""
    names = config.get("architectures")
    if names is None:
        return None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise FormatError(
            f"{CONFIG}'s architectures must be a list of class names, not {str(names)[:80]}"
        )
    if len(set(names)) > 1:
        raise FormatError(
            f"{CONFIG} names several architectures ({', '.join(names[:5])}); persistkit "
            "builds a folder's one model class",
        )
    return names[0]


def model_class(name: str) -> Any:
    """The class ``transformers.<name>``, which must be a ``PreTrainedModel`` that
    transformers itself defines; anything else is refused (never imported by a path)."""
    import transformers

    found = None
    if _NAME.match(name):
        try:
            found = getattr(transformers, name, None)
        except Exception:  # an optional dependency of that model's module is missing
            found = None
    if not (
        isinstance(found, type)
        and issubclass(found, transformers.PreTrainedModel)
        and found is not transformers.PreTrainedModel
        and getattr(found, "config_class", None) is not None
        and found.__module__.startswith("transformers.")
    ):
        raise UntrustedArtifactError(
            f"refusing to load: {CONFIG} names the architecture {name[:100]!r}, which is not a "
            f"model class of transformers {transformers.__version__}",
            remedies=(NoRemoteCode(),),
        )
    return found


def build_config(cls: Any, config: dict[str, Any]) -> Any:
    """``cls``'s own config class, from ``config`` (whose ``model_type`` must match it)."""
    config_class = cls.config_class
    wanted = getattr(config_class, "model_type", "") or ""
    model_type = config.get("model_type")
    if wanted and model_type is not None and model_type != wanted:
        raise FormatError(
            f"{CONFIG} says model_type {str(model_type)[:60]!r}, but its architecture "
            f"{cls.__name__} takes {wanted!r}",
            hint="the config is damaged or was edited; save the model again",
        )
    try:
        return config_class.from_dict(config)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise FormatError(
            f"{CONFIG} does not make a valid {config_class.__name__}: {exc}",
            hint="the config is damaged or needs another transformers version",
        ) from None


def auto_config(config: dict[str, Any]) -> Any:
    """The config of a folder that names only a ``model_type`` (no architecture)."""
    from transformers import AutoConfig

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not _NAME.match(model_type.replace("-", "_")):
        raise FormatError(f"{CONFIG} names no architecture and no valid model_type")
    kwargs = {k: v for k, v in config.items() if k != "model_type"}
    try:
        return AutoConfig.for_model(model_type, **kwargs)
    except (ValueError, TypeError, KeyError) as exc:
        raise UntrustedArtifactError(
            f"refusing to load: {CONFIG}'s model_type {model_type[:60]!r} is not one "
            f"transformers defines ({exc})",
            remedies=(NoRemoteCode(),),
        ) from None
