"""Payload files are opened once, as regular files, and what is loaded is what was hashed.

The invariant (docs/security.md, "Files"): every payload file of a load is opened once with
``O_NOFOLLOW``, checked to be a regular file with ``fstat``, and hashed and read from that same
descriptor (or the same bytes). So:

* a symlink, FIFO, device or other non-regular entry in an artifact folder, a bare model file
  or a joblib companion file beside one is refused with a clear error — never followed, and a
  FIFO never makes a load hang (every test here runs under an alarm);
* a payload replaced after its hash was checked is never what loads with the seal's trust;
* old joblib companion ``.npy`` files are listed and hashed like any other file, and a
  companion an artifact's manifest does not list is refused;
* ``persistkit scan`` refuses what ``load`` refuses.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import persistkit
from hostile.corpus import old_joblib_wrapper
from persistkit import api
from persistkit.cli import main
from persistkit.digests import hexdigest_of
from persistkit.errors import FormatError, IntegrityError, PersistkitError

# what a refusal of a non-regular entry must say
NOT_REGULAR = r"symbolic link|FIFO|device|socket|not a regular file"
KINDS = ["symlink", "fifo", "device"]
ORIGINAL = {"weights": [1.0, 2.0, 3.0], "name": "original"}
SWAPPED = {"weights": [6.0, 6.0, 6.0], "name": "swapped in after the hash check"}


class Blocked(BaseException):
    """Raised by the alarm: not an OSError (nor an Exception) that a reader could turn into
    some other error."""


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """Fail (instead of hanging the suite) if a load blocks, e.g. opening a FIFO."""

    def _timeout(signum: int, frame: Any) -> None:
        raise Blocked("the load blocked (timed out)")

    previous = signal.signal(signal.SIGALRM, _timeout)
    # then again every second: code that catches the first interruption blocks again
    signal.setitimer(signal.ITIMER_REAL, 20, 1)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _make_special(path: Path, kind: str, elsewhere: Path) -> None:
    """Replace ``path`` by a symlink to an identical copy, a FIFO, or a symlink to a device."""
    data = path.read_bytes() if path.exists() else b""
    path.unlink(missing_ok=True)
    if kind == "symlink":
        elsewhere.mkdir(parents=True, exist_ok=True)
        copy = elsewhere / path.name
        copy.write_bytes(data)  # the same bytes: only the link itself is wrong
        path.symlink_to(copy)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")


def _pickle_artifact(where: Path) -> Path:
    return persistkit.save(dict(ORIGINAL), where, backend="pickle").path


def _scan(*args: str) -> Any:
    return CliRunner().invoke(main, ["scan", *args])


# -- entries of an artifact folder -----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_non_regular_payload_in_an_artifact_is_refused(tmp_path: Path, kind: str) -> None:
    art = _pickle_artifact(tmp_path / "art")
    _make_special(art / "model.pkl", kind, tmp_path / "outside")
    for verify in (True, False):
        with pytest.raises(PersistkitError, match=NOT_REGULAR) as info:
            persistkit.load(art, verify=verify)
        assert "model.pkl" in info.value.message and info.value.hint


@pytest.mark.parametrize("kind", KINDS)
def test_scan_refuses_a_non_regular_payload_like_load(tmp_path: Path, kind: str) -> None:
    art = _pickle_artifact(tmp_path / "art")
    _make_special(art / "model.pkl", kind, tmp_path / "outside")
    result = _scan(str(art), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert not report["loads_by_default"]
    assert any(f["error"] and "model.pkl" in f["path"] for f in report["files"])


@pytest.mark.parametrize("kind", KINDS)
def test_non_regular_manifest_is_refused(tmp_path: Path, kind: str) -> None:
    art = _pickle_artifact(tmp_path / "art")
    _make_special(art / "persistkit.json", kind, tmp_path / "outside")
    with pytest.raises(PersistkitError, match=NOT_REGULAR):
        persistkit.load(art)
    assert _scan(str(art)).exit_code == 1


@pytest.mark.parametrize("kind", KINDS)
def test_unlisted_non_regular_entry_in_an_artifact_is_refused(tmp_path: Path, kind: str) -> None:
    art = _pickle_artifact(tmp_path / "art")
    (art / "extra.bin").write_bytes(b"x")
    _make_special(art / "extra.bin", kind, tmp_path / "outside")
    with pytest.raises(PersistkitError, match=r"extra\.bin"):
        persistkit.load(art)
    assert _scan(str(art)).exit_code == 1


def test_symlinked_folder_inside_an_artifact_is_refused(tmp_path: Path) -> None:
    model = persistkit.save(
        lambda x: np.asarray(x) * 2, tmp_path / "art", example=np.arange(3.0)
    ).path
    real = tmp_path / "outside" / "example"
    real.parent.mkdir()
    os.rename(model / "example", real)
    (model / "example").symlink_to(real, target_is_directory=True)
    with pytest.raises(PersistkitError, match=NOT_REGULAR):
        persistkit.load(model)
    with pytest.raises(PersistkitError, match=NOT_REGULAR):
        persistkit.verify(model)


def test_non_regular_payload_in_a_store_version_is_refused(tmp_path: Path) -> None:
    store = persistkit.Store(tmp_path / "store")
    art = store.save(dict(ORIGINAL), "m", backend="pickle")
    _make_special(art.path / "model.pkl", "symlink", tmp_path / "outside")
    with pytest.raises(PersistkitError, match=NOT_REGULAR):
        store.load("m:1")
    assert _scan("m:1", "--store", str(tmp_path / "store")).exit_code == 1


@pytest.mark.parametrize("kind", KINDS)
def test_non_regular_manifest_in_a_store_version_is_refused(tmp_path: Path, kind: str) -> None:
    store = persistkit.Store(tmp_path / "store")
    art = store.save(dict(ORIGINAL), "m", backend="pickle")
    _make_special(art.path / "persistkit.json", kind, tmp_path / "outside")
    # a link is refused as such; a FIFO or device is no manifest, so no version (no hang)
    with pytest.raises(PersistkitError, match=NOT_REGULAR if kind == "symlink" else None):
        store.load("m:1")


def test_fifo_tags_file_in_a_store_version_is_refused(tmp_path: Path) -> None:
    store = persistkit.Store(tmp_path / "store")
    art = store.save(dict(ORIGINAL), "m", backend="pickle")
    os.mkfifo(art.path / "tags.json")
    with pytest.raises(PersistkitError, match=NOT_REGULAR):
        store.load("m:1")


def test_cached_copy_with_a_link_is_fetched_again(tmp_path: Path) -> None:
    store = persistkit.Store(f"memory://cache-{tmp_path.name}")
    store.save(dict(ORIGINAL), "m", backend="pickle")
    folder, _manifest, _name, _version = store.fetch("m:1")
    _make_special(folder / "model.pkl", "symlink", tmp_path / "outside")
    assert store.load("m:1") == ORIGINAL  # the damaged cache entry was replaced
    folder, _manifest, _name, _version = store.fetch("m:1")
    assert not (folder / "model.pkl").is_symlink()


def test_predict_cli_refuses_a_symlinked_payload(tmp_path: Path) -> None:
    art = persistkit.save(lambda x: np.asarray(x) * 2, tmp_path / "art").path
    payload = next(p for p in art.iterdir() if p.name.startswith("model."))
    _make_special(payload, "symlink", tmp_path / "outside")
    np.save(tmp_path / "x.npy", np.arange(3.0))
    result = CliRunner().invoke(main, ["predict", str(art), str(tmp_path / "x.npy")])
    assert result.exit_code == 1
    assert "symbolic link" in result.output


# -- bare files --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_non_regular_bare_file_is_refused(tmp_path: Path, kind: str) -> None:
    bare = tmp_path / "m.pkl"
    bare.write_bytes(pickle.dumps(dict(ORIGINAL), protocol=5))
    _make_special(bare, kind, tmp_path / "outside")
    with pytest.raises(PersistkitError, match=NOT_REGULAR) as info:
        persistkit.load(bare)
    assert "m.pkl" in info.value.message and info.value.hint
    assert _scan(str(bare)).exit_code == 1


def _old_joblib(folder: Path, name: str = "m.pkl", companion: str = "m.pkl_01.npy") -> Path:
    """An old joblib file whose one array is in a companion ``.npy`` beside it."""
    np.save(folder / companion, np.arange(5.0), allow_pickle=False)
    main_file = folder / name
    main_file.write_bytes(b"\x80\x02" + old_joblib_wrapper(companion.encode()) + b".")
    return main_file


@pytest.mark.parametrize("kind", KINDS)
def test_non_regular_companion_beside_a_bare_file_is_refused(tmp_path: Path, kind: str) -> None:
    main_file = _old_joblib(tmp_path)
    assert np.array_equal(persistkit.load(main_file), np.arange(5.0))  # the real thing loads
    _make_special(tmp_path / "m.pkl_01.npy", kind, tmp_path / "outside")
    with pytest.raises(PersistkitError, match=NOT_REGULAR) as info:
        persistkit.load(main_file)
    assert "m.pkl_01.npy" in info.value.message
    with pytest.raises(PersistkitError, match=NOT_REGULAR):
        persistkit.TrustPolicy().load_joblib(main_file)


# -- joblib companion files in artifacts -------------------------------------------------------


def _fake_old_joblib_dump(model: Any, filename: Any, compress: Any = 0) -> list[str]:
    """What joblib < 0.10's dump did: write the pickle plus NAME_01.npy, return both names."""
    folder = Path(filename).parent
    companion = Path(filename).name + "_01.npy"
    _old_joblib(folder, Path(filename).name, companion)
    return [str(filename), str(folder / companion)]


