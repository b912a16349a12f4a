"""The stream auditor's rules, and broken or truncated files of every format."""

from __future__ import annotations

import bz2
import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from hostile.corpus import old_joblib_wrapper
from persistkit.errors import FormatError, PersistkitError, UntrustedArtifactError
from persistkit.safety import TrustPolicy
from persistkit.safety.pickle_audit import audit_pickle

SAMPLE = {"w": np.arange(6.0).reshape(2, 3), "name": "model", "n": 3, "t": (1.5, None, True)}


def _load(data: bytes) -> object:
    return TrustPolicy().unpickle(io.BytesIO(data))


@pytest.mark.parametrize("protocol", range(6))
def test_every_truncation_of_a_pickle_is_a_format_error(protocol: int) -> None:
    data = pickle.dumps(SAMPLE, protocol=protocol)
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            _load(data[:cut])


def test_bytes_after_stop_are_refused() -> None:
    with pytest.raises(FormatError, match="after its STOP"):
        _load(pickle.dumps(1, protocol=4) + b"\x00")


def test_length_beyond_the_bytes_left_is_refused() -> None:
    data = b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"abc."
    with pytest.raises(FormatError, match="runs past the end"):
        audit_pickle(data)


def test_frame_longer_than_the_stream_is_refused() -> None:
    data = b"\x80\x04\x95" + struct.pack("<Q", 1000) + b"K\x01."
    with pytest.raises(FormatError, match="runs past the end"):
        audit_pickle(data)


def test_opcode_straddling_a_frame_end_is_refused() -> None:
    data = b"\x80\x04\x95" + struct.pack("<Q", 1) + b"J\x01\x00\x00\x00."
    with pytest.raises(FormatError, match="straddles"):
        audit_pickle(data)


def test_reading_an_unwritten_memo_slot_is_refused() -> None:
    with pytest.raises(FormatError, match="memo slot 7"):
        audit_pickle(b"\x80\x04h\x07.")


def test_memo_index_far_beyond_use_is_refused() -> None:
    with pytest.raises(FormatError, match="memo index"):
        audit_pickle(b"\x80\x04K\x01r\xff\xff\xff\x7f.")


def test_stack_underflow_is_refused() -> None:
    with pytest.raises(FormatError, match="underflow"):
        audit_pickle(b"\x80\x04R.")


def test_unbalanced_stop_is_refused() -> None:
    with pytest.raises(FormatError, match="unbalanced"):
        audit_pickle(b"\x80\x04K\x01K\x02.")


def test_unknown_opcode_is_refused() -> None:
    with pytest.raises(FormatError, match="unknown opcode"):
        audit_pickle(b"\x80\x04\xff.")


@pytest.mark.parametrize("opcode", [b"\x97", b"\x98"])
def test_out_of_band_buffers_are_refused(opcode: bytes) -> None:
    with pytest.raises(UntrustedArtifactError):
        audit_pickle(b"\x80\x05" + opcode + b".")


def test_persistent_ids_are_refused_in_plain_pickles() -> None:
    with pytest.raises(UntrustedArtifactError, match="persistent"):
        _load(b"\x80\x04K\x01Q.")


def test_nothing_is_imported_when_one_global_is_untrusted(tmp_path: Path) -> None:
    # the allowed global comes first; refusal must still happen before anything is built
    data = pickle.dumps([np.zeros(1), Counter := __import__("collections").Counter()], 4)
    del Counter
    with pytest.raises(UntrustedArtifactError) as info:
        _load(data)
    assert info.value.globals_needed == ["collections.Counter"]


def test_codecs_encode_is_only_latin1() -> None:
    import _codecs

    class Rot:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return _codecs.encode, ("abc", "rot13")

    with pytest.raises(UntrustedArtifactError, match="latin1"):
        _load(pickle.dumps(Rot(), 2))


def test_reconstructor_base_must_be_the_builtin_itself_not_equal_to_it() -> None:
    # np.array([object]) == object is array([True]): with `in`, it passed as the base, and
    # ndarray.__new__ was called directly (which no pickle does)
    inner = pickle.dumps(np.array([object], dtype=object), 2)[2:-1]
    data = b"\x80\x02ccopyreg\n_reconstructor\ncnumpy\nndarray\n" + inner + b"K\x02K\x03\x86\x87R."
    with pytest.raises(UntrustedArtifactError, match="_reconstructor"):
        _load(data)


