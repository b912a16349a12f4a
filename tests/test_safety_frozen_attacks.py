"""Attacks on the frozen (torch.export) format beyond the audit's first list: names that fx
pastes into the Python source it generates and ``exec``\\ s, tree-spec contexts that make
torch import a module, zip names torch looks up ignoring case, empty payloads that claim huge
tensors. Each attack is shown to work on torch alone (``exported_module`` without the audit),
then refused by ``persistkit.load`` under the default policy without running its canary."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import persistkit  # noqa: E402
from persistkit.errors import UntrustedArtifactError  # noqa: E402
from pt2_helpers import mlp_archive  # noqa: E402
from torch_helpers import mlp_inputs  # noqa: E402

Entries = dict[str, bytes]
PROGRAM = "models/model.json"
CONFIGS = ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json")


@pytest.fixture(scope="module")
def archive() -> bytes:
    return mlp_archive()


@pytest.fixture(autouse=True)
def _stranger(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every attack is loaded by a user whose keys seal nothing."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PERSISTKIT_HOME", str(home))


def touch(canary: Path) -> str:
    """Python code that creates ``canary`` (what an attacker's payload would do)."""
    return f"__import__('pathlib').Path({str(canary)!r}).touch()"


def mutate(data: bytes, change: Callable[[Entries], None]) -> bytes:
    """``data`` with ``change`` applied to its entries (named without the root folder)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
        root = infos[0].filename.split("/", 1)[0]
        entries = {i.filename.split("/", 1)[1]: z.read(i) for i in infos}
    change(entries)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, content in entries.items():
            z.writestr(f"{root}/{name}", content)
    return out.getvalue()


def edit_program(change: Callable[[Any], None]) -> Callable[[Entries], None]:
    def apply(entries: Entries) -> None:
        program = json.loads(entries[PROGRAM])
        change(program)
        entries[PROGRAM] = json.dumps(program).encode()

    return apply


def rename(old: str, new: str) -> Callable[[Entries], None]:
    """Rename a value, parameter or buffer everywhere (program and payload configs)."""

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {(new if k == old else k): swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return new if value == old else value

    def apply(entries: Entries) -> None:
        for entry in (PROGRAM, *CONFIGS):
            entries[entry] = json.dumps(swap(json.loads(entries[entry]))).encode()

    return apply


def load_and_predict(tmp_path: Path, data: bytes) -> Any:
    path = tmp_path / "attack.pt2"
    path.write_bytes(data)
    model = persistkit.load(path)
    return persistkit.predict(model, mlp_inputs(3))


def torch_alone(data: bytes) -> Any:
    """What torch does with the file without the audit (as with trusted=True)."""
    from persistkit_export.export import exported_module

    module = exported_module(data, "attack.pt2")
    return module(torch.from_numpy(mlp_inputs(3)))


def assert_refused(tmp_path: Path, data: bytes, canary: Path, *words: str) -> None:
    with pytest.raises(UntrustedArtifactError) as err:
        load_and_predict(tmp_path, data)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert not canary.exists()


# -- fx codegen: names pasted into generated source ---------------------------------------


def unused_input_attack(canary: Path) -> Callable[[Entries], None]:
    # num_batches_tracked is an input the eval graph never uses, so its name appears only in
    # `def forward(self, ..., <name>)` and in `<sanitized> = <name>`; `*b, c=<code>` is valid
    # in both places, and the default value runs when the generated source is exec'd
    return rename("b_net_1_num_batches_tracked", f"*b, c={touch(canary)}")


def test_torch_alone_runs_code_from_a_placeholder_name(archive: bytes, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    torch_alone(mutate(archive, unused_input_attack(canary)))
    assert canary.exists()


def test_placeholder_name_with_code_is_refused(archive: bytes, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = mutate(archive, unused_input_attack(canary))
    assert_refused(tmp_path, data, canary, "not a plain identifier", "Python code")


def forward_arg_names_attack(canary: Path) -> Callable[[Entries], None]:
    def change(program: Any) -> None:
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        # a second name is never passed on to the graph: it lands only in `.module()`'s def
        signature["forward_arg_names"] = ["x", f"y={touch(canary)}"]

    return edit_program(change)


def test_torch_alone_runs_code_from_forward_arg_names(archive: bytes, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    torch_alone(mutate(archive, forward_arg_names_attack(canary)))
    assert canary.exists()


def test_forward_arg_names_with_code_are_refused(archive: bytes, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = mutate(archive, forward_arg_names_attack(canary))
    assert_refused(tmp_path, data, canary, "forward_arg_names", "not a plain identifier")


def test_parameter_name_breaking_out_of_quotes_is_refused(archive: bytes, tmp_path: Path) -> None:
    # fx writes `getattr(self.net, "<part>")` for a part that is not an identifier
    canary = tmp_path / "canary"
    part = f'0" if getattr(__import__("os"), "system")("touch {canary}") else "0'
    assert "." not in part
    data = mutate(archive, rename("net.0.weight", f"net.{part}.weight"))
    with pytest.raises(AttributeError):  # torch alone: the code runs, the lookup fails
        torch_alone(data)
    assert canary.exists()
    canary.unlink()
    assert_refused(tmp_path, data, canary, "not dotted identifiers")


@pytest.mark.parametrize("old", ["tanh", "x", "linear_1"])
def test_value_names_with_code_are_refused(archive: bytes, tmp_path: Path, old: str) -> None:
    canary = tmp_path / "canary"
    data = mutate(archive, rename(old, f"{old} = {touch(canary)}; {old}"))
    assert_refused(tmp_path, data, canary, "not a plain identifier")


def test_keyword_argument_names_in_the_in_spec_are_refused(archive: bytes, tmp_path: Path) -> None:
    # forward(**kwargs) keys become parameter names and `'{key}': value` in generated code
    canary = tmp_path / "canary"

    def change(program: Any) -> None:
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        leaf = {"type": None, "context": None, "children_spec": []}
        key = f"x': {touch(canary)}, 'y"
        spec = {
            "type": "builtins.tuple",
            "context": "null",
            "children_spec": [
                {"type": "builtins.tuple", "context": "null", "children_spec": []},
                {"type": "builtins.dict", "context": json.dumps([key]), "children_spec": [leaf]},
            ],
        }
        signature["in_spec"] = json.dumps([1, spec])
        signature["forward_arg_names"] = None

    data = mutate(archive, edit_program(change))
    assert_refused(tmp_path, data, canary, "keyword argument", "not a plain identifier")


# -- tree-spec contexts: torch's JSON hook imports modules ----------------------------------


def enum_context_attack(module: str) -> Callable[[Entries], None]:
    def change(program: Any) -> None:
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(signature["out_spec"])
        context = {"__enum__": True, "fqn": f"{module}:E", "name": "A"}
        spec[1] = {
            "type": "builtins.tuple",
            "context": json.dumps(context),
            "children_spec": [spec[1]],
        }
        signature["out_spec"] = json.dumps(spec)

    return edit_program(change)


@pytest.fixture
def planted_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A module on sys.path whose import creates a canary (any importable module would do:
    the file picks which one runs)."""
    canary = tmp_path / "canary"
    name = f"pk_planted_{tmp_path.name.replace('-', '_')}"
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / f"{name}.py").write_text(
        f"{touch(canary)}\nimport enum\nclass E(enum.Enum):\n    A = 1\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    yield name, canary
    sys.modules.pop(name, None)


def test_torch_alone_imports_the_module_a_tree_spec_names(
    archive: bytes, planted_module: tuple[str, Path]
) -> None:
    module, canary = planted_module
    torch_alone(mutate(archive, enum_context_attack(module)))
    assert canary.exists()


def test_tree_spec_context_naming_a_module_is_refused(
    archive: bytes, tmp_path: Path, planted_module: tuple[str, Path]
) -> None:
    module, canary = planted_module
    data = mutate(archive, enum_context_attack(module))
    assert_refused(tmp_path, data, canary, "context", "importing the module")
    assert module not in sys.modules


# -- the zip and the payloads ---------------------------------------------------------------


def test_entries_that_differ_only_in_case_are_refused(archive: bytes, tmp_path: Path) -> None:
    # torch's reader finds names ignoring case, so it may read the other entry
    def change(entries: Entries) -> None:
        entries["extra/Note"] = b"one"
        entries["extra/note"] = b"two"

    data = mutate(archive, change)
    assert_refused(tmp_path, data, tmp_path / "canary", "more than once", "case")


def test_empty_weight_file_claiming_a_huge_tensor_is_refused(
    archive: bytes, tmp_path: Path
) -> None:
    # torch allocates torch.zeros(sizes) for an empty payload file
    def change(entries: Entries) -> None:
        config = json.loads(entries[CONFIGS[0]])
        meta = next(iter(config["config"].values()))
        meta["tensor_meta"]["sizes"] = [{"as_int": 1 << 20}, {"as_int": 1 << 20}]
        entries[f"data/weights/{meta['path_name']}"] = b""
        entries[CONFIGS[0]] = json.dumps(config).encode()

    data = mutate(archive, change)
    assert_refused(tmp_path, data, tmp_path / "canary", "empty file")


def test_genuine_archive_still_loads_untrusted(archive: bytes, tmp_path: Path) -> None:
    out = load_and_predict(tmp_path, archive)
    assert len(out) == 3


# -- ONNX: external data through attributes the first check did not walk --------------------


def sparse_constant_reading(location: str, *, in_function: bool = False) -> bytes:
    """An ONNX model whose output is a sparse ``Constant`` whose values live in ``location``
    (read by onnxruntime relative to the working folder), optionally as a function's default
    attribute."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    values = TensorProto(name="v", data_type=TensorProto.FLOAT, dims=[4])
    values.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        values.external_data.add(key=key, value=value)
    indices = helper.make_tensor("i", TensorProto.INT64, [4], [0, 1, 2, 3])
    sparse = helper.make_sparse_tensor(values, indices, [2, 2])
    node = helper.make_node("Constant", [], ["c"], sparse_value=sparse)
    output = helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 2])
    graph = helper.make_graph([node], "g", [], [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if in_function:
        default = helper.make_attribute("s", sparse)
        function = helper.make_function("local", "F", [], ["y"], [], [helper.make_opsetid("", 17)])
        function.attribute_proto.append(default)
        model.functions.append(function)
        del model.graph.node[:]
        model.graph.node.append(helper.make_node("Identity", ["k"], ["c"]))
        model.graph.initializer.append(helper.make_tensor("k", TensorProto.FLOAT, [2, 2], [0] * 4))
    return model.SerializeToString()


def test_onnxruntime_alone_reads_a_sparse_attributes_external_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ort = pytest.importorskip("onnxruntime")
    import numpy as np

    monkeypatch.chdir(tmp_path)
    np.array([7, 8, 9, 6], dtype=np.float32).tofile("secret.bin")
    session = ort.InferenceSession(sparse_constant_reading("secret.bin"))
    read = session.run(None, {})[0]
    assert sorted(np.asarray(read.values()).tolist()) == [6.0, 7.0, 8.0, 9.0]


@pytest.mark.parametrize("in_function", [False, True])
def test_onnx_sparse_attribute_with_external_data_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_function: bool
) -> None:
    pytest.importorskip("onnxruntime")
    from persistkit.errors import FormatError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    path = tmp_path / "attack.onnx"
    path.write_bytes(sparse_constant_reading("secret.bin", in_function=in_function))
    with pytest.raises(FormatError, match="in another file"):
        persistkit.load(path)
