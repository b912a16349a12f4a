"""gRPC tensors <-> numpy (persistkit.server.grpc_tensors): every datatype, raw and typed, with
the same refusals as REST bodies."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from persistkit.errors import InputError
from persistkit.server import proto
from persistkit.server.grpc_tensors import CONTENTS_FIELD, decode_inputs, encode_response
from persistkit.server.protocol import _to_binary
from persistkit.signature import DATATYPES, numpy_dtype

NUMERIC = [d for d in DATATYPES if d != "BYTES"]


def sample(datatype: str) -> np.ndarray:
    """A 2x3 array of ``datatype`` with values near its limits where it has them."""
    dtype = numpy_dtype(datatype)
    if dtype.kind == "b":
        return np.array([[True, False, True], [False, False, True]])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, 0, 1], [2, info.max - 1, info.max]], dtype=dtype)
    return np.array([[-1.5, 0.0, 0.25], [3.0, 1e3, -7.125]], dtype=dtype)


def request_with(array: np.ndarray, datatype: str, *, raw: bool) -> Any:
    request = proto.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=list(array.shape))
    if raw:
        request.raw_input_contents.append(_to_binary(array, datatype))
    else:
        getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(array.ravel().tolist())
    return request


@pytest.mark.parametrize("datatype", NUMERIC)
def test_raw_inputs_decode_to_their_datatype(datatype: str) -> None:
    array = sample(datatype)
    decoded = decode_inputs(request_with(array, datatype, raw=True))["x"]
    assert decoded.dtype == numpy_dtype(datatype)
    assert np.array_equal(decoded, array)


@pytest.mark.parametrize("datatype", [d for d in NUMERIC if d in CONTENTS_FIELD])
def test_typed_inputs_decode_to_their_datatype(datatype: str) -> None:
    array = sample(datatype)
    decoded = decode_inputs(request_with(array, datatype, raw=False))["x"]
    assert decoded.dtype == numpy_dtype(datatype)
    assert np.array_equal(decoded, array)


@pytest.mark.parametrize("raw", [True, False])
def test_bytes_inputs_decode_to_str_when_utf8_else_bytes(raw: bool) -> None:
    texts = np.array(["ab", "ñ"], dtype=object)
    request = proto.ModelInferRequest()
    tensor = request.inputs.add(name="t", datatype="BYTES", shape=[2])
    picture = proto.ModelInferRequest()
    other = picture.inputs.add(name="p", datatype="BYTES", shape=[1])
    if raw:
        request.raw_input_contents.append(_to_binary(texts, "BYTES"))
        picture.raw_input_contents.append(_to_binary(np.array([b"\x89PNG\xff"], object), "BYTES"))
    else:
        tensor.contents.bytes_contents.extend([t.encode() for t in texts])
        other.contents.bytes_contents.append(b"\x89PNG\xff")
    assert decode_inputs(request)["t"].tolist() == ["ab", "ñ"]
    assert decode_inputs(picture)["p"].tolist() == [b"\x89PNG\xff"]


def test_fp16_has_no_typed_contents() -> None:
    request = proto.ModelInferRequest()
    request.inputs.add(name="x", datatype="FP16", shape=[1]).contents.fp32_contents.append(1.0)
    with pytest.raises(InputError, match="FP16, which has no typed contents"):
        decode_inputs(request)


def test_a_small_integer_past_its_range_is_refused_not_wrapped() -> None:
    request = proto.ModelInferRequest()
    request.inputs.add(name="x", datatype="INT8", shape=[2]).contents.int_contents.extend([1, 300])
    with pytest.raises(InputError, match="values outside the range of INT8"):
        decode_inputs(request)


def test_values_in_another_datatypes_field_are_refused() -> None:
    request = proto.ModelInferRequest()
    request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp64_contents.append(1.0)
    with pytest.raises(InputError, match="is FP32 but its values are in fp64_contents"):
        decode_inputs(request)


def test_raw_and_typed_values_for_one_input_are_refused() -> None:
    request = request_with(sample("FP32"), "FP32", raw=True)
    request.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(InputError, match="both raw_input_contents and typed contents"):
        decode_inputs(request)


def test_raw_contents_must_match_the_inputs_one_to_one() -> None:
    request = request_with(sample("FP32"), "FP32", raw=True)
    request.inputs.add(name="y", datatype="FP32", shape=[1])
    with pytest.raises(InputError, match="1 raw_input_contents for 2 inputs"):
        decode_inputs(request)


@pytest.mark.parametrize(
    ("shape", "message"),
    [([-1, 3], "invalid size '-1'"), ([2**30, 2**30, 2**30], "more than 1099511627776 values")],
)
def test_a_shape_is_bounded_as_in_rest(shape: list[int], message: str) -> None:
    request = proto.ModelInferRequest()
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    request.raw_input_contents.append(b"")
    with pytest.raises(InputError, match=message):
        decode_inputs(request)


def test_an_input_named_twice_is_refused() -> None:
    request = proto.ModelInferRequest()
    for _ in range(2):
        request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1)
    with pytest.raises(InputError, match="input 'x' appears twice"):
        decode_inputs(request)


@pytest.mark.parametrize("raw", [True, False])
def test_outputs_encode_raw_or_typed_as_asked(raw: bool) -> None:
    labels = np.array(["cat", "dog"], dtype=object)
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    response = proto.ModelInferResponse()
    encode_response(response, [("label", labels), ("scores", scores)], raw=raw)
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("label", "BYTES", [2]),
        ("scores", "FP64", [2, 2]),
    ]
    if raw:
        assert response.raw_output_contents[0] == b"\3\0\0\0cat\3\0\0\0dog"
        assert np.frombuffer(response.raw_output_contents[1], "<f8").tolist() == [
            0.9,
            0.1,
            0.2,
            0.8,
        ]
    else:
        assert len(response.raw_output_contents) == 0
        assert list(response.outputs[0].contents.bytes_contents) == [b"cat", b"dog"]
        assert list(response.outputs[1].contents.fp64_contents) == [0.9, 0.1, 0.2, 0.8]


def test_an_fp16_output_makes_the_whole_answer_raw() -> None:
    response = proto.ModelInferResponse()
    halves = np.array([1.5, -2.0], dtype=np.float16)
    encode_response(response, [("a", np.array([1, 2])), ("b", halves)], raw=False)
    assert len(response.raw_output_contents) == 2
    assert np.frombuffer(response.raw_output_contents[1], "<f2").tolist() == [1.5, -2.0]
