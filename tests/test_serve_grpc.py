"""`persistkit serve --grpc-port` speaks the Open Inference Protocol's gRPC half, checked with
the real client (tritonclient.grpc, and its generated stub for typed contents) against a real
`persistkit serve` process that answers REST on its other port from the same loaded models."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

import persistkit
from persistkit.errors import InputError, ModelNotServedError, PersistkitError, RequestTooLargeError
from persistkit.server import ModelRepository, create_app
from persistkit.server.app import ServerNotReadyError
from persistkit.server.grpc_server import InferenceService, add_grpc, status_code
from persistkit.server.grpc_tensors import CONTENTS_FIELD
from persistkit.server.inference import Inference
from persistkit.signature import numpy_dtype
from serve_helpers import (
    COLOURS,
    Digits,
    always_zero,
    digits,
    free_port,
    running_server,
    serve_command,
    serving_process,
    text_lengths,
    train_digits_model,
)

TESTS = Path(__file__).parent
NEGATED = ["FP32", "FP64", "INT64", "INT32", "INT8", "UINT8", "FP16"]


@dataclass
class Served:
    grpc: triton_grpc.InferenceServerClient
    rest: triton_http.InferenceServerClient
    stub: Any  # tritonclient's generated GRPCInferenceServiceStub on the same channel
    data: Digits
    model: Any  # digits:2 = digits@prod; digits:1 answers 0 for everything
    url: str  # the REST side: http://127.0.0.1:PORT


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = digits()
    model = train_digits_model(data)
    store = tmp_path_factory.mktemp("grpc-store")
    home = tmp_path_factory.mktemp("grpc-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERSISTKIT_HOME", str(home))
        saved = persistkit.Store(store)
        saved.save(always_zero, "digits", example=data.rows[:3], backend="pickle")
        saved.save(model, "digits", example=data.rows[:5])
        saved.alias("digits:2", "prod")
        saved.save(text_lengths, "texts", example=np.array(["ab", "c"]), backend="pickle")
        for datatype in NEGATED:  # np.negative keeps its input's dtype: one model per datatype
            example = np.ones((2, 3), dtype=numpy_dtype(datatype))
            saved.save(
                np.negative, f"negative-{datatype.lower()}", example=example, backend="pickle"
            )
    port, grpc_port = free_port(), free_port()
    negated = [f"negative-{datatype.lower()}" for datatype in NEGATED]
    args = ["digits:1", "digits@prod", "texts", *negated, "--store", str(store), "--port",
            str(port), "--grpc-port", str(grpc_port), "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "PERSISTKIT_HOME": str(home), "PYTHONPATH": str(TESTS)}
    with serving_process(args, port, env):
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        yield Served(
            triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}"),
            triton_http.InferenceServerClient(f"127.0.0.1:{port}"),
            service_pb2_grpc.GRPCInferenceServiceStub(channel),
            data,
            model,
            f"http://127.0.0.1:{port}",
        )
        channel.close()


def grpc_input(array: np.ndarray, datatype: str = "FP64", name: str = "input-0") -> Any:
    tensor = triton_grpc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)  # raw_input_contents, tritonclient's only way
    return tensor


def http_input(array: np.ndarray, datatype: str = "FP64", name: str = "input-0") -> Any:
    tensor = triton_http.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=False)
    return tensor


def typed_request(
    model: str, values: list[Any], shape: list[int], datatype: str, field: str
) -> Any:
    """A ModelInferRequest with typed contents (tritonclient's own message classes)."""
    request = service_pb2.ModelInferRequest(model_name=model, id="typed-1")
    tensor = request.inputs.add(name="input-0", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


# --- health and metadata -------------------------------------------------------------------


def test_server_is_live_and_ready(served: Served) -> None:
    assert served.grpc.is_server_live()
    assert served.grpc.is_server_ready()


def test_served_versions_and_aliases_are_ready(served: Served) -> None:
    assert served.grpc.is_model_ready("digits")
    assert served.grpc.is_model_ready("digits", "1")
    assert served.grpc.is_model_ready("digits", "prod")


def test_a_model_or_version_not_served_is_not_ready(served: Served) -> None:
    assert not served.grpc.is_model_ready("nope")
    assert not served.grpc.is_model_ready("digits", "7")


def test_server_metadata_names_persistkit_and_its_version(served: Served) -> None:
    metadata = served.grpc.get_server_metadata()
    assert (metadata.name, metadata.version) == ("persistkit", persistkit.__version__)
    assert list(metadata.extensions) == ["model_repository"]


def test_model_metadata_is_the_same_as_rest_gives(served: Served) -> None:
    over_grpc = served.grpc.get_model_metadata("digits", as_json=True)
    over_rest = served.rest.get_model_metadata("digits")
    for tensors in ("inputs", "outputs"):  # protobuf's JSON writes int64 as strings
        for tensor in over_grpc[tensors]:
            tensor["shape"] = [int(dim) for dim in tensor["shape"]]
    assert over_grpc == over_rest
    names = [tensor["name"] for tensor in over_grpc["outputs"]]
    assert names == ["output-0", "label", "scores"]


# --- inference -----------------------------------------------------------------------------


def test_raw_inputs_give_the_models_predictions(served: Served) -> None:
    rows = served.data.rows[:6]
    result = served.grpc.infer("digits", [grpc_input(rows)], request_id="req-7")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("digits", "2", "req-7")
    assert result.as_numpy("output-0").tolist() == served.model.predict(rows).tolist()


def test_the_version_segment_takes_a_number_or_an_alias(served: Served) -> None:
    rows = served.data.rows[:4]
    zeros = served.grpc.infer("digits", [grpc_input(rows)], model_version="1")
    prod = served.grpc.infer("digits", [grpc_input(rows)], model_version="prod")
    assert zeros.as_numpy("output-0").tolist() == [0, 0, 0, 0]
    assert prod.as_numpy("output-0").tolist() == served.model.predict(rows).tolist()


def test_a_model_saved_with_labels_answers_its_label_as_bytes(served: Served) -> None:
    rows = served.data.rows[:5]
    wanted = [triton_grpc.InferRequestedOutput("label"), triton_grpc.InferRequestedOutput("scores")]
    result = served.grpc.infer("digits", [grpc_input(rows)], outputs=wanted)
    response = result.get_response()
    assert [(o.name, o.datatype) for o in response.outputs] == [
        ("label", "BYTES"),
        ("scores", "FP64"),
    ]
    expected = [str(label).encode() for label in served.model.predict(rows)]
    assert result.as_numpy("label").tolist() == expected
    assert np.allclose(result.as_numpy("scores"), served.model.predict_proba(rows))


def test_typed_contents_are_answered_with_typed_contents(served: Served) -> None:
    rows = served.data.rows[:3]
    request = typed_request("digits", rows.ravel().tolist(), [3, 64], "FP64", "fp64_contents")
    request.outputs.add(name="output-0")
    request.outputs.add(name="label")
    response = served.stub.ModelInfer(request)
    assert len(response.raw_output_contents) == 0
    assert response.id == "typed-1"
    predictions = served.model.predict(rows).tolist()
    assert list(response.outputs[0].contents.int64_contents) == predictions
    assert list(response.outputs[1].contents.bytes_contents) == [
        str(p).encode() for p in predictions
    ]
    assert list(response.outputs[1].shape) == [3]


@pytest.mark.parametrize(
    ("datatype", "typed"),
    # FP16 has no typed form (its refusal is tested in test_serve_grpc_tensors)
    [(d, typed) for d in NEGATED for typed in (False, True) if d in CONTENTS_FIELD or not typed],
)
def test_each_datatype_round_trips_raw_or_typed(served: Served, datatype: str, typed: bool) -> None:
    values = np.array([[1, 2, 3], [4, 5, 6]], dtype=numpy_dtype(datatype))
    request = service_pb2.ModelInferRequest(model_name=f"negative-{datatype.lower()}")
    tensor = request.inputs.add(name="input-0", datatype=datatype, shape=[2, 3])
    if typed:
        getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(values.ravel().tolist())
    else:
        request.raw_input_contents.append(values.tobytes())
    response = served.stub.ModelInfer(request)
    (output,) = response.outputs
    assert (output.datatype, list(output.shape)) == (datatype, [2, 3])
    if typed:
        answer = np.array(getattr(output.contents, CONTENTS_FIELD[datatype]))
    else:
        answer = np.frombuffer(response.raw_output_contents[0], dtype=values.dtype)
    assert answer.tolist() == np.negative(values).ravel().tolist()


def test_bytes_inputs_reach_a_text_model_as_str_raw_or_typed(served: Served) -> None:
    texts = np.array(["ab", "ñandú", ""], dtype=object)
    raw = served.grpc.infer("texts", [grpc_input(texts, "BYTES")])
    assert raw.as_numpy("output-0").tolist() == [2, 5, 0]
    encoded = [text.encode() for text in texts]
    typed = served.stub.ModelInfer(typed_request("texts", encoded, [3], "BYTES", "bytes_contents"))
    assert list(typed.outputs[0].contents.int64_contents) == [2, 5, 0]


def test_picture_files_sent_as_bytes_answer_as_persistkit_predict_does(tmp_path: Path) -> None:
    from serve_helpers import framed_picture, save_picture_model, write_png

    saved = save_picture_model(tmp_path / "colours")
    png = write_png(framed_picture(), tmp_path / "photo.png")
    [expected] = persistkit.answer(saved, png)
    app = create_app(ModelRepository([str(tmp_path / "colours")]))
    add_grpc(app, "127.0.0.1:0", max_message_bytes=1 << 20)
    with running_server(app):
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        files = grpc_input(np.array([png.read_bytes()], dtype=object), "BYTES")
        result = client.infer("colours", [files])
        client.close()
    assert result.as_numpy("label").tolist() == [expected.label.encode()]
    assert np.allclose(result.as_numpy("scores")[0], [expected.scores[c] for c in COLOURS])


@pytest.mark.parametrize("typed", [False, True])
def test_several_inputs_and_outputs_travel_by_name(tmp_path: Path, typed: bool) -> None:
    from serve_helpers import sum_and_count

    a, b = np.ones((2, 2)), np.arange(4.0).reshape(2, 2)
    persistkit.save(sum_and_count, tmp_path / "pair", example={"a": a, "b": b}, backend="pickle")
    app = create_app(ModelRepository([str(tmp_path / "pair")]))
    add_grpc(app, "127.0.0.1:0", max_message_bytes=1 << 20)
    request = service_pb2.ModelInferRequest(model_name="pair")
    for name, array in (("b", b), ("a", a)):  # any order: inputs go by name
        tensor = request.inputs.add(name=name, datatype="FP64", shape=[2, 2])
        if typed:
            tensor.contents.fp64_contents.extend(array.ravel().tolist())
        else:
            request.raw_input_contents.append(array.tobytes())
    with running_server(app) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{app.state.grpc_port}")
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        channel.close()
        over_grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        metadata = over_grpc.get_model_metadata("pair", as_json=True)
        rest = triton_http.InferenceServerClient(server.host_port).get_model_metadata("pair")
    names = [output.name for output in response.outputs]
    if typed:
        total = list(response.outputs[names.index("sum")].contents.fp64_contents)
    else:
        total = np.frombuffer(response.raw_output_contents[names.index("sum")]).tolist()
    assert total == (a + b).ravel().tolist()
    assert [t["name"] for t in metadata["inputs"]] == [t["name"] for t in rest["inputs"]]
    assert [t["name"] for t in metadata["outputs"]] == [t["name"] for t in rest["outputs"]]
    assert {"sum", "count"} <= set(names)


# --- errors: the status code says what kind, the message is REST's ---------------------------


def _grpc_error(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def _rest_error(call: Any) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.message())


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("unknown model", "StatusCode.NOT_FOUND"),
        ("unknown version", "StatusCode.NOT_FOUND"),
        ("wrong datatype", "StatusCode.INVALID_ARGUMENT"),
        ("wrong shape", "StatusCode.INVALID_ARGUMENT"),
        ("wrong input name", "StatusCode.INVALID_ARGUMENT"),
        ("unknown output", "StatusCode.INVALID_ARGUMENT"),
    ],
)
def test_a_bad_request_gets_its_status_code_and_rests_message(
    served: Served, case: str, code: str
) -> None:
    rows = served.data.rows[:2]
    model, version, datatype, outputs = "digits", "", "FP64", ["output-0"]
    name = "input-0"
    if case == "unknown model":
        model = "nope"
    elif case == "unknown version":
        version = "7"
    elif case == "wrong datatype":
        rows, datatype = rows.astype(np.float32), "FP32"
    elif case == "wrong shape":
        rows = rows[:, :10].copy()
    elif case == "wrong input name":
        name = "pixels"
    else:
        outputs = ["colour"]
    error = _grpc_error(
        lambda: served.grpc.infer(
            model,
            [grpc_input(rows, datatype, name)],
            model_version=version,
            outputs=[triton_grpc.InferRequestedOutput(o) for o in outputs],
        )
    )
    rest = _rest_error(
        lambda: served.rest.infer(
            model,
            [http_input(rows, datatype, name)],
            model_version=version,
            outputs=[triton_http.InferRequestedOutput(o, binary_data=False) for o in outputs],
        )
    )
    assert (error.status(), error.message()) == (code, rest)


