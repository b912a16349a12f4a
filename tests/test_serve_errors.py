"""Bad requests to `persistkit serve` get a JSON `{"error": ...}` with the right status and
never take the server down (plain HTTP against a real uvicorn server)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

import persistkit
from persistkit.server import ModelRepository, create_app
from serve_helpers import running_server

MAX_BODY = 64 * 1024


def _add_one(x: np.ndarray) -> np.ndarray:
    return np.asarray(x) + 1


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A server with model "plus" (FP32 input shaped (-1, 3)) and a 64 KB body limit."""
    store_dir = tmp_path_factory.mktemp("errors-store")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PERSISTKIT_HOME", str(tmp_path_factory.mktemp("errors-home")))
        persistkit.Store(store_dir).save(
            _add_one, "plus", example=np.zeros((2, 3), dtype=np.float32), backend="pickle"
        )
        repository = ModelRepository(["plus"], store=str(store_dir))
        app = create_app(repository, max_body_bytes=MAX_BODY)
        with running_server(app) as server, httpx.Client(base_url=server.url) as client:
            yield client


def tensor(**overrides: Any) -> dict[str, Any]:
    item = {"name": "input-0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}
    item.update(overrides)
    return {k: v for k, v in item.items() if v is not None}


def infer(http: httpx.Client, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post("/v2/models/plus/infer", content=content, **kwargs)


def assert_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert fragment in body["error"]


def binary_request(array: np.ndarray, *, datatype: str, shape: list[int]) -> tuple[bytes, str]:
    raw = array.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return header + raw, str(len(header))


def test_a_good_request_works(http: httpx.Client) -> None:
    response = infer(http, {"inputs": [tensor()]})
    assert response.json()["outputs"][0]["data"] == [2, 3, 4]


def test_wrong_shape_is_400(http: httpx.Client) -> None:
    response = infer(http, {"inputs": [tensor(shape=[1, 4], data=[1, 2, 3, 4])]})
    assert_error(response, 400, "has shape [1, 4] but the model takes [-1, 3]")


def test_wrong_datatype_is_400(http: httpx.Client) -> None:
    response = infer(http, {"inputs": [tensor(datatype="INT32")]})
    assert_error(response, 400, "INT32 but the model takes FP32")


def test_unknown_datatype_is_400(http: httpx.Client) -> None:
    assert_error(infer(http, {"inputs": [tensor(datatype="FLOAT")]}), 400, "not an OIP datatype")


def test_text_data_for_a_number_input_is_400(http: httpx.Client) -> None:
    response = infer(http, {"inputs": [tensor(data=["a", "b", "c"])]})
    assert_error(response, 400, "holds text values")


def test_too_few_values_for_the_shape_is_400(http: httpx.Client) -> None:
    response = infer(http, {"inputs": [tensor(shape=[2, 3])]})
    assert_error(response, 400, "(6 values) but 3 values of data")


def test_ragged_data_is_400(http: httpx.Client) -> None:
    response = infer(http, {"inputs": [tensor(shape=[2, 3], data=[[1, 2, 3], [4, 5]])]})
    assert_error(response, 400, "not a regular")


def test_binary_data_of_the_wrong_size_is_400(http: httpx.Client) -> None:
    body, length = binary_request(np.zeros(5, dtype=np.float32), datatype="FP32", shape=[2, 3])
    response = infer(http, body, headers={"Inference-Header-Content-Length": length})
    assert_error(response, 400, "24 bytes) but 20 bytes of data")


def test_binary_request_works_and_matches_json(http: httpx.Client) -> None:
    body, length = binary_request(
        np.array([[1.5, 2, 3]], dtype=np.float32), datatype="FP32", shape=[1, 3]
    )
    response = infer(http, body, headers={"Inference-Header-Content-Length": length})
    assert response.json()["outputs"][0]["data"] == [2.5, 3, 4]


def test_header_length_beyond_the_body_is_400(http: httpx.Client) -> None:
    response = infer(
        http, {"inputs": [tensor()]}, headers={"Inference-Header-Content-Length": "99999"}
    )
    assert_error(response, 400, "Inference-Header-Content-Length")


def test_binary_bytes_no_input_claims_are_400(http: httpx.Client) -> None:
    body = json.dumps({"inputs": [tensor()]}).encode()
    response = infer(
        http, body + b"\0" * 8, headers={"Inference-Header-Content-Length": str(len(body))}
    )
    assert_error(response, 400, "no input claims")


def test_missing_inputs_is_400(http: httpx.Client) -> None:
    assert_error(infer(http, {"id": "x"}), 400, "no 'inputs' list")


@pytest.mark.parametrize("field", ["name", "shape", "datatype"])
def test_input_missing_a_field_is_400(http: httpx.Client, field: str) -> None:
    response = infer(http, {"inputs": [tensor(**{field: None})]})
    assert response.status_code == 400
    assert field in response.json()["error"]


def test_input_without_data_is_400(http: httpx.Client) -> None:
    assert_error(infer(http, {"inputs": [tensor(data=None)]}), 400, "neither 'data'")


def test_wrong_input_name_is_400(http: httpx.Client) -> None:
    response = infer(http, {"inputs": [tensor(name="pixels")]})
    assert_error(response, 400, "no input named 'pixels'; its input is 'input-0'")


def test_unknown_output_name_is_400(http: httpx.Client) -> None:
    response = infer(http, {"inputs": [tensor()], "outputs": [{"name": "logits"}]})
    assert_error(response, 400, "no output named 'logits'")


def test_malformed_json_is_400(http: httpx.Client) -> None:
    assert_error(infer(http, b'{"inputs": [}'), 400, "not valid JSON")


def test_json_that_is_not_an_object_is_400(http: httpx.Client) -> None:
    assert_error(infer(http, [1, 2, 3]), 400, "must be a JSON object")


def test_non_utf8_body_is_400(http: httpx.Client) -> None:
    assert_error(infer(http, b"\xff\xfe\x00garbage"), 400, "not valid JSON")


def test_unknown_model_is_404(http: httpx.Client) -> None:
    response = http.post("/v2/models/minus/infer", content=b"{}")
    assert_error(response, 404, "no model named 'minus'")


def test_unknown_version_is_404(http: httpx.Client) -> None:
    response = http.get("/v2/models/plus/versions/7")
    assert_error(response, 404, "no version 7")


def test_unknown_alias_is_404(http: httpx.Client) -> None:
    assert_error(http.get("/v2/models/plus/versions/staging"), 404, "no alias 'staging'")


def test_unknown_path_is_404_json(http: httpx.Client) -> None:
    assert_error(http.get("/v2/nothing/here"), 404, "Not Found")


def test_get_on_infer_is_405_json(http: httpx.Client) -> None:
    assert http.get("/v2/models/plus/infer").status_code == 405
    assert "error" in http.get("/v2/models/plus/infer").json()


def test_oversized_body_is_413(http: httpx.Client) -> None:
    big = {"inputs": [tensor(shape=[10_000, 3], data=[1.0] * 30_000)]}
    assert_error(infer(http, big), 413, f"limit of {MAX_BODY} bytes")


def test_oversized_streamed_body_without_length_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    response = http.post("/v2/models/plus/infer", content=chunks())
    assert_error(response, 413, "limit")


def test_truncated_bytes_tensor_is_400(http: httpx.Client) -> None:
    raw = struct.pack("<I", 10) + b"abc"
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    response = infer(
        http, header + raw, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert_error(response, 400, "truncated BYTES")


def test_server_still_answers_after_every_bad_request(http: httpx.Client) -> None:
    for body in (b"", b"{", b"null", b'{"inputs": 5}', b'{"inputs": [5]}', b"\x00" * 100):
        assert infer(http, body).status_code == 400
    assert http.get("/v2/health/live").status_code == 200
    assert infer(http, {"inputs": [tensor()]}).status_code == 200


def test_deeply_nested_json_is_400(http: httpx.Client) -> None:
    assert_error(infer(http, b"[" * 60_000), 400, "not valid JSON")


# --- numbers bounded before they are used (safety issue, class 6) ----------------------------

_HUGE_TEXT = "1" + "0" * 5000  # as JSON, over Python's integer-parsing limit

ABSURD_SHAPES = [
    ([10**30, 0], "more than 1099511627776 values"),
    ([0, 10**30], "more than 1099511627776 values"),
    ([2**63, 0], "more than 1099511627776 values"),
    ([2**62, 2**62, 0], "more than 1099511627776 values"),
    ([2**20, 2**21, 0, 1], "more than 1099511627776 values"),
    ([10**4000, 0], "more than 1099511627776 values"),
    ([0] * 17, "17 dimensions, more than the 16 allowed"),
    ([1] * 1000 + [0], "1001 dimensions"),
    ([-1, 3], "invalid size '-1'"),
    ([-(2**70), 0], "invalid size"),
    ([1.0, 3], "invalid size '1.0'"),
    ([1e300, 0], "invalid size"),
    ([True, 3], "invalid size 'True'"),
    (["1", 3], "invalid size '1'"),
    ([None, 3], "invalid size 'None'"),
    ([[1], 3], "invalid size '[1]'"),
    (3, "no valid 'shape'"),
]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_absurd_shapes_are_400_naming_the_problem(http: httpx.Client, binary: bool) -> None:
    # huge (with a zero, so no data is needed), negative, non-integer, boolean or too many
    # dimensions: each a 400 that says what is wrong, never a 500 from numpy's reshape
    for shape, fragment in ABSURD_SHAPES:
        for datatype in ("FP32", "BYTES", "BOOL"):
            if binary:
                item = tensor(shape=shape, datatype=datatype, data=None)
                item["parameters"] = {"binary_data_size": 0}
                header = json.dumps({"inputs": [item]}).encode()
                response = infer(
                    http, header, headers={"Inference-Header-Content-Length": str(len(header))}
                )
            else:
                response = infer(
                    http, {"inputs": [tensor(shape=shape, datatype=datatype, data=[])]}
                )
            assert response.status_code == 400, (shape, datatype, response.text)
            assert fragment in response.json()["error"], (shape, response.text)
    # a zero-row batch is a real request: the bounds must not refuse it
    response = infer(http, {"inputs": [tensor(shape=[0, 3], data=[])]})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [0, 3]


BAD_BINARY_SIZES = [
    (2**64, "claims 18446744073709551616 bytes"),
    (10**4000, "claims 100000000000... (4001 digits) bytes"),
    (_HUGE_TEXT, "not valid JSON"),  # over Python's integer-parsing limit
    (-1, "invalid binary_data_size"),
    (1.5, "invalid binary_data_size"),
    (True, "invalid binary_data_size"),
    ("12", "invalid binary_data_size"),
    (13, "claims 13 bytes of binary data but only 12 remain"),
    (8, "(3 FP32 values, 12 bytes) but 8 bytes of data"),
]


def test_bad_binary_data_sizes_are_400(http: httpx.Client) -> None:
    # huge, negative, non-integer, too many or too few bytes: each a 400 with a short message
    raw = np.zeros(3, dtype=np.float32).tobytes()
    for size, fragment in BAD_BINARY_SIZES:
        item = tensor(shape=[1, 3], data=None)
        item["parameters"] = {"binary_data_size": "SIZE"}
        number = size if size is _HUGE_TEXT else json.dumps(size)
        header = json.dumps({"inputs": [item]}).replace('"SIZE"', number).encode()
        response = infer(
            http, header + raw, headers={"Inference-Header-Content-Length": str(len(header))}
        )
        assert_error(response, 400, fragment)
        assert len(response.json()["error"]) < 300
