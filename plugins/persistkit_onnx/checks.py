"""What an ONNX file must be before onnxruntime sees it.

ONNX files hold a graph of named operators and tensors, no Python code. What a file can still
do is point outside itself: a tensor whose bytes live in another file (``data_location =
EXTERNAL``, with a ``location`` that could be any path, read relative to the folder of the
process when the model comes from bytes), and operators from a domain only a native library
registered with onnxruntime implements. Both are refused here with an error that says so;
persistkit writes neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from persistkit.errors import FormatError

#: an ONNX model is one protobuf message, which cannot exceed 2 GiB; larger models keep their
#: weights in external files, which persistkit does not load
MAX_ONNX_BYTES = 2**31 - 1

#: operator domains onnxruntime's CPU build implements itself (no library to register)
RUNTIME_DOMAINS = frozenset(
    {
        "",
        "ai.onnx",
        "ai.onnx.ml",
        "ai.onnx.preview.training",
        "ai.onnx.training",
        "com.microsoft",
        "com.microsoft.experimental",
        "com.microsoft.nchwc",
        "com.ms.internal.nhwc",
    }
)

_DAMAGED_HINT = "the file is truncated or damaged; restore it or save the model again"


def check_size(name: str, size: int) -> None:
    """Refuse a file too large to be a self-contained ONNX model, before reading it."""
    if size > MAX_ONNX_BYTES:
        raise FormatError(
            f"{name} is {size} bytes, more than a self-contained ONNX model can be (2 GiB)",
            hint="persistkit loads ONNX files whose weights are inside the file",
        )
    if size == 0:
        raise FormatError(f"{name} is empty, not an ONNX model", hint=_DAMAGED_HINT)


def parse_model(name: str, data: bytes) -> Any:
    """The ``onnx.ModelProto`` in ``data``; a :class:`FormatError` when it is not one."""
    import onnx
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise FormatError(
            f"{name} is not a readable ONNX model: {exc or type(exc).__name__}",
            hint=_DAMAGED_HINT,
        ) from None
    # protobuf reads a message cut at a field boundary without complaint: a model needs
    # an IR version, a graph and at least one output
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.output:
        raise FormatError(
            f"{name} is not a complete ONNX model (no IR version, graph or outputs)",
            hint=_DAMAGED_HINT,
        )
    return model


def check_self_contained(name: str, model: Any) -> None:
    """Refuse tensors stored outside the file (``external data``) and operators from domains
    onnxruntime cannot run without a registered native library."""
    import onnx

    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise FormatError(
                f"{name} keeps the bytes of tensor {tensor.name!r} in another file "
                f"({location!r}); persistkit loads only ONNX files that hold all their "
                "weights (a reference to another file could read any file the process can)",
                hint="if you trust it, inline the weights: onnx.save(onnx.load(path), "
                "new_path, save_as_external_data=False) (models under 2 GiB)",
            )
    local = {f.domain for f in model.functions}
    foreign = sorted({o.domain for o in model.opset_import} - RUNTIME_DOMAINS - local)
    if foreign:
        raise FormatError(
            f"{name} uses operators from the domain(s) {', '.join(foreign)}, which "
            "onnxruntime runs only with a native custom-operator library registered",
            hint="export the model with standard ONNX operators only",
        )


def opsets_of(model: Any) -> dict[str, int]:
    """The operator set version of each domain the model imports (``""`` as ``ai.onnx``)."""
    return {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}


def _all_tensors(model: Any) -> Iterator[Any]:
    """Every tensor the model holds: graph initializers (dense and sparse), node attributes
    (dense and sparse, in subgraphs too), functions' nodes and default attributes, and the
    training-info graphs."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)
        yield from _attribute_tensors(function.attribute_proto)
    for info in model.training_info:
        for graph in (info.initialization, info.algorithm):
            yield from _graph_tensors(graph)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Any) -> Iterator[Any]:
    """Tensors held in node attributes, also inside subgraphs (If branches, Loop bodies);
    protobuf's own nesting limit bounds the recursion."""
    for node in nodes:
        yield from _attribute_tensors(node.attribute)


def _attribute_tensors(attributes: Any) -> Iterator[Any]:
    """Tensors held in attributes: dense and sparse ones (a sparse ``Constant`` value reads
    its external bytes like an initializer), and those in subgraphs."""
    for attribute in attributes:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        sparse = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
        for tensor in [*sparse, *attribute.sparse_tensors]:
            yield tensor.values
            yield tensor.indices
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)
