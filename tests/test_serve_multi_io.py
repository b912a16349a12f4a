"""Models of several inputs and outputs: the signature saved from a dict or tuple example
names each one, and `persistkit serve` lists them in the metadata, takes them by name and
answers each output by name; a missing, extra or misshapen input is a clear 400."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

import persistkit
from persistkit.errors import ManifestError
from persistkit.server import ModelRepository, create_app
from persistkit.signature import Signature
from serve_helpers import running_server

torch = pytest.importorskip("torch")


class TwoTowers(torch.nn.Module):  # type: ignore[misc,name-defined]
    """forward(self, left, right) -> (scores, total): two inputs, two outputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.left = torch.nn.Linear(3, 2)
        self.right = torch.nn.Linear(4, 2)

    def forward(self, left: Any, right: Any) -> tuple[Any, Any]:
        scores = self.left(left) + self.right(right)
        return scores, scores.sum(dim=1)


def dict_in_dict_out(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A plain function of one dict, answering a dict."""
    return {"sum": batch["a"] + batch["b"], "count": np.full(len(batch["a"]), 2, np.int64)}


LEFT = np.arange(6, dtype=np.float32).reshape(2, 3)
RIGHT = np.arange(8, dtype=np.float32).reshape(2, 4)


@dataclass
class Served:
    http: httpx.Client
    host_port: str
    model: TwoTowers


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """towers (dict example: inputs by name), pairs (tuple example: input-0, input-1) and
    adder (a function of a dict answering a dict)."""
    store_dir = tmp_path_factory.mktemp("multi-store")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PERSISTKIT_HOME", str(tmp_path_factory.mktemp("multi-home")))
        store = persistkit.Store(store_dir)
        model = TwoTowers().eval()
        store.save(model, "towers", example={"left": LEFT, "right": RIGHT})
        store.save(model, "pairs", example=(LEFT, RIGHT))
        store.save(
            dict_in_dict_out,
            "adder",
            example={"a": np.ones((2, 2)), "b": np.ones((2, 2))},
            backend="pickle",
        )
        repository = ModelRepository(["towers", "pairs", "adder"], store=str(store_dir))
        app = create_app(repository)
        with running_server(app) as server, httpx.Client(base_url=server.url) as http:
            yield Served(http, server.host_port, model)


def tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = {"float32": "FP32", "float64": "FP64", "int64": "INT64"}[str(array.dtype)]
    return {"name": name, "datatype": datatype, "shape": list(array.shape),
            "data": array.ravel().tolist()}  # fmt: skip


def infer(served: Served, model: str, inputs: list[dict[str, Any]], **extra: Any) -> Any:
    body = json.dumps({"inputs": inputs, **extra}).encode()
    return served.http.post(f"/v2/models/{model}/infer", content=body)


def outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    return {
        o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]
    }


def expected(served: Served) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        scores, total = served.model(torch.from_numpy(LEFT), torch.from_numpy(RIGHT))
    return scores.numpy(), total.numpy()


def test_metadata_lists_every_input_and_output(served: Served) -> None:
    meta = served.http.get("/v2/models/towers").json()
    assert meta["inputs"] == [
        {"name": "left", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "right", "datatype": "FP32", "shape": [-1, 4]},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["output-0", "output-1"]
    assert [o["shape"] for o in meta["outputs"]] == [[-1, 2], [-1]]


def test_inputs_by_name_reach_forward_by_keyword_and_each_output_is_answered(
    served: Served,
) -> None:
    # sent in the other order: names, not positions, decide
    answer = outputs(infer(served, "towers", [tensor("right", RIGHT), tensor("left", LEFT)]))
    scores, total = expected(served)
    np.testing.assert_allclose(answer["output-0"], scores, rtol=1e-6)
    np.testing.assert_allclose(answer["output-1"], total, rtol=1e-6)


def test_a_tuple_example_names_inputs_by_position(served: Served) -> None:
    meta = served.http.get("/v2/models/pairs").json()
    assert [i["name"] for i in meta["inputs"]] == ["input-0", "input-1"]
    answer = outputs(infer(served, "pairs", [tensor("input-1", RIGHT), tensor("input-0", LEFT)]))
    np.testing.assert_allclose(answer["output-0"], expected(served)[0], rtol=1e-6)


def test_one_output_can_be_asked_for_by_name(served: Served) -> None:
    inputs = [tensor("left", LEFT), tensor("right", RIGHT)]
    answer = outputs(infer(served, "towers", inputs, outputs=[{"name": "output-1"}]))
    assert list(answer) == ["output-1"]


def test_a_function_of_a_dict_answers_its_dict_by_key(served: Served) -> None:
    meta = served.http.get("/v2/models/adder").json()
    assert [o["name"] for o in meta["outputs"]] == ["sum", "count"]
    a, b = np.full((3, 2), 1.5), np.full((3, 2), 2.0)
    answer = outputs(infer(served, "adder", [tensor("a", a), tensor("b", b)]))
    np.testing.assert_array_equal(answer["sum"], a + b)
    np.testing.assert_array_equal(answer["count"], [2, 2, 2])


def test_tritonclient_sends_several_binary_inputs(served: Served) -> None:
    client = triton.InferenceServerClient(served.host_port)
    try:
        inputs = []
        for name, array in (("left", LEFT), ("right", RIGHT)):
            item = triton.InferInput(name, list(array.shape), "FP32")
            item.set_data_from_numpy(array, binary_data=True)
            inputs.append(item)
        result = client.infer("towers", inputs)
        np.testing.assert_allclose(result.as_numpy("output-1"), expected(served)[1], rtol=1e-6)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ([tensor("left", LEFT)], "lacks the input 'right'; the model takes 'left', 'right'"),
        (
            [tensor("left", LEFT), tensor("right", RIGHT), tensor("middle", LEFT)],
            "no input named 'middle'",
        ),
        ([tensor("left", LEFT), tensor("right", LEFT)], "input 'right' has shape [2, 3]"),
        ([tensor("left", LEFT), tensor("right", RIGHT[:1])], "different batch sizes"),
        ([tensor("left", LEFT.astype(np.float64)), tensor("right", RIGHT)], "is FP64"),
    ],
    ids=["missing", "extra", "misshapen", "batch-sizes", "datatype"],
)
def test_bad_inputs_are_a_400_naming_the_problem(
    served: Served, inputs: list[dict[str, Any]], fragment: str
) -> None:
    response = infer(served, "towers", inputs)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]


def test_a_manifest_from_before_forms_reads_as_one_input_and_output() -> None:
    old = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 3]}], "outputs": []}
    signature = Signature.from_manifest(old)
    assert (signature.input_form, signature.output_form) == ("single", "single")
    assert signature.to_dict() == old  # and written back exactly as it was


@pytest.mark.parametrize(
    "signature",
    [
        {"inputs": [], "input_form": "list"},
        {"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1]}] * 2, "input_form": "dict"},
        {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [-1]},
                {"name": "b", "datatype": "FP32", "shape": [-1]},
            ]
        },
    ],
    ids=["unknown-form", "name-twice", "several-but-single"],
)
def test_a_damaged_form_is_a_manifest_error(signature: dict[str, Any]) -> None:
    with pytest.raises(ManifestError):
        Signature.from_manifest(signature)


class DictInput(torch.nn.Module):  # type: ignore[misc,name-defined]
    """forward(self, batch) reading batch["a"] and batch["b"]: a dict as one argument."""

    def forward(self, batch: dict[str, Any]) -> Any:
        return batch["a"] * 2 + batch["b"]


def test_a_torch_module_of_one_dict_argument_gets_the_dict_itself() -> None:
    a, b = np.ones((2, 3), np.float32), np.full((2, 3), 0.5, np.float32)
    answer = persistkit.predict(DictInput(), {"a": a, "b": b})
    np.testing.assert_array_equal(answer, a * 2 + b)


def test_a_torch_module_refusing_its_inputs_is_an_input_error_naming_their_shapes() -> None:
    with pytest.raises(persistkit.errors.InputError, match=r"shapes \[\(2, 5\), \(2, 4\)\]"):
        persistkit.predict(TwoTowers(), (np.ones((2, 5), np.float32), RIGHT))
