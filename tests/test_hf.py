"""Hugging Face folders: what save_pretrained writes loads with transformers' own classes and
identical logits, what persistkit saves from_pretrained loads as is, and a folder that would
need its own code, another class, a pickle's globals or files outside it is refused."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import transformers  # noqa: E402

import persistkit  # noqa: E402
from persistkit.errors import FormatError, UntrustedArtifactError  # noqa: E402
from persistkit.manager import build_plugins, get_plugins, reset_plugins  # noqa: E402

LABELS = {0: "negative", 1: "positive"}


@pytest.fixture(autouse=True)
def hf_plugin() -> None:
    """The hf plugin, by its entry point once installed, else registered here."""
    if "hf" not in get_plugins().backends:
        import persistkit_hf

        reset_plugins(build_plugins(persistkit_hf.plugin))


def _bert() -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    return transformers.AutoModelForSequenceClassification.from_config(config).eval()


def _vit() -> Any:
    torch.manual_seed(1)
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label={0: "cat", 1: "dog", 2: "gnome"},
        label2id={"cat": 0, "dog": 1, "gnome": 2},
    )
    return transformers.AutoModelForImageClassification.from_config(config).eval()


@pytest.fixture(scope="module")
def bert() -> Any:
    return _bert()


@pytest.fixture(scope="module")
def vit() -> Any:
    return _vit()


IDS = np.random.default_rng(0).integers(1, 50, size=(3, 8))
PIXELS = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)


def _logits(model: Any, inputs: np.ndarray) -> np.ndarray:
    name = model.main_input_name
    with torch.no_grad():
        return model(**{name: torch.from_numpy(inputs)}).logits.numpy()  # type: ignore[no-any-return]


def _folder(model: Any, path: Path, **kwargs: Any) -> Path:
    model.save_pretrained(path, **kwargs)
    return path


@pytest.fixture
def another_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever loads has another persistkit home (another key): nothing is sealed for them."""
    monkeypatch.setenv("PERSISTKIT_HOME", str(tmp_path / "someone-else"))


# --- folders in -------------------------------------------------------------------------------


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
@pytest.mark.parametrize("which", ["bert", "vit"])
def test_a_save_pretrained_folder_loads_with_identical_logits(
    which: str, sharded: bool, tmp_path: Path, another_user: None, request: Any
) -> None:
    model = request.getfixturevalue(which)
    inputs = IDS if which == "bert" else PIXELS
    folder = _folder(model, tmp_path / which, **({"max_shard_size": "5KB"} if sharded else {}))
    assert (folder / "model.safetensors.index.json").exists() == sharded
    loaded = persistkit.load(folder)
    assert type(loaded) is type(model)
    assert not loaded.training
    np.testing.assert_array_equal(persistkit.predict(loaded, inputs), _logits(model, inputs))
    np.testing.assert_array_equal(persistkit.predict(folder, inputs), _logits(model, inputs))


def test_tied_weights_save_pretrained_leaves_out_are_tied_again(tmp_path: Path) -> None:
    torch.manual_seed(2)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32,
    )  # fmt: skip
    model = transformers.BertForMaskedLM(config).eval()
    loaded = persistkit.load(_folder(model, tmp_path / "mlm"))
    decoder = loaded.cls.predictions.decoder.weight
    assert decoder.data_ptr() == loaded.bert.embeddings.word_embeddings.weight.data_ptr()
    np.testing.assert_array_equal(persistkit.predict(loaded, IDS), _logits(model, IDS))


