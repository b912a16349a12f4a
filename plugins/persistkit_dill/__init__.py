"""The ``dill`` backend: pickles even more of Python (interactive sessions, generators' code).
Loading a dill payload runs its code, so only trusted (or your own) artifacts load.
"""

from __future__ import annotations

from persistkit import BackendInfo, PickleProtocolBackend


class DillBackend(PickleProtocolBackend):
    info = BackendInfo(
        "dill",
        description="dill: serializes most of Python, including interactive definitions",
        restricted=True,
        append_only=True,
        save_options=("protocol",),
        load_options=(),
        requires=("dill",),
        extra="dill",
    )
    module_name = "dill"
    file_name = "model.dill"

    def cannot_save_hint(self) -> str:
        return "this object holds something no pickler can store (an open file, lock or socket)"


plugin = DillBackend()
