"""`persistkit serve` speaks the Open Inference Protocol V2 REST API, checked with a real
client (tritonclient.http) in JSON and binary mode against a real uvicorn server."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

import persistkit
from persistkit.server import ModelRepository, create_app
from persistkit.server.app import CONFIG_ENV, app_from_environment
from s3_server import S3Server, s3_env, s3_server  # noqa: F401  (fixtures)
from serve_helpers import Digits, RunningServer, digits, running_server, train_digits_model

with warnings.catch_warnings():  # starlette now prefers httpx2; httpx works the same here
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient


@dataclass
class Served:
    server: RunningServer
    client: triton.InferenceServerClient
    data: Digits
    model: Any  # version 2 of "digits", also aliased "prod"
    store: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the module: digits:1 (answers 0 for everything), digits:2 = digits@prod
    (a real classifier)."""
    data = digits()
    model = train_digits_model(data)
    store_dir = tmp_path_factory.mktemp("serve-store")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PERSISTKIT_HOME", str(tmp_path_factory.mktemp("serve-home")))
        store = persistkit.Store(store_dir)
        store.save(_always_zero, "digits", example=data.rows[:3], backend="pickle")
        store.save(model, "digits", example=data.rows[:5])
        store.alias("digits:2", "prod")
        repository = ModelRepository(["digits:1", "digits"], store=str(store_dir))
        with running_server(create_app(repository)) as server:
            client = triton.InferenceServerClient(server.host_port)
            yield Served(server, client, data, model, store_dir)
            client.close()


def _always_zero(x: np.ndarray) -> np.ndarray:
    return np.zeros(len(x), dtype=np.int64)


def infer_input(array: np.ndarray, *, binary: bool, datatype: str = "FP64") -> Any:
    tensor = triton.InferInput("input-0", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


# --- health and metadata -----------------------------------------------------------------


def test_server_is_live_and_ready_after_loading(served: Served) -> None:
    assert served.client.is_server_live()
    assert served.client.is_server_ready()


def test_each_served_version_is_ready(served: Served) -> None:
    assert served.client.is_model_ready("digits")
    assert served.client.is_model_ready("digits", "1")
    assert served.client.is_model_ready("digits", "2")
    assert not served.client.is_model_ready("digits", "3")


def test_server_metadata_names_the_extensions(served: Served) -> None:
    metadata = served.client.get_server_metadata()
    assert metadata["name"] == "persistkit"
    assert {"binary_tensor_data", "model_repository"} <= set(metadata["extensions"])


def test_model_metadata_comes_from_the_signature(served: Served) -> None:
    assert served.client.get_model_metadata("digits") == {
        "name": "digits",
        "versions": ["1", "2"],
        "platform": "sklearn_joblib",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 64]}],
        "outputs": [
            {"name": "output-0", "datatype": "INT64", "shape": [-1]},
            # a classifier is saved with its classes as labels: it answers them as text,
            # with predict_proba's scores, one column per label
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "scores", "datatype": "FP64", "shape": [-1, 10]},
        ],
    }


def test_versioned_metadata_describes_that_version(served: Served) -> None:
    assert served.client.get_model_metadata("digits", "1")["platform"] == "callable_pickle"


# --- inference ---------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_answers_as_model_predict(served: Served, binary: bool) -> None:
    rows = served.data.rows[100:116]
    result = served.client.infer("digits", [infer_input(rows, binary=binary)])
    assert np.array_equal(result.as_numpy("output-0"), served.model.predict(rows))


@pytest.mark.parametrize("binary_output", [False, True], ids=["json-output", "binary-output"])
def test_requested_output_comes_back_in_the_requested_encoding(
    served: Served, binary_output: bool
) -> None:
    rows = served.data.rows[:4]
    output = triton.InferRequestedOutput("output-0", binary_data=binary_output)
    result = served.client.infer("digits", [infer_input(rows, binary=True)], outputs=[output])
    response = result.get_response()["outputs"][0]
    assert ("data" in response) is not binary_output
    assert result.as_numpy("output-0").tolist() == served.model.predict(rows).tolist()


def test_infer_echoes_the_request_id_and_names_the_version(served: Served) -> None:
    result = served.client.infer(
        "digits", [infer_input(served.data.rows[:1], binary=False)], request_id="req-42"
    )
    response = result.get_response()
    assert response["id"] == "req-42"
    assert (response["model_name"], response["model_version"]) == ("digits", "2")


def test_version_segment_picks_the_version(served: Served) -> None:
    rows = served.data.rows[1:6]
    result = served.client.infer("digits", [infer_input(rows, binary=True)], model_version="1")
    assert result.as_numpy("output-0").tolist() == [0] * 5
    assert result.get_response()["model_version"] == "1"


def test_alias_in_the_version_segment_picks_the_aliased_version(served: Served) -> None:
    rows = served.data.rows[1:6]
    result = served.client.infer("digits", [infer_input(rows, binary=True)], model_version="prod")
    assert result.get_response()["model_version"] == "2"
    assert np.array_equal(result.as_numpy("output-0"), served.model.predict(rows))


