"""The OIP model-repository extension (index, load, unload), driven by tritonclient's HTTP
client against a real uvicorn server on a real store."""

from __future__ import annotations

import gc
import json
import warnings
import weakref
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
from serve_helpers import RunningServer, digits, running_server, train_digits_model

with warnings.catch_warnings():  # starlette now prefers httpx2; httpx works the same here
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient


def _always_zero(x: np.ndarray) -> np.ndarray:
    return np.zeros(len(x), dtype=np.int64)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """digits:1 (answers 0) = digits@old, digits:2 (a classifier), extra:1 (answers 0),
    damaged:1 (its payload changed after saving: every load fails)."""
    data = digits()
    folder = tmp_path_factory.mktemp("repository-store")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PERSISTKIT_HOME", str(tmp_path_factory.mktemp("repository-home")))
        store = persistkit.Store(folder)
        store.save(_always_zero, "digits", example=data.rows[:3], backend="pickle")
        store.save(train_digits_model(data), "digits", example=data.rows[:5])
        store.alias("digits:1", "old")
        store.save(_always_zero, "extra", example=data.rows[:3], backend="pickle")
        damaged = store.save(_always_zero, "damaged", example=data.rows[:3], backend="pickle")
        payload = next(p for p in damaged.path.iterdir() if p.suffix == ".pkl")
        payload.write_bytes(payload.read_bytes()[:-1] + b"!")
        yield folder


@dataclass
class Served:
    server: RunningServer
    client: triton.InferenceServerClient


@pytest.fixture
def served(store_dir: Path) -> Iterator[Served]:
    """A fresh server (`persistkit serve digits`) per test: loads and unloads change it."""
    repository = ModelRepository(["digits"], store=str(store_dir), trusted=True)
    with running_server(create_app(repository)) as server:
        client = triton.InferenceServerClient(server.host_port)
        yield Served(server, client)
        client.close()


def rows(index: list[dict[str, str]]) -> set[tuple[str, str, str]]:
    return {(r["name"], r["version"], r["state"]) for r in index}


def post(served: Served, path: str, body: Any = None, *, raw: bytes | None = None) -> Any:
    content = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    return httpx.post(f"{served.server.url}{path}", content=content)


def infer_zeros(served: Served, model: str) -> np.ndarray:
    tensor = triton.InferInput("input-0", [1, 64], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 64)))
    return served.client.infer(model, [tensor]).as_numpy("output-0")


# --- index -------------------------------------------------------------------------------


def test_index_lists_the_store_with_each_model_state(served: Served) -> None:
    index = served.client.get_model_repository_index()
    assert rows(index) == {
        ("damaged", "", "UNAVAILABLE"),
        ("digits", "2", "READY"),
        ("extra", "", "UNAVAILABLE"),
    }
    assert {r["reason"] for r in index if r["state"] == "UNAVAILABLE"} == {"not loaded"}


def test_index_of_ready_models_only(served: Served) -> None:
    response = post(served, "/v2/repository/index", {"ready": True})
    assert response.status_code == 200
    assert rows(response.json()) == {("digits", "2", "READY")}
    assert httpx.get(f"{served.server.url}/v2/repository/index").status_code == 200


# --- load and unload ---------------------------------------------------------------------


def test_load_serves_a_model_of_the_store_at_runtime(served: Served) -> None:
    assert not served.client.is_model_ready("extra")
    served.client.load_model("extra")
    assert served.client.is_model_ready("extra")
    assert infer_zeros(served, "extra").tolist() == [0]
    assert ("extra", "1", "READY") in rows(served.client.get_model_repository_index())
    assert served.client.is_server_ready()


def test_load_with_a_version_policy_serves_that_version_in_place_of_the_old(
    served: Served,
) -> None:
    policy = {"version_policy": {"specific": {"versions": [1]}}}
    served.client.load_model("digits", config=json.dumps(policy))
    assert served.client.is_model_ready("digits", "1")
    assert not served.client.is_model_ready("digits", "2")
    assert served.client.get_model_metadata("digits")["versions"] == ["1"]


def test_load_by_alias_parameter(served: Served) -> None:
    response = post(served, "/v2/repository/models/digits/load", {"parameters": {"alias": "old"}})
    assert response.status_code == 200
    assert served.client.is_model_ready("digits", "old")
    assert served.client.get_model_metadata("digits")["versions"] == ["1"]


def test_unload_stops_serving_and_the_server_stays_ready(served: Served) -> None:
    served.client.unload_model("digits")
    assert not served.client.is_model_ready("digits")
    assert served.client.is_server_ready()
    index = served.client.get_model_repository_index()
    assert {(r["name"], r["state"], r["reason"]) for r in index if r["name"] == "digits"} == {
        ("digits", "UNAVAILABLE", "unloaded")
    }
    with pytest.raises(InferenceServerException, match="no model named 'digits'"):
        infer_zeros(served, "digits")