def test_bytes_constructor_refuses_a_size() -> None:
    class Zeros:
        def __reduce__(self) -> tuple[object, tuple[int]]:
            return bytes, (10,)

    with pytest.raises(UntrustedArtifactError, match="builtins.bytes"):
        _load(pickle.dumps(Zeros(), 2))


@pytest.mark.parametrize("via_memo", [False, True])
def test_build_on_an_imported_class_is_refused(via_memo: bool) -> None:
    # BUILD on a class (not an instance) would setattr on it: a payload of allowed names only
    # could rewrite a library class for the rest of the process
    from scipy.interpolate import BSpline

    target = b"cscipy.interpolate._bsplines\nBSpline\n" + (b"q\x00" if via_memo else b"")
    state = b"N}X\x0b\x00\x00\x00persistkit_cnumpy\nmean\ns\x86"
    data = b"\x80\x02" + target + (b"0h\x00" if via_memo else b"") + state + b"b."
    with pytest.raises(UntrustedArtifactError, match="BUILD"):
        _load(data)
    assert not hasattr(BSpline, "persistkit_")


def test_tuples_nested_deeper_than_a_pickler_writes_are_refused() -> None:
    # hashing a tuple nested millions deep (here: as a dict key) crashes CPython in C
    data = b"\x80\x04}" + b")" + b"\x85" * 3000 + b"Ns."
    with pytest.raises(FormatError, match="nest more than 1000 deep"):
        _load(data)


def test_objects_built_from_nested_tuples_count_towards_the_depth() -> None:
    # slice(slice(...(None))): each call nests its argument tuple (and slices hash it)
    depth = 600
    data = b"\x80\x04cbuiltins\nslice\n\x94" + b"h\x00" * depth + b"N" + b"\x85R" * depth
    with pytest.raises(FormatError, match="nest more than 1000 deep|other than integers"):
        _load(data + b"0.")


def test_named_tuples_built_from_nested_tuples_count_towards_the_depth() -> None:
    # copyreg._reconstructor(Hyperparameter, tuple, (inner,)) makes a named tuple around
    # `inner`: alternating it with plain tuples must not reset the depth count
    level = (
        b"ccopyreg\n_reconstructor\n"
        b"csklearn.gaussian_process.kernels\nHyperparameter\ncbuiltins\ntuple\n"
    )
    depth = 600
    data = b"\x80\x02" + level * depth + b")" + b"\x85\x87R" * depth + b"."
    with pytest.raises(FormatError, match="nest more than 1000 deep"):
        _load(data)


# -- joblib -----------------------------------------------------------------------------------


def _joblib(tmp_path: Path, compress: object = 0, obj: object = SAMPLE) -> Path:
    import joblib

    path = tmp_path / "m.joblib"
    joblib.dump(obj, path, compress=compress)
    return path


@pytest.mark.parametrize("compress", [0, 3, ("bz2", 3), ("xz", 3)])
def test_every_tenth_truncation_of_a_joblib_file_is_a_format_error(
    compress: object, tmp_path: Path
) -> None:
    data = _joblib(tmp_path, compress).read_bytes()
    cut_path = tmp_path / "cut.joblib"
    for cut in range(0, len(data), 10):
        cut_path.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            TrustPolicy().load_joblib(cut_path)


def test_joblib_array_bytes_cut_short_are_refused(tmp_path: Path) -> None:
    data = _joblib(tmp_path, obj=np.arange(1000.0)).read_bytes()
    (tmp_path / "short.joblib").write_bytes(data[:-500] + b".")
    with pytest.raises(FormatError):
        TrustPolicy().load_joblib(tmp_path / "short.joblib")


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.joblib"
    path.write_bytes(zlib.compress(b"\x00" * (4 * 1024**2), 9))
    policy = TrustPolicy(max_decompressed_bytes=1024**2)
    with pytest.raises(FormatError, match="decompression bomb"):
        policy.load_joblib(path)


def test_compression_ratio_cap_applies_beyond_the_floor(tmp_path: Path) -> None:
    from persistkit.safety.joblib_reader import decompress

    raw = bz2.compress(b"\x00" * (80 * 1024**2))
    with pytest.raises(FormatError, match="decompression bomb"):
        decompress(raw, "bz2", TrustPolicy(), what="test")


def test_data_after_the_compressed_stream_is_refused(tmp_path: Path) -> None:
    path = _joblib(tmp_path, 3)
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(FormatError, match="after the end"):
        TrustPolicy().load_joblib(path)