def test_alias_moved_after_start_up_is_followed_when_that_version_is_loaded(
    served: Served,
) -> None:
    persistkit.Store(served.store).alias("digits:1", "canary")
    metadata = served.client.get_model_metadata("digits", "canary")
    assert metadata["name"] == "digits"
    result = served.client.infer(
        "digits", [infer_input(served.data.rows[:2], binary=False)], model_version="canary"
    )
    assert result.get_response()["model_version"] == "1"


def test_unknown_model_is_an_error_the_client_reports(served: Served) -> None:
    with pytest.raises(InferenceServerException, match="no model named 'nope'") as info:
        served.client.infer("nope", [infer_input(served.data.rows[:1], binary=True)])
    assert info.value.status() == "404"


def test_wrong_datatype_is_an_error_the_client_reports(served: Served) -> None:
    rows = served.data.rows[:1].astype(np.float32)
    with pytest.raises(InferenceServerException, match="FP32 but the model takes FP64"):
        served.client.infer("digits", [infer_input(rows, binary=True, datatype="FP32")])


def test_batch_of_pictures_uploaded_as_uint8_is_refused_for_a_float_model(served: Served) -> None:
    pictures = served.data.pictures[:2].reshape(2, 64)
    with pytest.raises(InferenceServerException) as info:
        served.client.infer("digits", [infer_input(pictures, binary=True, datatype="UINT8")])
    assert info.value.status() == "400"


# --- start-up ----------------------------------------------------------------------------


def test_ready_is_false_until_models_have_loaded(tmp_path: Path) -> None:
    persistkit.save(_always_zero, "zeros", example=np.zeros((2, 3)), backend="pickle")
    repository = ModelRepository(["zeros"])
    client = TestClient(create_app(repository))  # no `with`: the lifespan has not run
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/models/zeros/ready").status_code == 503
    with client:  # start-up loads the models
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/models/zeros/ready").status_code == 200


def test_worker_processes_build_the_app_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    persistkit.save(_always_zero, "zeros", example=np.zeros((2, 3)), backend="pickle")
    config = {"refs": ["zeros"], "store": None, "trusted": False, "max_body_bytes": 1024}
    monkeypatch.setenv(CONFIG_ENV, json.dumps(config))
    with TestClient(app_from_environment()) as client:
        body = {
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [2, 3], "data": [0] * 6}]
        }
        response = client.post("/v2/models/zeros/infer", content=json.dumps(body))
        assert response.json()["outputs"][0]["data"] == [0, 0]


def test_a_ref_that_cannot_load_fails_start_up(tmp_path: Path) -> None:
    repository = ModelRepository(["missing"])
    with pytest.raises(persistkit.errors.VersionNotFoundError), TestClient(create_app(repository)):
        pass
    assert not repository.ready


def test_serve_command_refuses_a_missing_model_with_one_line() -> None:
    from click.testing import CliRunner

    from persistkit.cli import main

    result = CliRunner().invoke(main, ["serve", "missing", "--port", "1"])
    assert result.exit_code == 1
    assert "no model named 'missing'" in result.output


def test_plain_http_client_gets_json_without_sending_content_type(served: Served) -> None:
    body = {
        "inputs": [
            {
                "name": "input-0",
                "datatype": "FP64",
                "shape": [1, 64],
                "data": served.data.rows[9].tolist(),
            }
        ]
    }
    response = httpx.post(
        f"{served.server.url}/v2/models/digits/infer", content=json.dumps(body).encode()
    )
    assert response.status_code == 200
    assert (
        response.json()["outputs"][0]["data"]
        == served.model.predict(served.data.rows[9:10]).tolist()
    )


@pytest.mark.s3
def test_models_load_from_an_s3_store_at_start_up(s3_env: S3Server) -> None:  # noqa: F811
    url = s3_env.fresh_url()
    store = persistkit.Store(url)
    store.save(_always_zero, "zeros", example=np.ones((2, 3)), backend="pickle")
    store.alias("zeros:1", "prod")
    repository = ModelRepository(["zeros@prod"], store=url)
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [2, 3], "data": [1] * 6}]}
    with TestClient(create_app(repository)) as client:
        assert client.get("/v2/health/ready").status_code == 200
        response = client.post("/v2/models/zeros/versions/prod/infer", content=json.dumps(body))
    assert response.json()["model_version"] == "1"
    assert response.json()["outputs"][0]["data"] == [0, 0]


