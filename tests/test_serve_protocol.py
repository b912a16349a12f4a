"""The Open Inference Protocol codec on its own: request bodies to arrays, arrays to
responses (JSON and binary), text tensors (BYTES) both ways."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from persistkit.errors import InputError
from persistkit.server.protocol import build_response, check_inputs, parse_infer_request
from persistkit.signature import Signature, TensorSpec


def binary_body(inputs: list[tuple[str, str, list[int], bytes]]) -> tuple[bytes, str]:
    header = json.dumps(
        {
            "inputs": [
                {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}}
                for n, d, s, b in inputs
            ]
        }
    ).encode()
    return header + b"".join(b for *_, b in inputs), str(len(header))


def bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def test_binary_inputs_are_read_in_order_from_after_the_header() -> None:
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    b = np.array([[1, -2]], dtype="<i8")
    body, length = binary_body(
        [("a", "FP32", [2, 3], a.tobytes()), ("b", "INT64", [1, 2], b.tobytes())]
    )
    request = parse_infer_request(body, length)
    assert np.array_equal(request.inputs["a"], a) and np.array_equal(request.inputs["b"], b)


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "-1", "twelve"])
def test_a_header_length_that_is_not_ascii_digits_is_a_bad_request(value: str) -> None:
    # "²".isdigit() is true but int("²") fails: that was a 500
    with pytest.raises(InputError, match="Inference-Header-Content-Length"):
        parse_infer_request(b'{"inputs": []}', value)


def test_binary_inputs_are_writable_arrays() -> None:
    body, length = binary_body([("a", "FP64", [1], np.ones(1).tobytes())])
    parse_infer_request(body, length).inputs["a"][0] = 5.0  # models may scale in place


def test_binary_bytes_tensor_becomes_text() -> None:
    body, length = binary_body([("t", "BYTES", [2], bytes_elements(b"hello", b"gnome"))])
    assert parse_infer_request(body, length).inputs["t"].tolist() == ["hello", "gnome"]


def test_json_bytes_tensor_becomes_text() -> None:
    body = {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}]}
    assert parse_infer_request(json.dumps(body).encode(), None).inputs["t"].tolist() == [["a", "b"]]


def test_json_integers_out_of_range_are_refused() -> None:
    body = {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}]}
    with pytest.raises(InputError, match="outside the range of UINT8"):
        parse_infer_request(json.dumps(body).encode(), None)


def test_json_booleans_are_not_numbers() -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [True, False]}]}
    with pytest.raises(InputError, match="FP32"):
        parse_infer_request(json.dumps(body).encode(), None)


def test_request_asks_for_binary_outputs_globally_or_per_output() -> None:
    tensor = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}
    everything = {"inputs": [tensor], "parameters": {"binary_data_output": True}}
    one = {"inputs": [tensor], "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    plain = {"inputs": [tensor], "outputs": [{"name": "y"}]}
    assert parse_infer_request(json.dumps(everything).encode(), None).binary_output
    assert parse_infer_request(json.dumps(one).encode(), None).binary_output
    assert not parse_infer_request(json.dumps(plain).encode(), None).binary_output


def test_model_without_signature_takes_any_single_input() -> None:
    array = np.zeros((2, 2))
    assert check_inputs({"whatever": array}, Signature()) is array
    with pytest.raises(InputError, match="one input"):
        check_inputs({"a": array, "b": array}, Signature())


def test_signature_with_free_dimensions_accepts_any_size_there() -> None:
    signature = Signature((TensorSpec("input-0", "UINT8", (-1, -1, -1, 3)),))
    array = np.zeros((1, 17, 9, 3), dtype=np.uint8)
    assert check_inputs({"input-0": array}, signature) is array


def test_binary_response_puts_raw_little_endian_bytes_after_the_header() -> None:
    prediction = np.array([[0.5, 1.5]], dtype=np.float32)
    response = build_response(
        model_name="m", model_version="1", request_id="r", output_name="y",
        prediction=prediction, binary=True,
    )  # fmt: skip
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.body[:length])
    assert header["outputs"][0] == {
        "name": "y", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}
    }  # fmt: skip
    assert response.body[length:] == prediction.astype("<f4").tobytes()


def test_text_predictions_are_bytes_tensors() -> None:
    labels = np.array(["gnome", "not gnome"])
    as_json = build_response(
        model_name="m", model_version="", request_id=None, output_name="y",
        prediction=labels, binary=False,
    )  # fmt: skip
    output = json.loads(as_json.body)["outputs"][0]
    assert (output["datatype"], output["data"]) == ("BYTES", ["gnome", "not gnome"])
    as_binary = build_response(
        model_name="m", model_version="", request_id=None, output_name="y",
        prediction=labels, binary=True,
    )  # fmt: skip
    length = int(as_binary.headers["inference-header-content-length"])
    assert as_binary.body[length:] == bytes_elements(b"gnome", b"not gnome")
