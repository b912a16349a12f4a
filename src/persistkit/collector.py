"""Pausing Python's cyclic garbage collector while persistkit imports and loads.

A full (generation 2) collection walks every object the process holds. In a process that
has imported torch that is ~80 ms, and the allocations of persistkit's own imports, plugin
discovery and a load are often what tips the collector into one, so the first load paid for
a sweep over torch's objects. Nothing persistkit creates there is cyclic garbage worth
collecting at once, so collection is paused for the duration and then put back as it was.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collection_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block; re-enable it afterwards only if it was
    enabled before (nested and concurrent uses leave it as the outermost caller found it,
    and a caller that disabled it keeps it disabled)."""
    was_enabled = gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
