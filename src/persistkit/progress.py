"""Progress bars for long transfers: drawn on a terminal only, never in logs or pipes.

A bar is shown when stderr is a terminal, the transfer is at least ``MIN_BYTES`` long, and
nobody asked for quiet (``set_quiet(True)``, the CLI's ``--quiet``, or ``PERSISTKIT_QUIET=1``).
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import TextIO

MIN_BYTES = 8 * 1024 * 1024
_REDRAW_SECONDS = 0.1
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Turn every progress bar of this process off (``True``) or back on."""
    global _quiet
    _quiet = quiet


def enabled(stream: TextIO | None = None) -> bool:
    """True when a bar would be drawn on ``stream`` (default: stderr)."""
    stream = sys.stderr if stream is None else stream
    if _quiet or os.environ.get("PERSISTKIT_QUIET"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """A one-line byte counter: ``with Progress("download x", total) as bar: bar.update(n)``."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self.active = total >= MIN_BYTES and enabled(self.stream)
        self._started = time.monotonic()
        self._drawn_at = 0.0

    def update(self, n: int) -> None:
        self.done += n
        if not self.active:
            return
        now = time.monotonic()
        if now - self._drawn_at >= _REDRAW_SECONDS or self.done >= self.total:
            self._drawn_at = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        fraction = self.done / self.total if self.total else 1.0
        width = 24
        filled = int(width * min(fraction, 1.0))
        rate = self.done / max(now - self._started, 1e-6) / 1e6
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} "
            f"{self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB {rate:.1f} MB/s"
        )
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.active:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


class CountProgress(Progress):
    """A one-line counter of finished pieces of work (``predict [####....] 3/40 partitions``),
    for long jobs measured in items rather than bytes; shown on a terminal when there is more
    than one piece."""

    def __init__(
        self, label: str, total: int, *, unit: str = "items", stream: TextIO | None = None
    ) -> None:
        super().__init__(label, total, stream=stream)
        self.unit = unit
        self.active = total > 1 and enabled(self.stream)

    def _draw(self, now: float) -> None:
        fraction = self.done / self.total if self.total else 1.0
        width = 24
        filled = int(width * min(fraction, 1.0))
        rate = self.done / max(now - self._started, 1e-6)
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} {self.unit} {rate:.1f}/s"
        )
        self.stream.flush()