def test_model_metadata_of_an_unknown_model_is_not_found(served: Served) -> None:
    error = _grpc_error(lambda: served.grpc.get_model_metadata("nope"))
    assert error.status() == "StatusCode.NOT_FOUND"
    assert error.message() == _rest_error(lambda: served.rest.get_model_metadata("nope"))
    assert error.message().startswith("no model named 'nope' is served here (served: digits, ")


def test_typed_contents_of_the_wrong_count_are_invalid(served: Served) -> None:
    request = typed_request("digits", [1.0, 2.0, 3.0], [2, 64], "FP64", "fp64_contents")
    with pytest.raises(grpc.RpcError) as caught:
        served.stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "input 'input-0' has shape [2, 64] (128 values) but 3 values of data"
    )


def test_raw_contents_of_the_wrong_size_are_invalid(served: Served) -> None:
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, 64])
    request.raw_input_contents.append(b"\0" * 100)
    with pytest.raises(grpc.RpcError) as caught:
        served.stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "(64 FP64 values, 512 bytes) but 100 bytes of data" in str(caught.value.details())


def test_tritons_other_calls_are_unimplemented(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        served.stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name="digits"))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_grpc_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    import socket

    from persistkit.server.grpc_server import serving_grpc

    async def serve_on(port: int) -> None:
        repository = ModelRepository([str(tmp_path / "unused")])
        async with serving_grpc(f"127.0.0.1:{port}", repository, Inference(), max_message_bytes=1):
            pass

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PersistkitError, match=f"cannot serve gRPC on 127.0.0.1:{port}"):
            asyncio.run(serve_on(port))