# --- bad requests --------------------------------------------------------------------------


def test_loading_an_unknown_model_is_404_the_client_reports(served: Served) -> None:
    with pytest.raises(InferenceServerException, match="no model named 'nothing-here'") as caught:
        served.client.load_model("nothing-here")
    assert caught.value.status() == "404"


def test_loading_an_unknown_version_is_404(served: Served) -> None:
    response = post(served, "/v2/repository/models/digits/load", {"parameters": {"version": 9}})
    assert response.status_code == 404
    assert "no version 9" in response.json()["error"]


def test_a_model_that_fails_to_load_is_400_and_the_served_ones_stay(served: Served) -> None:
    with pytest.raises(InferenceServerException, match="failed to load 'damaged'") as caught:
        served.client.load_model("damaged")
    assert caught.value.status() == "400"
    assert served.client.is_model_ready("digits")
    assert served.client.is_server_ready()
    index = {r["name"]: r for r in served.client.get_model_repository_index()}
    assert index["damaged"]["state"] == "UNAVAILABLE"
    assert index["damaged"]["reason"].startswith("loading damaged failed")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"parameters": 3}', '"parameters" must be a JSON object'),
        (b'{"parameters": {"version": "two"}}', '"version" must be a version number'),
        (b'{"parameters": {"version": 0}}', '"version" must be a version number'),
        (b'{"parameters": {"version": 1, "alias": "old"}}', "not both"),
        (b'{"parameters": {"alias": "Not An Alias"}}', "not a valid alias"),
        (b'{"parameters": {"file:1/model.pt": "AAAA"}}', "unknown field"),
        (json.dumps({"parameters": {"config": '{"backend": "onnx"}'}}).encode(), "only a"),
        (b'{"model": "x"}', "unknown field"),
    ],
)
def test_malformed_load_requests_are_400_with_the_oip_error_body(
    served: Served, body: bytes, says: str
) -> None:
    response = post(served, "/v2/repository/models/digits/load", raw=body)
    assert response.status_code == 400
    assert says in response.json()["error"]
    assert served.client.get_model_metadata("digits")["versions"] == ["2"]  # nothing changed


def test_an_invalid_model_name_is_400_and_never_a_path(served: Served) -> None:
    response = post(served, "/v2/repository/models/..%2F..%2Fetc/load")
    assert response.status_code in (400, 404)
    assert "error" in response.json()
    response = post(served, "/v2/repository/models/Bad%20Name/load")
    assert response.status_code == 400
    assert "not a valid model name" in response.json()["error"]


def test_unloading_a_model_not_served_is_404(served: Served) -> None:
    with pytest.raises(InferenceServerException, match="cannot be unloaded") as caught:
        served.client.unload_model("extra")
    assert caught.value.status() == "404"


def test_malformed_unload_and_index_requests_are_400(served: Served) -> None:
    unload = {"parameters": {"unload_dependents": "yes"}}
    assert post(served, "/v2/repository/models/digits/unload", unload).status_code == 400
    assert post(served, "/v2/repository/index", {"ready": "yes"}).status_code == 400
    assert post(served, "/v2/repository/index", raw=b"{").status_code == 400
    assert served.client.is_model_ready("digits")


def test_with_several_workers_load_and_unload_are_refused_with_409(store_dir: Path) -> None:
    repository = ModelRepository(["digits"], store=str(store_dir), trusted=True)
    with TestClient(create_app(repository, mutable_repository=False)) as client:
        for action in ("load", "unload"):
            response = client.post(f"/v2/repository/models/digits/{action}")
            assert response.status_code == 409
            assert "--workers 1" in response.json()["error"]
        assert client.post("/v2/repository/index").status_code == 200


def test_load_before_start_up_finished_is_503(store_dir: Path) -> None:
    client = TestClient(create_app(ModelRepository(["digits"], store=str(store_dir))))
    response = client.post("/v2/repository/models/extra/load")  # no `with`: no lifespan ran
    assert response.status_code == 503
    assert client.get("/v2/health/ready").status_code == 503


def test_an_unloaded_model_is_collected_although_the_server_froze_it(store_dir: Path) -> None:
    """The server freezes what is alive after start-up out of the collector's reach; a model
    dropped later (unload, a followed alias moving) must not stay frozen for good."""
    repository = ModelRepository(["digits:2"], store=str(store_dir), trusted=True)
    repository.load()
    model = repository.get("digits").model
    model.cycle = model  # only a collection frees an object in a reference cycle
    gone = weakref.ref(model)
    del model
    gc.collect()
    gc.freeze()
    try:
        repository.unload_model("digits")
        assert gone() is None
    finally:
        gc.unfreeze()
