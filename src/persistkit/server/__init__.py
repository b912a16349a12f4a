"""``persistkit serve``: saved models over the Open Inference Protocol V2 REST API.

:mod:`~persistkit.server.repository` loads the models once, :mod:`~persistkit.server.protocol`
turns request bodies (JSON or binary tensors) into arrays and predictions into responses,
:mod:`~persistkit.server.app` routes HTTP requests (Starlette) and serves the upload page.
"""

from __future__ import annotations

from persistkit.server.app import create_app
from persistkit.server.repository import ModelRepository, ServedModel

__all__ = ["ModelRepository", "ServedModel", "create_app"]