def test_a_failing_model_is_internal_with_rests_message(tmp_path: Path) -> None:
    from serve_helpers import explode

    persistkit.save(explode, tmp_path / "explode", example=None, backend="pickle")
    app = create_app(ModelRepository([str(tmp_path / "explode")]))
    add_grpc(app, "127.0.0.1:0", max_message_bytes=1 << 20)
    with running_server(app) as server:
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        error = _grpc_error(lambda: client.infer("explode", [grpc_input(np.ones((2, 3)))]))
        rest_client = triton_http.InferenceServerClient(server.host_port)
        rest = _rest_error(lambda: rest_client.infer("explode", [http_input(np.ones((2, 3)))]))
        client.close()
    assert (error.status(), error.message()) == ("StatusCode.INTERNAL", rest)
    assert "the model's own bug" in rest


def test_an_error_maps_to_the_status_code_rest_s_status_corresponds_to() -> None:
    codes = {
        ModelNotServedError: grpc.StatusCode.NOT_FOUND,
        ServerNotReadyError: grpc.StatusCode.UNAVAILABLE,
        RequestTooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
        InputError: grpc.StatusCode.INVALID_ARGUMENT,
        PersistkitError: grpc.StatusCode.INTERNAL,
    }
    assert {kind: status_code(kind("x", hint="y")) for kind in codes} == codes


