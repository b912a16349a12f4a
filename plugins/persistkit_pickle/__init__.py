"""The ``pickle`` backend: Python's own pickle, protocol 5.

Untrusted pickles load only through persistkit's restricted unpickler (an allow-list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import persistkit
from persistkit import BackendInfo, PickleProtocolBackend, Recommendation

_PICKLE_PROTOCOL_OPCODE = 0x80


class PickleBackend(PickleProtocolBackend):
    info = BackendInfo(
        "pickle",
        description="Python's pickle (protocol 5); fast, everywhere, code-bearing",
        restricted=True,
        append_only=True,
        save_options=("protocol",),
        load_options=(),
        suffixes=(".pkl", ".pickle"),
    )
    module_name = "pickle"
    file_name = "model.pkl"

    def can_save(self, model: Any) -> bool:
        # plain pickle stores functions and classes by reference: those it cannot import
        # back (lambdas, closures, things defined in __main__) are not for it
        target = model if callable(model) and hasattr(model, "__qualname__") else None
        if target is None:
            return True
        qualname = getattr(target, "__qualname__", "")
        return (
            "<lambda>" not in qualname
            and "<locals>" not in qualname
            and getattr(target, "__module__", "__main__") != "__main__"
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        # by suffix, or a bare pickle stream: PROTO opcode then a protocol number we know
        return super().sniff(path, head) or (
            len(head) >= 2 and head[0] == _PICKLE_PROTOCOL_OPCODE and 2 <= head[1] <= 5
        )

    @persistkit.hookimpl(trylast=True)
    def persistkit_recommend(self, model: Any) -> list[Recommendation]:
        return [Recommendation("pickle", 10, "pickle can store most Python objects")]


plugin = PickleBackend()
