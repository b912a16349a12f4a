"""The ``cloudpickle`` backend: pickles lambdas, closures and classes defined in ``__main__``
by value. Loading such a payload runs its code, so only trusted (or your own) artifacts load.
"""

from __future__ import annotations

from persistkit import BackendInfo, PickleProtocolBackend


class CloudpickleBackend(PickleProtocolBackend):
    info = BackendInfo(
        "cloudpickle",
        description="cloudpickle: also lambdas, closures, notebook classes (by value)",
        restricted=True,
        append_only=True,
        save_options=("protocol",),
        load_options=(),
        requires=("cloudpickle",),
        extra="cloudpickle",
    )
    module_name = "cloudpickle"
    file_name = "model.cloudpickle"

    def cannot_save_hint(self) -> str:
        return 'try backend="dill" (pip install "persistkit[dill]")'


plugin = CloudpickleBackend()