def test_a_server_still_loading_is_unavailable_until_ready(tmp_path: Path) -> None:
    persistkit.save(always_zero, tmp_path / "zeros", example=np.ones((2, 3)), backend="pickle")
    repository = ModelRepository([str(tmp_path / "zeros")])
    service = InferenceService(repository, Inference())
    request = service_pb2.ModelMetadataRequest(name="zeros")
    ready = asyncio.run(service.server_ready(service_pb2.ServerReadyRequest()))
    with pytest.raises(ServerNotReadyError) as caught:
        asyncio.run(service.model_metadata(request))
    assert (ready.ready, status_code(caught.value)) == (False, grpc.StatusCode.UNAVAILABLE)
    load = service_pb2.RepositoryModelLoadRequest(model_name="zeros")
    with pytest.raises(PersistkitError) as loading:
        asyncio.run(service.repository_calls.load(load))
    assert status_code(loading.value) == grpc.StatusCode.UNAVAILABLE
    repository.load()
    assert asyncio.run(service.model_metadata(request)).name == "zeros"


def test_a_message_past_the_size_limit_is_resource_exhausted(tmp_path: Path) -> None:
    persistkit.save(always_zero, tmp_path / "zeros", example=np.ones((2, 3)), backend="pickle")
    app = create_app(ModelRepository([str(tmp_path / "zeros")]))
    add_grpc(app, "127.0.0.1:0", max_message_bytes=4096)
    with running_server(app):
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        small = client.infer("zeros", [grpc_input(np.ones((2, 3)))])
        error = _grpc_error(lambda: client.infer("zeros", [grpc_input(np.ones((200, 3)))]))
        client.close()
    assert small.as_numpy("output-0").tolist() == [0, 0]
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"