def test_saved_companion_files_are_listed_hashed_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joblib

    monkeypatch.setattr(joblib, "dump", _fake_old_joblib_dump)
    monkeypatch.setattr(joblib, "__version__", "0.9.4")
    art = persistkit.save({"anything": 1}, tmp_path / "art", backend="joblib").path
    manifest = persistkit.inspect(art)
    listed = {entry.path: entry for entry in manifest.files}
    assert set(listed) == {"model.joblib", "model.joblib_01.npy", "requirements.txt"}
    companion = art / "model.joblib_01.npy"
    entry = listed["model.joblib_01.npy"]
    assert entry.digest == hexdigest_of(entry.algorithm, companion.read_bytes())
    assert np.array_equal(persistkit.load(art), np.arange(5.0))
    # the companion is checked like any other listed file
    np.save(companion, np.arange(5.0) + 1, allow_pickle=False)
    with pytest.raises(IntegrityError, match="model.joblib_01.npy"):
        persistkit.load(art)


def _hand_made_artifact(folder: Path, backend: str, files: list[str]) -> Path:
    """An unsealed artifact listing ``files`` with their real hashes (someone else's)."""
    from persistkit.artifact import file_entries, write_manifest
    from persistkit.manifest import Manifest

    manifest = Manifest(backend=backend, files=file_entries(folder, files))
    write_manifest(folder, manifest)
    return folder