def test_the_load_opens_nothing_by_path_and_connects_nowhere(
    bert: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From config.json's bytes to the model, the plugin and transformers read only the
    opened files (through /proc/self/fd) and Python's own modules: no path in the folder,
    no cache, no network."""
    import persistkit_hf

    folder = _folder(bert, tmp_path / "bert", max_shard_size="5KB")
    persistkit.load(folder)  # imports happen once, outside the record
    seen: list[tuple[str, str]] = []
    for name in ("weights_of", "_build"):
        monkeypatch.setattr(persistkit_hf, name, _recorded(getattr(persistkit_hf, name), seen))
    persistkit.load(folder)
    assert seen and not [e for e in seen if e[0] != "open"], seen
    roots = (sys.prefix, sys.base_prefix, str(Path(persistkit_hf.__file__).parents[1]))
    strays = [
        path for _, path in seen if not path.startswith(("/proc/self/fd/", "/dev/fd/", *roots))
    ]
    assert not strays


def _recorded(func: Any, seen: list[tuple[str, str]]) -> Any:
    def wrapper(*args: Any) -> Any:
        result, events = _record_events(lambda: func(*args))
        seen.extend(events)
        return result

    return wrapper


_RECORDING: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _RECORDING is not None and event in ("open", "socket.connect", "subprocess.Popen"):
        _RECORDING.append((event, str(args[0]) if args else ""))


def _record_events(action: Any) -> tuple[Any, list[tuple[str, str]]]:
    """``action()`` and the files it opened (by path) and connections it made."""
    global _RECORDING
    if not getattr(_record_events, "installed", False):
        sys.addaudithook(_audit)  # cannot be removed: inert while not recording
        _record_events.installed = True  # type: ignore[attr-defined]
    _RECORDING = events = []
    try:
        return action(), events
    finally:
        _RECORDING = None


def test_a_pytorch_model_bin_folder_loads_through_the_restricted_reader(
    bert: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    shutil.copy(_folder(bert, tmp_path / "new") / "config.json", folder / "config.json")
    torch.save(bert.state_dict(), folder / "pytorch_model.bin")
    np.testing.assert_array_equal(persistkit.predict(folder, IDS), _logits(bert, IDS))


class _Shell:
    def __reduce__(self) -> Any:
        return (os.system, ("echo pwned",))


def test_a_pytorch_model_bin_with_code_is_refused_naming_it(bert: Any, tmp_path: Path) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    shutil.copy(_folder(bert, tmp_path / "new") / "config.json", folder / "config.json")
    torch.save({**bert.state_dict(), "x": _Shell()}, folder / "pytorch_model.bin")
    with pytest.raises(UntrustedArtifactError, match="system"):
        persistkit.load(folder)


# --- hostile folders --------------------------------------------------------------------------


def _edited(model: Any, path: Path, **changes: Any) -> Path:
    folder = _folder(model, path)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_auto_map_is_refused_even_when_trusted(bert: Any, tmp_path: Path) -> None:
    folder = _edited(bert, tmp_path / "remote", auto_map={"AutoModel": "evil.EvilModel"})
    (folder / "evil.py").write_text("raise SystemExit('ran the folder code')\n")
    for trusted in (False, True):
        with pytest.raises(UntrustedArtifactError, match="auto_map.*never runs") as caught:
            persistkit.load(folder, trusted=trusted)
    assert "trusted=" not in caught.value.hint_for("python")  # trusting it is no remedy


@pytest.mark.parametrize("name", ["os.system", "CustomNet", "PreTrainedModel", "AutoModel"])
def test_an_architecture_transformers_does_not_define_is_refused(
    bert: Any, tmp_path: Path, name: str
) -> None:
    folder = _edited(bert, tmp_path / "other", architectures=[name])
    with pytest.raises(UntrustedArtifactError, match="not a model class of transformers"):
        persistkit.load(folder)


def test_a_shard_index_naming_a_file_outside_the_folder_is_refused(
    bert: Any, tmp_path: Path
) -> None:
    folder = _folder(bert, tmp_path / "m" / "bert", max_shard_size="5KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    shutil.move(folder / shard, tmp_path / "m" / "x.safetensors")
    index["weight_map"] = {
        k: "../x.safetensors" if v == shard else v for k, v in index["weight_map"].items()
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FormatError, match=r"'\.\./x\.safetensors', which is not .* of this folder"):
        persistkit.load(folder)


def test_missing_weights_are_a_format_error_naming_them(bert: Any, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _folder(bert, tmp_path / "bert")
    tensors = load_file(folder / "model.safetensors")
    del tensors["classifier.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(FormatError, match=r"missing 1 \(classifier\.weight\)"):
        persistkit.load(folder)


def test_a_renamed_weight_is_a_format_error_naming_both(bert: Any, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _folder(bert, tmp_path / "bert")
    tensors = load_file(folder / "model.safetensors")
    tensors["classifier.kernel"] = tensors.pop("classifier.weight")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(FormatError, match=r"missing 1 \(classifier\.weight\).*unexpected 1"):
        persistkit.load(folder)


def test_a_config_asking_for_huge_layers_is_refused_before_allocating(
    bert: Any, tmp_path: Path
) -> None:
    folder = _edited(bert, tmp_path / "huge", hidden_size=1 << 16, intermediate_size=1 << 20)
    with pytest.raises(FormatError, match="describes a BertForSequenceClassification of"):
        persistkit.load(folder)  # 1 << 36 floats per layer would not fit; nothing is made


def test_a_folder_without_weights_is_not_a_hugging_face_folder(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(persistkit.errors.ManifestError, match="not a persistkit artifact"):
        persistkit.load(tmp_path / "cfg")


# --- predict and the CLI ----------------------------------------------------------------------


def test_predict_feeds_token_ids_and_pixels_as_the_model_names_them(bert: Any, vit: Any) -> None:
    np.testing.assert_array_equal(persistkit.predict(bert, IDS.tolist()), _logits(bert, IDS))
    np.testing.assert_array_equal(persistkit.predict(vit, PIXELS.astype(np.float64)),
                                  _logits(vit, PIXELS))  # fmt: skip
    mask = np.ones_like(IDS)
    by_name = persistkit.predict(bert, {"input_ids": IDS, "attention_mask": mask})
    np.testing.assert_array_equal(by_name, _logits(bert, IDS))


def test_describe_says_family_hf_and_the_id2label_labels(bert: Any) -> None:
    from persistkit.api import describe

    facts = describe(bert)
    assert facts["family"] == "hf"
    assert set(facts["libraries"]) >= {"transformers", "torch", "safetensors"}
    assert facts["labels"] == ["negative", "positive"]
    assert facts["output"] == "logits"


def test_cli_predict_on_a_folder_prints_its_raw_logits_with_raw(bert: Any, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from persistkit.cli import main

    folder = _folder(bert, tmp_path / "bert")
    np.save(tmp_path / "ids.npy", IDS)
    args = ["predict", str(folder), str(tmp_path / "ids.npy"), "--json", "--raw"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    got = np.array(json.loads(result.stdout)["predictions"])
    np.testing.assert_allclose(got, _logits(bert, IDS), rtol=1e-6)


def test_cli_predict_on_a_folder_answers_with_the_id2label_labels(
    bert: Any, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from persistkit.cli import main

    folder = _folder(bert, tmp_path / "bert")
    np.save(tmp_path / "ids.npy", IDS[:1])
    result = CliRunner().invoke(main, ["predict", str(folder), str(tmp_path / "ids.npy")])
    assert result.exit_code == 0, result.output
    assert result.stdout.split(": ")[1].split(" (")[0] in ("negative", "positive")


# --- folders out ------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"max_shard_size": "5KB"}], ids=["single", "sharded"])
def test_a_saved_model_is_a_folder_from_pretrained_loads_as_is(
    bert: Any, tmp_path: Path, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    art = persistkit.save(bert, tmp_path / "saved", **options)
    assert art.backend == "hf"  # chosen by the adapter's vote
    assert art.manifest.model["family"] == "hf"
    again = transformers.AutoModelForSequenceClassification.from_pretrained(art.path).eval()
    np.testing.assert_array_equal(_logits(again, IDS), _logits(bert, IDS))
    assert again.config.id2label == LABELS
    monkeypatch.setenv("PERSISTKIT_HOME", str(tmp_path / "someone-else"))
    np.testing.assert_array_equal(persistkit.predict(art.path, IDS), _logits(bert, IDS))


def test_a_subclass_defined_elsewhere_is_not_saved_as_hf(bert: Any, tmp_path: Path) -> None:
    class Tweaked(transformers.BertForSequenceClassification):
        pass

    model = Tweaked(bert.config).eval()
    with pytest.raises(persistkit.errors.CannotSaveError, match="transformers' own classes"):
        persistkit.save(model, tmp_path / "tweaked", backend="hf")


def test_scan_of_a_folder_is_its_default_load(bert: Any, tmp_path: Path) -> None:
    """config.json is no pickle: a foreign folder's verdict is its backend's load."""
    from persistkit.cli.scan import scan_report

    folder = _folder(bert, tmp_path / "bert")
    report = scan_report(str(folder))
    assert report["backend"] == "hf" and report["clean"] and report["loads_by_default"]
    config = (folder / "config.json").read_text()
    config = config.replace('"architectures"', '"auto_map": {}, "architectures"')
    (folder / "config.json").write_text(config)
    refused = scan_report(str(folder))
    assert not refused["clean"] and "auto_map" in refused["files"][0]["refused"]


def test_a_picture_for_an_image_folder_is_read_with_its_preprocessor_config(
    vit: Any, tmp_path: Path
) -> None:
    """The folder's preprocessor_config.json is its preprocess record: persistkit's answer
    on a photo is transformers' own (processor, then model, then softmax)."""
    from click.testing import CliRunner
    from PIL import Image

    from persistkit.cli import main

    folder = _folder(vit, tmp_path / "vit")
    size = vit.config.image_size
    processor = transformers.ViTImageProcessor(size={"height": size, "width": size})
    processor.save_pretrained(folder)
    photo = tmp_path / "photo.png"
    pixels = np.random.default_rng(5).integers(0, 256, size=(50, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photo)
    with torch.no_grad():
        logits = vit(**processor(Image.open(photo), return_tensors="pt")).logits[0]
    expected = torch.softmax(logits.double(), -1).numpy()
    [answer] = persistkit.answer(folder, photo)
    label = vit.config.id2label[int(expected.argmax())]
    assert answer.label == label
    assert answer.score == pytest.approx(float(expected.max()), abs=1e-5)
    result = CliRunner().invoke(main, ["predict", str(folder), str(photo)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{photo}: {answer}"


def test_the_upload_page_answers_a_picture_for_an_image_folder(vit: Any, tmp_path: Path) -> None:
    from PIL import Image
    from starlette.testclient import TestClient

    from persistkit.server import ModelRepository, create_app

    folder = _folder(vit, tmp_path / "vit")
    size = vit.config.image_size
    transformers.ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(photo)
    [expected] = persistkit.answer(folder, photo)
    with TestClient(create_app(ModelRepository([str(folder)]))) as client:
        page = client.post("/ui/predict/vit", content=photo.read_bytes()).json()
    assert page["answers"][0]["text"] == str(expected)
