"""The .pt2 audit: a torch.export archive that is not trusted loads only if torch reading it
can run nothing from it. Real archives are mutated into attacks (code-running targets,
pickled weights, eval-able expressions, guard code, compiled libraries, zip tricks, damage);
each must be refused with a persistkit error and must never run the canary."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import random
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import persistkit  # noqa: E402
from persistkit.errors import FormatError, PersistkitError, UntrustedArtifactError  # noqa: E402
from persistkit.safety import audit_pt2  # noqa: E402
from persistkit.safety.pt2_audit import expression_problem  # noqa: E402
from pt2_helpers import mlp_archive  # noqa: E402
from torch_helpers import as_stranger, mlp_inputs, outputs, trained_mlp  # noqa: E402

Entries = dict[str, bytes]


class _Canary:
    """Unpickling this creates the file at ``path`` (what an attacker's payload would do)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@pytest.fixture(scope="module")
def archive() -> bytes:
    """A real torch.export archive of a trained MLP with a dynamic batch (symbolic sizes)."""
    return mlp_archive()


def entries_of(data: bytes) -> Entries:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


def rebuild(entries: Entries, *, compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, content in entries.items():
            z.writestr(name, content)
    return out.getvalue()


def mutate(data: bytes, change: Callable[[Entries, str], None]) -> bytes:
    """``data`` rewritten after ``change(entries, root)`` (root: the archive's folder)."""
    entries = entries_of(data)
    root = next(iter(entries)).split("/", 1)[0]
    change(entries, root)
    return rebuild(entries)


def edit_json(entries: Entries, name: str, change: Callable[[Any], None]) -> None:
    value = json.loads(entries[name])
    change(value)
    entries[name] = json.dumps(value).encode()


def edit_program(change: Callable[[Any], None]) -> Callable[[Entries, str], None]:
    return lambda entries, root: edit_json(entries, f"{root}/models/model.json", change)


def first_node(program: Any) -> Any:
    return program["graph_module"]["graph"]["nodes"][0]


def expr_nodes(tree: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    pending = [tree]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            if "expr_str" in value:
                found.append(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return found


def load_untrusted(tmp_path: Path, data: bytes) -> Any:
    """Load ``data`` as a bare .pt2 file under the default policy, and predict with it."""
    path = tmp_path / "attack.pt2"
    path.write_bytes(data)
    model = persistkit.load(path)
    return persistkit.predict(model, mlp_inputs(3))


def assert_refused(tmp_path: Path, data: bytes, kind: type[Exception], *words: str) -> None:
    canary = tmp_path / "canary"
    with pytest.raises(kind) as err:
        load_untrusted(tmp_path, data)
    message = str(err.value)
    assert all(w in message for w in words), message
    if isinstance(err.value, UntrustedArtifactError):
        assert "trusted=True" in (err.value.hint_for("python") or "")
    assert not canary.exists()


# -- the genuine article -------------------------------------------------------------------


def test_genuine_archive_passes_the_audit_and_loads_untrusted(
    archive: bytes, tmp_path: Path
) -> None:
    found = audit_pt2(archive)
    assert found.models == ["model"] and found.weights > 0
    assert all(t.startswith("torch.ops.aten.") for t in found.targets)
    assert np.array_equal(load_untrusted(tmp_path, archive), outputs(trained_mlp(), mlp_inputs(3)))


def test_rewriting_the_zip_alone_changes_nothing(archive: bytes, tmp_path: Path) -> None:
    """The attacks below rebuild the zip; rebuilt unchanged, it still loads (so each refusal
    is the mutation's doing)."""
    assert load_untrusted(tmp_path, mutate(archive, lambda e, r: None)).shape == (3, 3)


def test_saved_artifact_from_a_stranger_is_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = persistkit.save(trained_mlp(), tmp_path / "a", backend="export", example=mlp_inputs())
    payload = art.path / "model.pt2"
    payload.write_bytes(
        mutate(
            payload.read_bytes(),
            edit_program(lambda p: first_node(p).update(target="torch.os.system")),
        )
    )
    as_stranger(monkeypatch, tmp_path)
    with pytest.raises(PersistkitError):  # the hash check or the audit; never torch
        persistkit.load(art.path, verify=False)


# -- code-running graph targets ------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "torch.os.system",
        "torch.ops.aten.from_file.default",
        "torch.ops.aten.save.default",
        "builtins.eval",
        "torch.ops.aten.__class__.default",
        "torch.ops.aten.linear",
        "torch.ops.mylib.op.default",
        "torch.ops.higher_order.triton_kernel_wrapper_mutation",
        "_operator.attrgetter",
        "math.__loader__",
        "#custom:op",
        "torch._dynamo.eval_frame",
    ],
)
def test_node_target_outside_the_reviewed_operators_is_refused(
    archive: bytes, tmp_path: Path, target: str
) -> None:
    attack = mutate(archive, edit_program(lambda p: first_node(p).update(target=target)))
    assert_refused(tmp_path, attack, UntrustedArtifactError, repr(target))


def test_code_running_target_with_a_command_never_runs(archive: bytes, tmp_path: Path) -> None:
    canary = tmp_path / "canary"

    def change(program: Any) -> None:
        first_node(program).update(
            target="torch.os.system",
            inputs=[{"name": "command", "arg": {"as_string": f"touch {canary}"}, "kind": 1}],
        )

    assert_refused(tmp_path, mutate(archive, edit_program(change)), UntrustedArtifactError)


def test_operator_passed_as_an_argument_is_audited_too(archive: bytes, tmp_path: Path) -> None:
    def change(program: Any) -> None:
        first_node(program)["inputs"].append(
            {"name": "fn", "arg": {"as_operator": "torch.os.system"}, "kind": 1}
        )

    assert_refused(
        tmp_path, mutate(archive, edit_program(change)), UntrustedArtifactError, "torch.os.system"
    )


def test_source_fn_metadata_that_walks_attributes_is_refused(
    archive: bytes, tmp_path: Path
) -> None:
    def change(program: Any) -> None:
        first_node(program)["metadata"]["source_fn_stack"] = "linear,torch.os.__builtins__"

    assert_refused(tmp_path, mutate(archive, edit_program(change)), UntrustedArtifactError)


# -- pickles -----------------------------------------------------------------------------


def test_pickled_weight_is_refused(archive: bytes, tmp_path: Path) -> None:
    canary = tmp_path / "canary"

    def change(entries: Entries, root: str) -> None:
        config = f"{root}/data/weights/model_weights_config.json"
        first: dict[str, Any] = {}
        edit_json(entries, config, lambda c: first.update(next(iter(c["config"].values()))))
        edit_json(
            entries, config, lambda c: next(iter(c["config"].values())).update(use_pickle=True)
        )
        buffer = io.BytesIO()
        torch.save(_Canary(canary), buffer)
        entries[f"{root}/data/weights/{first['path_name']}"] = buffer.getvalue()

    assert_refused(tmp_path, mutate(archive, change), UntrustedArtifactError, "use_pickle")


@pytest.mark.parametrize("prefix", ["opaque_obj_", "custom_obj_"])
def test_custom_and_opaque_constants_are_refused(
    archive: bytes, tmp_path: Path, prefix: str
) -> None:
    canary = tmp_path / "canary"

    def change(entries: Entries, root: str) -> None:
        name = f"{prefix}0"
        edit_json(
            entries,
            f"{root}/data/constants/model_constants_config.json",
            lambda c: c["config"].update(
                {"evil": {"path_name": name, "is_param": False, "use_pickle": True}}
            ),
        )
        entries[f"{root}/data/constants/{name}"] = pickle.dumps(_Canary(canary))

    assert_refused(tmp_path, mutate(archive, change), UntrustedArtifactError, prefix)


def test_sample_inputs_that_need_a_full_unpickle_are_refused(
    archive: bytes, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"

    def change(entries: Entries, root: str) -> None:
        buffer = io.BytesIO()
        torch.save(((_Canary(canary),), {}), buffer)
        entries[f"{root}/data/sample_inputs/model.pt"] = buffer.getvalue()

    assert_refused(tmp_path, mutate(archive, change), UntrustedArtifactError, "sample_inputs")


def test_torch_itself_would_run_that_sample_input_pickle(archive: bytes, tmp_path: Path) -> None:
    """The control for the test above: torch.export.load alone falls back to a full
    unpickle and runs the payload (so the audit is what stops it)."""
    canary = tmp_path / "canary"

    def change(entries: Entries, root: str) -> None:
        buffer = io.BytesIO()
        torch.save(((_Canary(canary),), {}), buffer)
        entries[f"{root}/data/sample_inputs/model.pt"] = buffer.getvalue()

    with contextlib.suppress(Exception):  # whatever torch makes of the result
        torch.export.load(io.BytesIO(mutate(archive, change)))
    assert canary.exists()


def test_legacy_pickled_weights_file_is_refused(archive: bytes, tmp_path: Path) -> None:
    def change(entries: Entries, root: str) -> None:
        entries[f"{root}/data/weights/model.pt"] = b"legacy"

    assert_refused(tmp_path, mutate(archive, change), UntrustedArtifactError, "model.pt")


# -- evaluated strings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('pathlib').Path('CANARY').touch()",
        "s77.__class__",
        "Symbol('s77', positive=True, integer=True).func",
        "exec('1')",
        "s77[0]",
        "2**2**99",
        "lambda: 1",
        "Symbol('s77', evaluate=__import__('os'))",
        "s77 if 1 else 2",
        "Integer(1)",
        "'s77'",
        "FloorDiv(s77, 2);1",
    ],
)
def test_symbolic_expression_that_is_not_shape_arithmetic_is_refused(
    archive: bytes, tmp_path: Path, expr: str
) -> None:
    target = expr.replace("CANARY", str(tmp_path / "canary"))

    def change(program: Any) -> None:
        expr_nodes(program)[0]["expr_str"] = target

    assert_refused(
        tmp_path,
        mutate(archive, edit_program(change)),
        UntrustedArtifactError,
        "symbolic expression",
    )


@pytest.mark.parametrize(
    "expr",
    [
        "s77",
        "2*s77 + 1",
        "FloorDiv(s77, 2)",
        "Max(1, s0) - Mod(u3, 4)",
        "Eq(u0, 1)",
        "Symbol('s77', positive=True, integer=True)",
    ],
)
def test_shape_arithmetic_is_accepted(expr: str) -> None:
    assert expression_problem(expr) is None


def test_torch_itself_would_evaluate_an_expression(archive: bytes, tmp_path: Path) -> None:
    """Control: torch.export.load sympifies (evals) expr_str; the audit is what stops it."""
    canary = tmp_path / "canary"

    def change(program: Any) -> None:
        for node in expr_nodes(program):
            node["expr_str"] = f"__import__('pathlib').Path({str(canary)!r}).touch() or s77"

    with contextlib.suppress(Exception):  # whether torch then fails does not matter
        torch.export.load(io.BytesIO(mutate(archive, edit_program(change)))).module()
    assert canary.exists()


def test_guards_code_is_refused(archive: bytes, tmp_path: Path) -> None:
    code = f"__import__('pathlib').Path({str(tmp_path / 'canary')!r}).touch()"
    attack = mutate(archive, edit_program(lambda p: p.update(guards_code=[code])))
    assert_refused(tmp_path, attack, UntrustedArtifactError, "guards_code")


def test_non_tensor_graph_input_is_refused(archive: bytes, tmp_path: Path) -> None:
    """torch pastes a string input's example value between quotes into generated code."""

    def change(program: Any) -> None:
        program["graph_module"]["graph"]["inputs"][-1] = {"as_string": "x' or 1 or '"}

    assert_refused(
        tmp_path, mutate(archive, edit_program(change)), UntrustedArtifactError, "not a tensor"
    )


def test_tree_spec_naming_another_type_is_refused(archive: bytes, tmp_path: Path) -> None:
    def change(program: Any) -> None:
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        signature["out_spec"] = json.dumps(
            [1, {"type": "os._wrap_close", "context": "null", "children_spec": []}]
        )

    assert_refused(
        tmp_path, mutate(archive, edit_program(change)), UntrustedArtifactError, "os._wrap_close"
    )


# -- archive structure ---------------------------------------------------------------------


def test_aotinductor_library_is_refused(archive: bytes, tmp_path: Path) -> None:
    def change(entries: Entries, root: str) -> None:
        entries[f"{root}/data/aotinductor/model/model.so"] = b"\x7fELF"

    assert_refused(tmp_path, mutate(archive, change), UntrustedArtifactError, "AOTInductor")


def test_duplicate_entries_are_refused(archive: bytes, tmp_path: Path) -> None:
    entries = entries_of(archive)
    out = io.BytesIO()
    with pytest.warns(UserWarning), zipfile.ZipFile(out, "w") as z:
        for name, content in entries.items():
            z.writestr(name, content)
        model = next(n for n in entries if n.endswith("models/model.json"))
        z.writestr(model, entries[model])
    assert_refused(tmp_path, out.getvalue(), UntrustedArtifactError, "more than once")


@pytest.mark.parametrize("name", ["../escape", "/abs", "x/..\\evil", "x/./y", "other/file"])
def test_entry_names_with_path_tricks_are_refused(
    archive: bytes, tmp_path: Path, name: str
) -> None:
    def change(entries: Entries, root: str) -> None:
        entries[name.replace("x/", f"{root}/")] = b"1"

    assert_refused(tmp_path, mutate(archive, change), UntrustedArtifactError)


def test_compressed_entries_zip_comments_and_leading_bytes_are_refused(
    archive: bytes, tmp_path: Path
) -> None:
    deflated = rebuild(entries_of(archive), compression=zipfile.ZIP_DEFLATED)
    assert_refused(tmp_path, deflated, UntrustedArtifactError, "compressed")
    out = io.BytesIO(archive)
    with zipfile.ZipFile(out, "a") as z:
        z.comment = b"PK\x05\x06 hidden"
    assert_refused(tmp_path, out.getvalue(), PersistkitError)
    assert_refused(tmp_path, b"PK\x03\x04" + archive, PersistkitError)


def test_unknown_entries_are_refused(archive: bytes, tmp_path: Path) -> None:
    def change(entries: Entries, root: str) -> None:
        entries[f"{root}/data/executorch/model.pte"] = b"1"

    assert_refused(tmp_path, mutate(archive, change), UntrustedArtifactError, "executorch")


# -- damage --------------------------------------------------------------------------------


def test_truncated_archives_give_format_errors(archive: bytes, tmp_path: Path) -> None:
    rng = random.Random(0)
    cuts = sorted(
        {0, 1, 4, 30, len(archive) - 1, len(archive) - 22}
        | {rng.randrange(len(archive)) for _ in range(25)}
    )
    for cut in cuts:
        with pytest.raises(FormatError, match="truncated|damaged|not"):
            load_untrusted(tmp_path, archive[:cut])
    assert not (tmp_path / "canary").exists()


def test_random_byte_flips_never_escape_as_raw_errors(archive: bytes, tmp_path: Path) -> None:
    rng = random.Random(1)
    expected = outputs(trained_mlp(), mlp_inputs(3))
    for _ in range(60):
        damaged = bytearray(archive)
        for _ in range(rng.choice((1, 1, 3))):
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        try:
            answer = load_untrusted(tmp_path, bytes(damaged))
        except PersistkitError:
            continue
        # a flip the zip's checksums do not cover (padding, a header field) may still load;
        # then it answers exactly as before
        assert np.array_equal(answer, expected)


def test_trusted_load_of_a_damaged_archive_is_a_format_error(
    archive: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "bad.pt2"
    path.write_bytes(archive[: len(archive) // 2])
    with pytest.raises(FormatError):
        persistkit.load(path, trusted=True)


# -- scan -----------------------------------------------------------------------------------


def test_scan_gives_the_audits_verdict(archive: bytes, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.pt2", tmp_path / "bad.pt2"
    good.write_bytes(archive)
    bad.write_bytes(mutate(archive, edit_program(lambda p: p.update(guards_code=["1"]))))
    from persistkit.cli.scan import scan_report

    clean = scan_report(str(good))
    assert clean["loads_by_default"] and clean["files"][0]["format"] == "pt2"
    refused = scan_report(str(bad))
    assert not refused["loads_by_default"]
    assert "guards_code" in refused["files"][0]["refused"]
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "persistkit"), "scan", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1 and "guards_code" in cli.stdout
