"""Small immutable records that plugins hand to the core and the core hands to users."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from persistkit.manifest import Manifest


@dataclass(frozen=True)
class BackendInfo:
    """What a plugin declares about one serialization format.

    ``safe`` means loading a payload of this backend never runs code from the payload.
    ``restricted`` means the backend loads untrusted payloads only through
    :mod:`persistkit.safety` (an allow-list), so the core may hand it untrusted artifacts;
    a backend that is neither is only given artifacts the user trusts.
    ``requires`` are importable module names; when one is missing the backend is listed as
    unavailable and ``extra`` names what to install (``pip install "persistkit[EXTRA]"``).
    ``suffixes`` are file-name endings of bare files (no manifest) this backend can read,
    each starting with a dot (``".joblib"``): a name without a dot is never taken for a file.
    ``append_only`` promises that ``save`` writes each file front to back and never seeks back
    to patch it, so the core may hash files while they are being written (much faster saves);
    leave it ``False`` for formats that patch headers in place (e.g. zip via ``zipfile``).
    ``save_options`` and ``load_options`` name the keyword options the backend takes at save
    and at load; ``save``/``load`` refuse any other before doing any work. ``None`` (a plugin
    that does not declare them) passes every option through unchecked.
    ``converts`` says the payload re-expresses the model's computation rather than storing
    the object (a traced graph, ONNX): ``save`` then requires ``example=``, hands it to the
    backend, reloads the written payload and compares its predictions on the example with the
    model's own before publishing. ``tolerance`` is ``(rtol, atol)`` for that comparison
    (``numpy.allclose`` terms) where the format's kernels differ in float rounding; ``None``
    demands identical outputs.
    """

    name: str
    description: str = ""
    safe: bool = False
    restricted: bool = False
    requires: tuple[str, ...] = ()
    extra: str | None = None
    suffixes: tuple[str, ...] = ()
    append_only: bool = False
    plugin: str = ""
    save_options: tuple[str, ...] | None = None
    load_options: tuple[str, ...] | None = None
    converts: bool = False
    tolerance: tuple[float, float] | None = None

    @property
    def available(self) -> bool:
        """True when every module in ``requires`` can be imported (checked without importing)."""
        return all(_module_exists(name) for name in self.requires)

    @property
    def install_hint(self) -> str:
        if self.extra:
            return f'pip install "persistkit[{self.extra}]"'
        return "pip install " + " ".join(self.requires)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class Recommendation:
    """An adapter's vote for a backend: higher ``score`` wins; ``reason`` goes in the manifest."""

    backend: str
    score: int
    reason: str = ""


@dataclass(frozen=True)
class Artifact:
    """A saved model: where it lives and what its manifest says."""

    uri: str
    path: Path
    manifest: Manifest
    name: str | None = None
    version: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return self.manifest.backend

    def __str__(self) -> str:
        return self.uri