def test_serve_command_runs_worker_processes_that_answer(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time

    store = tmp_path / "store"
    persistkit.Store(store).save(_always_zero, "zeros", example=np.ones((2, 3)), backend="pickle")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-c", "from persistkit.cli import main; main()", "serve", "zeros",
               "--store", str(store), "--port", str(port), "--workers", "2",
               "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}  # workers import this module
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    try:
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode()  # type: ignore[union-attr]
            try:
                if client.is_server_ready():
                    break
            except Exception:  # not listening yet
                pass
            time.sleep(0.2)
        result = client.infer("zeros", [infer_input(np.ones((4, 3)), binary=True)])
        assert result.as_numpy("output-0").tolist() == [0, 0, 0, 0]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_an_artifact_folder_is_served_under_its_folder_name(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    persistkit.save(np.negative, folder, example=np.ones((1, 2)), backend="pickle")
    repository = ModelRepository([str(folder)])
    repository.load()
    served = repository.get("my-model")
    assert (served.name, served.version, repository.versions("my-model")) == ("my-model", None, [])


# --- answers: label and scores beside the model's own output ---------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_classifier_answers_its_labels_as_bytes_and_its_scores(
    served: Served, binary: bool
) -> None:
    rows = served.data.rows[200:206]
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary)
        for name in ("output-0", "label", "scores")
    ]
    result = served.client.infer("digits", [infer_input(rows, binary=True)], outputs=outputs)
    labels = result.as_numpy("label")
    assert labels.dtype == object and labels.shape == (6,)
    # tritonclient gives str from JSON, bytes from binary data (4-byte length + UTF-8 each)
    expected = [str(v) for v in served.model.predict(rows)]
    assert [v.decode() if binary else v for v in labels] == expected
    assert np.array_equal(result.as_numpy("output-0"), served.model.predict(rows))
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float64
    assert np.array_equal(scores, served.model.predict_proba(rows))


def test_asking_for_the_label_alone_answers_the_label_alone(served: Served) -> None:
    rows = served.data.rows[:2]
    output = triton.InferRequestedOutput("label", binary_data=False)
    result = served.client.infer("digits", [infer_input(rows, binary=False)], outputs=[output])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    assert result.as_numpy("label").tolist() == [str(v) for v in served.model.predict(rows)]


def test_asking_for_an_unknown_output_names_the_outputs_there_are(served: Served) -> None:
    output = triton.InferRequestedOutput("probs")
    with pytest.raises(InferenceServerException, match="'output-0', 'label', 'scores'"):
        served.client.infer(
            "digits", [infer_input(served.data.rows[:1], binary=False)], outputs=[output]
        )


def test_a_model_without_labels_answers_its_own_output_only(served: Served) -> None:
    metadata = served.client.get_model_metadata("digits", "1")  # a plain function
    assert [o["name"] for o in metadata["outputs"]] == ["output-0"]
    result = served.client.infer(
        "digits", [infer_input(served.data.rows[:2], binary=False)], model_version="1"
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["output-0"]


def test_a_picture_model_answers_on_the_server_as_in_python_and_the_cli(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from persistkit.cli import main
    from serve_helpers import (
        COLOURS,
        expected_picture_input,
        framed_picture,
        save_picture_model,
        write_png,
    )

    saved = save_picture_model(tmp_path / "colours")
    png = write_png(framed_picture(), tmp_path / "photo.png")
    [answer] = persistkit.answer(saved, png)
    cli = CliRunner().invoke(main, ["predict", str(tmp_path / "colours"), str(png), "--json"])
    assert json.loads(cli.stdout)["predictions"] == [answer.to_dict()]
    app = create_app(ModelRepository([str(tmp_path / "colours")]))
    with running_server(app) as server:
        client = triton.InferenceServerClient(server.host_port)
        metadata = client.get_model_metadata("colours")
        assert metadata["outputs"][1:] == [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, 3]},
        ]
        batch = expected_picture_input(framed_picture())  # what the preprocess record makes
        tensor = triton.InferInput("input-0", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=True)
        result = client.infer("colours", [tensor])
        assert result.as_numpy("label").tolist() == [b"red"]  # binary output: bytes
        scores = result.as_numpy("scores")[0]
        assert COLOURS[int(np.argmax(scores))] == answer.label
        assert scores.tolist() == pytest.approx([answer.scores[c] for c in COLOURS], rel=1e-6)
        # the picture file itself, as BYTES: the server reads it with the preprocess record
        files = triton.InferInput("input-0", [2], "BYTES")
        files.set_data_from_numpy(np.array([png.read_bytes()] * 2, dtype=object))
        from_files = client.infer("colours", [files])
        assert from_files.as_numpy("label").tolist() == [b"red", b"red"]
        for row in from_files.as_numpy("scores").tolist():
            assert row == pytest.approx([answer.scores[c] for c in COLOURS], rel=1e-6)
        as_json = triton.InferInput("input-0", [1], "BYTES")
        as_json.set_data_from_numpy(np.array([b"not a picture"], dtype=object), binary_data=False)
        with pytest.raises(InferenceServerException, match="binary data"):
            client.infer("colours", [as_json])
        page = httpx.post(f"{server.url}/ui/predict/colours", content=png.read_bytes()).json()
        client.close()
    assert page["predictions"] == [answer.to_dict()]
    assert page["answers"][0]["text"] == str(answer) == f"red ({answer.score:.2f})"
    assert "warnings" not in page  # resize and crop are the spec's own steps