def test_old_joblib_companion_npy_files_load_without_pickle(tmp_path: Path) -> None:
    # joblib < 0.10 wrote arrays to NAME_01.npy beside the pickle, via NDArrayWrapper
    np.save(tmp_path / "m.pkl_01.npy", np.arange(5.0), allow_pickle=False)
    np.save(tmp_path / "m.pkl_02.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    stream = (
        b"\x80\x02}q\x00(X\x01\x00\x00\x00a"
        + old_joblib_wrapper(b"m.pkl_01.npy")
        + b"X\x01\x00\x00\x00b"
        + old_joblib_wrapper(b"m.pkl_02.npy")
        + b"u."
    )
    (tmp_path / "m.pkl").write_bytes(stream)
    loaded = TrustPolicy().load_joblib(tmp_path / "m.pkl")
    assert np.array_equal(loaded["a"], np.arange(5.0))
    assert list(loaded["b"]) == [1, "a"]


def test_old_joblib_companion_outside_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.pkl").write_bytes(b"\x80\x02" + old_joblib_wrapper(b"../x.npy") + b".")
    with pytest.raises(FormatError, match="outside its folder"):
        TrustPolicy().load_joblib(tmp_path / "m.pkl")


def test_old_joblib_companion_that_is_not_an_npy_file_is_refused(tmp_path: Path) -> None:
    # numpy.load reads a zip as an .npz archive whatever the name says
    np.savez(tmp_path / "m.pkl_01.npz", a=np.arange(3.0))
    (tmp_path / "m.pkl_01.npz").rename(tmp_path / "m.pkl_01.npy")
    (tmp_path / "m.pkl").write_bytes(b"\x80\x02" + old_joblib_wrapper(b"m.pkl_01.npy") + b".")
    with pytest.raises(FormatError, match="not an .npy array"):
        TrustPolicy().load_joblib(tmp_path / "m.pkl")


@pytest.mark.parametrize("kind", ["empty", "folder"])
def test_old_joblib_companion_that_cannot_be_read_is_a_format_error(
    tmp_path: Path, kind: str
) -> None:
    companion = tmp_path / "m.pkl_01.npy"
    if kind == "folder":
        companion.mkdir()
    else:
        companion.write_bytes(b"")
    (tmp_path / "m.pkl").write_bytes(b"\x80\x02" + old_joblib_wrapper(b"m.pkl_01.npy") + b".")
    with pytest.raises(FormatError, match="cannot be read"):
        TrustPolicy().load_joblib(tmp_path / "m.pkl")


def test_object_array_in_companion_file_is_audited(tmp_path: Path) -> None:
    evil = np.array([__import__("collections").Counter()], dtype=object)
    np.save(tmp_path / "m.pkl_01.npy", evil, allow_pickle=True)
    (tmp_path / "m.pkl").write_bytes(b"\x80\x02" + old_joblib_wrapper(b"m.pkl_01.npy") + b".")
    with pytest.raises(UntrustedArtifactError):
        TrustPolicy().load_joblib(tmp_path / "m.pkl")


# -- other formats ----------------------------------------------------------------------------


def test_truncated_safetensors_file_is_a_format_error(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    import persistkit

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.arange(8.0)}, str(path))
    data = path.read_bytes()
    for cut in (0, 4, 8, 20, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(PersistkitError):
            persistkit.load(path)


def test_every_tenth_truncation_of_a_torch_file_is_a_format_error(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    src = tmp_path / "m.pt"
    torch.save(torch.nn.Linear(2, 2), src)
    data = src.read_bytes()
    cut_path = tmp_path / "cut.pt"
    for cut in range(0, len(data), 10):
        cut_path.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            TrustPolicy().load_torch(cut_path)


def test_model_its_own_library_finds_broken_is_a_format_error(tmp_path: Path) -> None:
    # found by the fuzzer: a renamed attribute made scikit-learn's fitted check raise
    # AttributeError inside load's freeze step
    from sklearn.ensemble import RandomForestClassifier

    import persistkit

    X = np.random.default_rng(0).normal(size=(30, 2))
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(X, X[:, 0] > 0)
    del forest.criterion
    path = tmp_path / "broken.pkl"
    path.write_bytes(pickle.dumps(forest))
    with pytest.raises(FormatError, match="broken"):
        persistkit.load(path)
