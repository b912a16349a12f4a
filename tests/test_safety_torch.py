"""Full-module torch.save files load through the allow-listed zip reader, never torch.load."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

import persistkit
from persistkit.errors import FormatError, UntrustedArtifactError
from persistkit.safety import TrustPolicy

torch = pytest.importorskip("torch")
nn = torch.nn


class UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: object) -> object:
        return self.fc(x)


def _net() -> object:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)
    ).eval()


def test_foreign_sequential_loads_with_identical_outputs(tmp_path: Path) -> None:
    model = _net()
    torch.save(model, tmp_path / "m.pt")
    loaded = TrustPolicy().load_torch(tmp_path / "m.pt")
    x = torch.randn(3, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_tied_weights_stay_tied(tmp_path: Path) -> None:
    shared = nn.Linear(2, 2)
    torch.save(nn.ModuleList([shared, shared]), tmp_path / "t.pt")
    loaded = TrustPolicy().load_torch(tmp_path / "t.pt")
    assert loaded[0].weight is loaded[1].weight


def test_tensor_views_and_dtypes_round_trip(tmp_path: Path) -> None:
    base = torch.arange(10.0)
    data = {"view": base[2:5], "half": torch.ones(3, dtype=torch.float16), "empty": torch.empty(0)}
    torch.save(data, tmp_path / "d.pt")
    loaded = TrustPolicy().load_torch(tmp_path / "d.pt")
    for key, value in data.items():
        assert torch.equal(loaded[key], value) and loaded[key].dtype == value.dtype


def test_user_module_class_needs_trust(tmp_path: Path) -> None:
    torch.save(UserNet(), tmp_path / "u.pt")
    with pytest.raises(UntrustedArtifactError) as info:
        TrustPolicy().load_torch(tmp_path / "u.pt")
    assert info.value.globals_needed == [f"{__name__}.UserNet"]
    loaded = TrustPolicy.from_argument([f"{__name__}.UserNet"]).load_torch(tmp_path / "u.pt")
    assert isinstance(loaded, UserNet)


def _rewrite(src: Path, dst: Path, change: dict[str, bytes | None], compress: int = 0) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compress) as zout:
        for info in zin.infolist():
            short = info.filename.split("/", 1)[1]
            if short in change:
                if change[short] is not None:
                    zout.writestr(info.filename, change[short])
                continue
            zout.writestr(info.filename, zin.read(info.filename))


def test_storage_shorter_than_its_record_is_refused(tmp_path: Path) -> None:
    torch.save(nn.Linear(4, 4), tmp_path / "m.pt")
    with zipfile.ZipFile(tmp_path / "m.pt") as zf:
        key = next(n.split("/", 1)[1] for n in zf.namelist() if "/data/" in n)
    _rewrite(tmp_path / "m.pt", tmp_path / "bad.pt", {key: b"\x00" * 4})
    with pytest.raises(FormatError, match="size"):
        TrustPolicy().load_torch(tmp_path / "bad.pt")


def test_missing_data_pkl_is_refused(tmp_path: Path) -> None:
    torch.save(nn.Linear(2, 2), tmp_path / "m.pt")
    _rewrite(tmp_path / "m.pt", tmp_path / "bad.pt", {"data.pkl": None})
    with pytest.raises(FormatError, match="data.pkl"):
        TrustPolicy().load_torch(tmp_path / "bad.pt")


def test_compressed_entries_are_refused(tmp_path: Path) -> None:
    torch.save(nn.Linear(2, 2), tmp_path / "m.pt")
    _rewrite(tmp_path / "m.pt", tmp_path / "z.pt", {}, compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(FormatError, match="compressed"):
        TrustPolicy().load_torch(tmp_path / "z.pt")


def test_entry_escaping_the_archive_is_refused(tmp_path: Path) -> None:
    torch.save(nn.Linear(2, 2), tmp_path / "m.pt")
    with zipfile.ZipFile(tmp_path / "m.pt", "a") as zf:
        zf.writestr("m/../../evil", b"x")
    with pytest.raises(FormatError):
        TrustPolicy().load_torch(tmp_path / "m.pt")


def test_storage_type_cannot_be_called_by_a_payload(tmp_path: Path) -> None:
    # data.pkl that calls torch.FloatStorage(10) itself, instead of using a persistent id
    import pickle

    class Bomb:
        def __reduce__(self) -> tuple[object, tuple[int]]:
            return torch.FloatStorage, (10,)

    torch.save({"ok": torch.zeros(1)}, tmp_path / "m.pt")
    _rewrite(tmp_path / "m.pt", tmp_path / "bomb.pt", {"data.pkl": pickle.dumps(Bomb(), 2)})
    with pytest.raises((UntrustedArtifactError, FormatError)):
        TrustPolicy().load_torch(tmp_path / "bomb.pt")


@pytest.mark.parametrize("numel", [0, 2])
def test_tensor_record_reaching_past_its_storage_is_refused(tmp_path: Path, numel: int) -> None:
    import pickle

    class Oversized:
        """A tensor whose recorded size is far larger than its storage."""

        def __reduce__(self) -> tuple[object, tuple[object, ...]]:
            import collections

            return torch._utils._rebuild_tensor_v2, (
                Storage(),
                0,
                (10**6,),
                (1,),
                False,
                collections.OrderedDict(),
            )

    class Storage:
        pass

    class Writer(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            if isinstance(obj, Storage):
                return ("storage", torch.FloatStorage, "0", "cpu", numel)
            return None

    torch.save({"ok": torch.zeros(1)}, tmp_path / "m.pt")
    buffer = __import__("io").BytesIO()
    Writer(buffer, protocol=2).dump(Oversized())
    _rewrite(
        tmp_path / "m.pt",
        tmp_path / "big.pt",
        {"data.pkl": buffer.getvalue(), "data/0": b"\x00" * (4 * numel)},
    )
    with pytest.raises(FormatError):
        TrustPolicy().load_torch(tmp_path / "big.pt")


def test_entry_name_that_is_not_utf8_is_a_format_error(tmp_path: Path) -> None:
    # found by the fuzzer: zipfile raised UnicodeDecodeError from its local header check
    torch.save(nn.Linear(2, 2), tmp_path / "m.pt")
    data = bytearray((tmp_path / "m.pt").read_bytes())
    data[30] = 0x80  # first byte of the first local file name
    (tmp_path / "m.pt").write_bytes(bytes(data))
    with pytest.raises(FormatError):
        TrustPolicy().load_torch(tmp_path / "m.pt")


@pytest.mark.parametrize(
    "stream",
    [
        # NEWOBJ of a rebuild function (found by the grammar fuzzer: TypeError escaped load)
        b"\x80\x02ctorch._utils\n_rebuild_parameter\n)\x81.",
        # NEWOBJ of a class torch's own weights-only reader allows, then BUILD onto it
        b"\x80\x02ctorch\ndevice\n)\x81}b.",
    ],
    ids=["newobj-of-a-function", "build-onto-device"],
)
def test_a_bare_torch_file_is_read_by_the_same_reader_scan_uses(
    tmp_path: Path, stream: bytes
) -> None:
    import torch

    from persistkit.errors import PersistkitError
    from persistkit.safety import audit_file

    torch.save({"w": torch.zeros(2)}, tmp_path / "m.pt")
    _rewrite(tmp_path / "m.pt", tmp_path / "bad.pt", {"data.pkl": stream})
    with pytest.raises(PersistkitError) as info:
        persistkit.load(tmp_path / "bad.pt")
    audit = audit_file(tmp_path / "bad.pt")
    assert not audit.clean
    assert isinstance(info.value, UntrustedArtifactError) == bool(audit.untrusted or audit.refused)
