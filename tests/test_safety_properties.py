"""Property: on plain data, the restricted unpickler agrees with pickle exactly."""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from persistkit.safety import TrustPolicy, audit_pickle

leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.complex_numbers(allow_nan=False)
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=5)
        | st.frozensets(st.integers(), max_size=5)
        | st.sets(st.text(max_size=3), max_size=5)
    ),
    max_leaves=25,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return type(a) is type(b) and a == b


@settings(max_examples=150, deadline=None)
@given(value=values, protocol=st.integers(0, 5), shared=st.booleans())
def test_restricted_load_equals_pickle_on_plain_data(
    value: Any, protocol: int, shared: bool
) -> None:
    obj = [value, value] if shared else value  # shared: exercises the memo
    data = pickle.dumps(obj, protocol=protocol)
    loaded = TrustPolicy().unpickle(io.BytesIO(data))
    assert _same(loaded, pickle.loads(data)) or loaded == pickle.loads(data)


@settings(max_examples=100, deadline=None)
@given(value=values, protocol=st.integers(0, 5))
def test_auditor_counts_the_same_opcodes_as_pickletools(value: Any, protocol: int) -> None:
    data = pickle.dumps(value, protocol=protocol)
    assert audit_pickle(data).opcodes == sum(1 for _ in pickletools.genops(data))