# --- operations: request ids, metrics, one inference path for both transports ---------------


def test_a_call_answers_the_clients_request_id_or_a_new_one(served: Served) -> None:
    request = typed_request("texts", [b"abc"], [1], "BYTES", "bytes_contents")
    _, given = served.stub.ModelInfer.with_call(request, metadata=(("x-request-id", "rid-42"),))
    _, made = served.stub.ModelInfer.with_call(request)
    assert dict(given.trailing_metadata())["x-request-id"] == "rid-42"
    assert re.fullmatch(r"[0-9a-f]{32}", dict(made.trailing_metadata())["x-request-id"])


def test_grpc_calls_are_counted_in_the_metrics_by_model_and_status(served: Served) -> None:
    served.grpc.infer("texts", [grpc_input(np.array(["a"], dtype=object), "BYTES")])
    _grpc_error(lambda: served.grpc.get_model_metadata("made-up-name"))
    text = httpx.get(f"{served.url}/metrics").text
    assert re.search(
        r'persistkit_requests_total\{code="200",endpoint="grpc_ModelInfer",model="texts"\} [1-9]',
        text,
    )
    assert 'endpoint="grpc_ModelMetadata",model=""} ' in text  # never the made-up name
    assert "made-up-name" not in text


def test_grpc_infers_through_the_apps_own_inference(tmp_path: Path) -> None:
    """The one Inference the REST app holds (its batching, its labels) answers gRPC too."""

    class Counting(Inference):
        calls = 0

        async def infer(self, *args: Any, **kwargs: Any) -> Any:
            Counting.calls += 1
            return await super().infer(*args, **kwargs)

    persistkit.save(always_zero, tmp_path / "zeros", example=np.ones((2, 3)), backend="pickle")
    app = create_app(ModelRepository([str(tmp_path / "zeros")]), inference=Counting())
    add_grpc(app, "127.0.0.1:0", max_message_bytes=1 << 20)
    with running_server(app):
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        client.infer("zeros", [grpc_input(np.ones((2, 3)))])
        client.close()
    assert Counting.calls == 1


