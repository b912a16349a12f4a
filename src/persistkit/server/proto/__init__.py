"""The Open Inference Protocol's gRPC messages (package ``inference``), built when this module
is imported from the descriptor compiled out of ``grpc_predict_v2.proto``.

The classes live in a descriptor pool of their own, never protobuf's default pool: a process
that also imports a client generated from the same specification (``tritonclient.grpc``
registers its own ``inference.*`` messages there) gets no duplicate-symbol conflict. Building
from a descriptor instead of shipping protoc's generated ``*_pb2.py`` keeps the package free of
the gencode/runtime version check, so any protobuf >= 5.26 runs it.

Needs the ``grpc`` extra (``protobuf``); imported only when ``persistkit serve --grpc-port``
is used.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool, message_factory

from persistkit.server.proto._descriptor import SERIALIZED

#: the full name of the service, as clients call it: /inference.GRPCInferenceService/METHOD
SERVICE = "inference.GRPCInferenceService"

_POOL = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(SERIALIZED)


def _message(name: str) -> Any:
    """The message class ``inference.<name>`` (dynamic, hence ``Any`` to type checkers)."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"inference.{name}"))


ServerLiveRequest = _message("ServerLiveRequest")
ServerLiveResponse = _message("ServerLiveResponse")
ServerReadyRequest = _message("ServerReadyRequest")
ServerReadyResponse = _message("ServerReadyResponse")
ModelReadyRequest = _message("ModelReadyRequest")
ModelReadyResponse = _message("ModelReadyResponse")
ServerMetadataRequest = _message("ServerMetadataRequest")
ServerMetadataResponse = _message("ServerMetadataResponse")
ModelMetadataRequest = _message("ModelMetadataRequest")
ModelMetadataResponse = _message("ModelMetadataResponse")
InferTensorContents = _message("InferTensorContents")
ModelInferRequest = _message("ModelInferRequest")
ModelInferResponse = _message("ModelInferResponse")
RepositoryIndexResponse = _message("RepositoryIndexResponse")
RepositoryModelLoadResponse = _message("RepositoryModelLoadResponse")
RepositoryModelUnloadResponse = _message("RepositoryModelUnloadResponse")

#: method name -> (request class, response class), in the .proto's order
METHODS: dict[str, tuple[Any, Any]] = {
    method.name: (
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
    )
    for method in _POOL.FindServiceByName(SERVICE).methods
}
