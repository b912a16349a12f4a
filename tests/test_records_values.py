"""The records a load makes are written out by hand (a dataclass costs ~1 ms to define at
import, on every first load): they keep the value semantics the dataclasses had. Equality
over every field, immutability and hashing where the dataclass was frozen, a repr naming the
fields, pickling, and ``Manifest.replace`` in place of ``dataclasses.replace``."""

from __future__ import annotations

import copy
import pickle

import pytest

from persistkit.errors import ManifestError
from persistkit.manifest import FileEntry, Manifest
from persistkit.safety import TrustPolicy
from persistkit.values import Value

SHA = "a" * 64
B3 = "b" * 64


def test_file_entries_are_values() -> None:
    entry = FileEntry("model.joblib", 10, sha256=SHA)
    assert entry == FileEntry("model.joblib", 10, SHA)
    assert entry != FileEntry("model.joblib", 11, SHA)
    assert entry != FileEntry("model.joblib", 10, blake3=SHA)
    assert len({entry, FileEntry("model.joblib", 10, SHA)}) == 1
    assert repr(entry) == f"FileEntry(path='model.joblib', size=10, sha256='{SHA}', blake3=None)"
    assert pickle.loads(pickle.dumps(entry)) == entry
    assert copy.deepcopy(entry) == entry
    assert entry != ("model.joblib", 10, SHA, None)


def test_a_file_entry_cannot_be_changed() -> None:
    entry = FileEntry("model.joblib", 10, blake3=B3)
    with pytest.raises(AttributeError, match="cannot be changed"):
        entry.size = 11  # type: ignore[misc]
    with pytest.raises(AttributeError, match="cannot be changed"):
        del entry.path
    with pytest.raises(AttributeError):
        entry.extra = 1  # type: ignore[attr-defined]
    assert entry.size == 10


@pytest.mark.parametrize("digests", [{}, {"sha256": SHA, "blake3": B3}])
def test_a_file_entry_has_exactly_one_digest(digests: dict[str, str]) -> None:
    with pytest.raises(ManifestError, match="exactly one digest"):
        FileEntry("model.joblib", 10, **digests)


def test_trust_policies_are_immutable_hashable_values() -> None:
    policy = TrustPolicy(trusted_globals=frozenset({"a.B"}), source="x")
    assert policy == TrustPolicy(False, frozenset({"a.B"}), "untrusted by default", "x")
    assert policy != TrustPolicy(trusted_globals=frozenset({"a.C"}), source="x")
    assert policy != TrustPolicy(trusted_globals=frozenset({"a.B"}), source="x", trust_all=True)
    assert hash(policy) == hash(TrustPolicy(trusted_globals=frozenset({"a.B"}), source="x"))
    assert pickle.loads(pickle.dumps(policy)) == policy
    assert "trusted_globals=frozenset({'a.B'})" in repr(policy)
    assert repr(policy).startswith("TrustPolicy(trust_all=False, ")
    with pytest.raises(AttributeError, match="cannot be changed"):
        policy.trust_all = True  # type: ignore[misc]
    assert policy.trust_all is False
    assert TrustPolicy().max_decompressed_bytes == 8 * 1024**3


def test_manifests_compare_every_field_but_their_source_text() -> None:
    files = [FileEntry("model.joblib", 10, SHA)]
    one = Manifest("joblib", files, created_at="2026-01-01T00:00:00Z")
    two = Manifest(backend="joblib", files=list(files), created_at="2026-01-01T00:00:00Z")
    assert one == two
    two.source_text = '{"format": "persistkit/2"}'  # where it was read from: not compared
    assert one == two
    for field, value in [("tags", {"stage": "prod"}), ("version", 3), ("metrics", {"a": 1.0})]:
        changed = one.replace(**{field: value})
        assert changed != one
        assert getattr(changed, field) == value
    assert "backend='joblib'" in repr(one)
    assert "source_text" not in repr(two)
    with pytest.raises(TypeError):
        hash(one)


def test_fresh_manifests_do_not_share_their_mutable_defaults() -> None:
    one, two = Manifest("pickle", []), Manifest("pickle", [])
    one.tags["a"] = "b"
    one.notes.append("n")
    assert two.tags == {} and two.notes == []
    assert one.created_at.endswith("Z")  # made when the manifest is, in UTC


def test_replace_keeps_what_a_seal_covers_and_refuses_unknown_fields() -> None:
    parsed = Manifest.from_json(Manifest("pickle", [FileEntry("m.pkl", 1, SHA)]).to_json())
    sealed = parsed.sealed_source
    assert sealed is not None
    renamed = parsed.replace(name="m", version=2)
    assert (renamed.name, renamed.version) == ("m", 2)
    assert renamed.sealed_source == sealed  # the name and version are not sealed
    assert parsed.name is None  # the original is unchanged
    with pytest.raises(TypeError, match="no field colour"):
        parsed.replace(colour="red")


def _records() -> list[Value]:
    from persistkit.environment import Mismatch
    from persistkit.manager import PluginEntry
    from persistkit.refs import Ref
    from persistkit.safety.safetensors_format import TensorEntry
    from persistkit.verified import FileIdentity

    return [
        Ref("digits", version=3),
        FileIdentity(1, 2, 3, 4, 5),
        Mismatch("scikit-learn", "1.3.2", None),
        PluginEntry("joblib", "persistkit_joblib:plugin", backends=("joblib",)),
        TensorEntry("w", "F32", (2, 3), 0, 24),
        FileEntry("m.pkl", 1, SHA),
        TrustPolicy(),
    ]


@pytest.mark.parametrize("record", _records(), ids=lambda r: type(r).__name__)
def test_every_small_record_is_an_immutable_value(record: Value) -> None:
    assert record == pickle.loads(pickle.dumps(record))
    assert hash(record) == hash(copy.copy(record))
    first = record._fields[0]
    assert repr(record).startswith(f"{type(record).__name__}({first}=")
    with pytest.raises(AttributeError, match="cannot be changed"):
        setattr(record, first, None)
    changed = record.replace(**{first: "other"})
    assert getattr(changed, first) == "other" and changed != record
    assert getattr(record, first) != "other"  # the original is unchanged
    assert record.replace() == record
    with pytest.raises(TypeError, match="no field"):
        record.replace(colour="red")
    assert record != record._values()  # a record is not a tuple
    assert tuple(record) == record._values()  # but it unpacks like the NamedTuples it replaced


def test_records_of_two_kinds_are_never_equal() -> None:
    from persistkit.verified import FileIdentity

    class Other(FileIdentity):
        __slots__ = ()

    assert FileIdentity(1, 2, 3, 4, 5) != Other(1, 2, 3, 4, 5)