# --- the model-repository extension ----------------------------------------------------------


@dataclass
class Repository:
    grpc: triton_grpc.InferenceServerClient
    rest: triton_http.InferenceServerClient


@pytest.fixture
def repository_server(tmp_path: Path) -> Iterator[Repository]:
    """zeros:1 served from a store that also holds zeros:2 (a model answering 1s)."""
    store = persistkit.Store(tmp_path / "store")
    store.save(always_zero, "zeros", example=np.ones((2, 3)), backend="pickle")
    store.save(np.ones_like, "zeros", example=np.ones((2, 3)), backend="pickle")
    app = create_app(ModelRepository(["zeros:1"], store=str(tmp_path / "store")))
    add_grpc(app, "127.0.0.1:0", max_message_bytes=1 << 20)
    with running_server(app) as server:
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        yield Repository(client, triton_http.InferenceServerClient(server.host_port))
        client.close()


def test_the_repository_index_is_the_one_rest_gives(repository_server: Repository) -> None:
    over_grpc = repository_server.grpc.get_model_repository_index(as_json=True)["models"]
    over_rest = repository_server.rest.get_model_repository_index()
    assert over_grpc == [{k: v for k, v in row.items() if v} for row in over_rest]
    assert {"name": "zeros", "version": "1", "state": "READY"} in over_grpc


def test_load_serves_a_version_and_unload_stops_serving(repository_server: Repository) -> None:
    client = repository_server.grpc
    client.load_model("zeros")  # the newest: version 2
    newest = client.infer("zeros", [grpc_input(np.ones((2, 3)))])
    policy = json.dumps({"version_policy": {"specific": {"versions": [1]}}})
    client.load_model("zeros", config=policy)
    first = client.infer("zeros", [grpc_input(np.ones((2, 3)))])
    client.unload_model("zeros")
    assert newest.get_response().model_version == "2"
    assert newest.as_numpy("output-0").tolist() == [[1.0] * 3] * 2
    assert first.get_response().model_version == "1"
    assert not client.is_model_ready("zeros")


@pytest.mark.parametrize(
    ("call", "code"),
    [
        ("load unknown", "StatusCode.NOT_FOUND"),
        ("load bad policy", "StatusCode.INVALID_ARGUMENT"),
        ("unload twice", "StatusCode.NOT_FOUND"),
    ],
)
def test_a_refused_repository_call_has_rests_message(
    repository_server: Repository, call: str, code: str
) -> None:
    def attempt(client: Any) -> None:
        if call == "load unknown":
            client.load_model("nothing-here")
        elif call == "load bad policy":
            client.load_model("zeros", config=json.dumps({"version_policy": {"all": {}}}))
        else:
            client.unload_model("zeros")
            client.unload_model("zeros")

    rest = _rest_error(lambda: attempt(repository_server.rest))
    repository_server.grpc.load_model(
        "zeros", config=json.dumps({"version_policy": {"latest": {}}})
    )
    error = _grpc_error(lambda: attempt(repository_server.grpc))
    assert (error.status(), error.message()) == (code, rest)


