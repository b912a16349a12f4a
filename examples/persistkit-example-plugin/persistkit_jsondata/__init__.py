"""An example third-party persistkit plugin: a safe JSON backend for plain data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import persistkit
from persistkit import Backend, BackendInfo, Manifest, Recommendation
from persistkit.errors import CannotSaveError, FormatError


class JsonDataBackend(Backend):
    info = BackendInfo(
        "jsondata",
        description="plain JSON data (example third-party plugin)",
        safe=True,
        suffixes=(".json",),
    )
    file_name = "data.json"

    def can_save(self, model: Any) -> bool:
        try:
            json.dumps(model)
        except (TypeError, ValueError):
            return False
        return True

    def save(self, model: Any, path: Path, options: dict[str, Any]) -> None:
        try:
            path.write_text(json.dumps(model, indent=options.get("indent")))
        except (TypeError, ValueError) as exc:
            raise CannotSaveError(
                f"jsondata can only store plain JSON data: {exc}",
                hint='use backend="pickle" for other Python objects',
            ) from None

    def load(self, path: Path, manifest: Manifest, options: dict[str, Any], policy: Any) -> Any:
        try:
            return json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"{path.name} is not valid JSON: {exc}") from None

    @persistkit.hookimpl
    def persistkit_recommend(self, model: Any) -> list[Recommendation] | None:
        if isinstance(model, (dict, list)) and self.can_save(model):
            return [Recommendation("jsondata", 20, "plain data is safest as JSON")]
        return None


plugin = JsonDataBackend()
