"""A restricted unpickler: imports only globals the trust policy allows."""

from __future__ import annotations

import io
import pickle
import pickletools
from typing import IO, TYPE_CHECKING, Any

from persistkit.errors import FormatError

if TYPE_CHECKING:
    from persistkit.safety.policy import TrustPolicy


def scan_globals(data: bytes) -> list[str]:
    """Every ``module.qualname`` a pickle stream would import, without running it."""
    found: list[str] = []
    strings: list[str] = []
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif opcode.name == "GLOBAL":
                module, name = str(arg).split(" ", 1)
                found.append(f"{module}.{name}")
            elif opcode.name == "STACK_GLOBAL":
                if len(strings) < 2:
                    found.append("<dynamic global>")
                else:
                    found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception as exc:
        raise FormatError(f"the pickle stream is corrupted or truncated: {exc}") from None
    return found


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fileobj: IO[bytes], policy: TrustPolicy) -> None:
        super().__init__(fileobj)
        self._policy = policy

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if not self._policy.allows(qualified):
            self._policy.refuse([qualified])
        return super().find_class(module, name)


def restricted_load(fileobj: IO[bytes], policy: TrustPolicy, *, what: str = "payload") -> Any:
    if policy.trust_all:
        return pickle.load(fileobj)
    data = fileobj.read()
    policy.refuse(scan_globals(data), what=what)

    try:
        return _RestrictedUnpickler(io.BytesIO(data), policy).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise FormatError(f"the {what} is corrupted or truncated: {exc}") from None