def test_runtime_loads_are_refused_with_several_workers(tmp_path: Path) -> None:
    persistkit.save(always_zero, tmp_path / "zeros", example=np.ones((2, 3)), backend="pickle")
    app = create_app(ModelRepository([str(tmp_path / "zeros")]), mutable_repository=False)
    add_grpc(app, "127.0.0.1:0", max_message_bytes=1 << 20, mutable_repository=False)
    with running_server(app):
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        error = _grpc_error(lambda: client.unload_model("zeros"))
        client.close()
    assert error.status() == "StatusCode.FAILED_PRECONDITION"
    assert "several worker processes" in error.message()


# --- the command ---------------------------------------------------------------------------


def test_without_grpcio_grpc_port_names_the_extra_to_install(tmp_path: Path) -> None:
    persistkit.save(always_zero, tmp_path / "zeros", example=np.ones((2, 3)), backend="pickle")
    blocked = "import sys; sys.modules['grpc'] = None; from persistkit.cli import main; main()"
    command = serve_command(str(tmp_path / "zeros"), "--grpc-port", str(free_port()))
    command[2] = blocked
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "serving gRPC needs grpcio and protobuf, and grpc is not installed" in done.stderr
    assert 'pip install "persistkit[grpc]"' in done.stderr


def test_grpc_port_must_differ_from_port(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from persistkit.cli import main

    persistkit.save(always_zero, tmp_path / "zeros", example=np.ones((2, 3)), backend="pickle")
    args = ["serve", str(tmp_path / "zeros"), "--port", "9123", "--grpc-port", "9123"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "--grpc-port 9123 is also --port: give it a port of its own" in result.output


def test_several_workers_share_the_grpc_port(tmp_path: Path) -> None:
    persistkit.save(always_zero, tmp_path / "zeros", example=np.ones((2, 3)), backend="pickle")
    port, grpc_port = free_port(), free_port()
    args = [str(tmp_path / "zeros"), "--port", str(port), "--grpc-port", str(grpc_port),
            "--workers", "2", "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    with serving_process(args, port, env):
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        answers = [client.infer("zeros", [grpc_input(np.ones((3, 3)))]) for _ in range(4)]
        client.close()
    assert all(a.as_numpy("output-0").tolist() == [0, 0, 0] for a in answers)


# --- the .proto and the descriptor the server builds its messages from -------------------------


def _fields(descriptor: Any) -> Iterator[tuple[str, str, int, int, int, str]]:
    """(message, field, number, type, label, message type) of every field, nested included."""
    for message in descriptor.message_types_by_name.values():
        yield from _message_fields(message)


def _message_fields(message: Any) -> Iterator[tuple[str, str, int, int, int, str]]:
    for field in message.fields:
        kind = field.message_type.full_name if field.message_type else ""
        label = 3 if field.is_repeated else 1
        yield (message.full_name, field.name, field.number, field.type, label, kind)
    for nested in message.nested_types:
        yield from _message_fields(nested)


def test_our_messages_match_tritonclients_on_the_wire() -> None:
    """Every field we declare has the number, type and label tritonclient's generated code
    (Triton's superset of the KServe specification) gives it."""
    from persistkit.server import proto

    ours = set(_fields(proto.ModelInferRequest.DESCRIPTOR.file))
    theirs = set(_fields(service_pb2.DESCRIPTOR))
    assert ours and ours <= theirs


def test_the_descriptor_is_the_proto_file_compiled() -> None:
    """Each ``name = number;`` of the .proto is a field of the compiled descriptor and the
    other way round (generate.py rebuilds the descriptor after an edit)."""
    from persistkit.server import proto

    text = (Path(proto.__file__).parent / "grpc_predict_v2.proto").read_text()
    declared = set(re.findall(r"^\s*(?:repeated \w+|map<[^>]+>|\w+) (\w+) = (\d+);", text, re.M))
    descriptor = proto.ModelInferRequest.DESCRIPTOR.file
    compiled = {(name, str(number)) for _, name, number, *_ in _fields(descriptor)}
    compiled -= {("key", "1"), ("value", "2")}  # map entries protoc writes for map<> fields
    assert declared == compiled