def test_companion_not_listed_in_the_manifest_is_refused(tmp_path: Path) -> None:
    art = tmp_path / "art"
    art.mkdir()
    _old_joblib(art, "model.joblib", "model.joblib_01.npy")
    _hand_made_artifact(art, "joblib", ["model.joblib"])  # the companion is not listed
    with pytest.raises(IntegrityError, match=r"model\.joblib_01\.npy.*not listed"):
        persistkit.load(art)
    _hand_made_artifact(art, "joblib", ["model.joblib", "model.joblib_01.npy"])
    assert np.array_equal(persistkit.load(art), np.arange(5.0))


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_non_regular_companion_in_an_artifact_is_refused(tmp_path: Path, kind: str) -> None:
    art = tmp_path / "art"
    art.mkdir()
    _old_joblib(art, "model.joblib", "model.joblib_01.npy")
    _hand_made_artifact(art, "joblib", ["model.joblib", "model.joblib_01.npy"])
    _make_special(art / "model.joblib_01.npy", kind, tmp_path / "outside")
    with pytest.raises(PersistkitError, match=NOT_REGULAR):
        persistkit.load(art, verify=False)
    assert _scan(str(art)).exit_code == 1


# -- a payload replaced between its hash check and its read -----------------------------------


def _swap_after_check(
    monkeypatch: pytest.MonkeyPatch, payload: Path, replace: Callable[[Path], None]
) -> list[bool]:
    """Make the load replace ``payload`` after the files were checked, before the backend reads
    it (``_check_backend_trust`` runs exactly there)."""
    swapped: list[bool] = []
    real = api._check_backend_trust

    def check_then_swap(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        if not swapped:
            replace(payload)
            swapped.append(True)

    monkeypatch.setattr(api, "_check_backend_trust", check_then_swap)
    return swapped


def _rename_over(data: bytes) -> Callable[[Path], None]:
    def replace(path: Path) -> None:
        tmp = path.with_name(".swap")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    return replace


def _write_in_place(data: bytes) -> Callable[[Path], None]:
    def replace(path: Path) -> None:
        with open(path, "r+b") as fh:
            fh.write(data)
            fh.truncate()

    return replace


def _loads_what_was_hashed(load: Callable[[], Any], expected: Any) -> None:
    """The load returns the hashed content, or refuses; never the swapped-in content."""
    try:
        loaded = load()
    except IntegrityError:
        return
    assert loaded == expected


@pytest.mark.parametrize("how", ["rename", "in-place"])
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "verified-record"])
def test_pickle_payload_swapped_after_its_hash_check_never_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, warm: bool
) -> None:
    art = _pickle_artifact(tmp_path / "art")  # sealed by our key: loads with full trust
    if warm:
        assert persistkit.load(art) == ORIGINAL  # leaves a verified record behind
    data = pickle.dumps(dict(SWAPPED), protocol=5)
    change = _rename_over(data) if how == "rename" else _write_in_place(data)
    swapped = _swap_after_check(monkeypatch, art / "model.pkl", change)
    _loads_what_was_hashed(lambda: persistkit.load(art), ORIGINAL)
    assert swapped


