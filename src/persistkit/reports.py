"""What ``verify`` reports (its own module: a load never needs the class, and defining a
frozen dataclass costs ~0.7 ms of a first load)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` proved about an artifact."""

    uri: str
    files_checked: int
    example_checked: bool
    identical: bool
    seal: str = "unsealed"  # one of persistkit.safety.SEAL_STATES

    def __str__(self) -> str:
        from persistkit.safety import SEAL_STATES

        sealed = SEAL_STATES.get(self.seal, self.seal)
        if not self.example_checked:
            return f"{self.uri}: {self.files_checked} files intact; no example stored; {sealed}"
        return (
            f"{self.uri}: {self.files_checked} files intact; example predictions identical; "
            f"{sealed}"
        )