def test_joblib_payload_swapped_after_its_hash_check_never_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joblib

    art = persistkit.save(dict(ORIGINAL), tmp_path / "art", backend="joblib").path
    other = tmp_path / "other.joblib"
    joblib.dump(dict(SWAPPED), other)
    swapped = _swap_after_check(monkeypatch, art / "model.joblib", _rename_over(other.read_bytes()))
    _loads_what_was_hashed(lambda: persistkit.load(art), ORIGINAL)
    assert swapped


def test_torch_payload_swapped_after_its_hash_check_never_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    art = persistkit.save(model, tmp_path / "art", backend="torch").path
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 2), other)
    swapped = _swap_after_check(monkeypatch, art / "model.pt", _rename_over(other.read_bytes()))
    try:
        loaded = persistkit.load(art)
    except IntegrityError:
        loaded = None
    assert swapped
    if loaded is not None:
        assert torch.equal(loaded.weight, model.weight)


@pytest.mark.parametrize("remote", [False, True], ids=["local-store", "memory-store"])
def test_store_ref_payload_swapped_after_its_hash_check_never_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: bool
) -> None:
    url = f"memory://swap-{tmp_path.name}" if remote else str(tmp_path / "store")
    store = persistkit.Store(url)
    art = store.save(dict(ORIGINAL), "m", backend="pickle")
    folder, _manifest, _name, _version = store.fetch("m:1")  # the folder the load reads
    data = pickle.dumps(dict(SWAPPED), protocol=5)
    swapped = _swap_after_check(monkeypatch, folder / "model.pkl", _rename_over(data))
    _loads_what_was_hashed(lambda: store.load("m:1"), ORIGINAL)
    assert swapped and art.version == 1


def test_bare_file_swapped_between_sniff_and_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = tmp_path / "m.pkl"
    bare.write_bytes(pickle.dumps(dict(ORIGINAL), protocol=5))
    found = api.locate(bare)
    _rename_over(pickle.dumps(dict(SWAPPED), protocol=5))(bare)
    with pytest.raises(IntegrityError, match="changed"):
        api.load_located(found)


# -- torch zips: one reader, one answer -----------------------------------------------------


def test_torch_zip_with_a_member_named_twice_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    good = tmp_path / "good.pt"
    torch.save(torch.nn.Linear(2, 2), good)
    data_pkl = next(n for n in zipfile.ZipFile(good).namelist() if n.endswith("/data.pkl"))
    twice = tmp_path / "twice.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(twice, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename))
        evil = io.BytesIO()
        pickle.dump({"another": "data.pkl"}, evil, protocol=2)
        with pytest.warns(UserWarning, match="Duplicate name"):
            dst.writestr(data_pkl, evil.getvalue())
    with pytest.raises(FormatError, match="more than once"):
        persistkit.TrustPolicy().load_torch(twice)
    with pytest.raises(FormatError, match="more than once"):
        persistkit.load(twice)
    assert _scan(str(twice)).exit_code == 1


def test_scan_agrees_with_load_on_an_unlisted_companion(tmp_path: Path) -> None:
    art = tmp_path / "art"
    art.mkdir()
    _old_joblib(art, "model.joblib", "model.joblib_01.npy")
    _hand_made_artifact(art, "joblib", ["model.joblib"])  # the companion is not listed
    with pytest.raises(IntegrityError):
        persistkit.load(art)
    assert _scan(str(art)).exit_code == 1
    _hand_made_artifact(art, "joblib", ["model.joblib", "model.joblib_01.npy"])
    assert _scan(str(art)).exit_code == 0
