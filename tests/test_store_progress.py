"""Progress bars: on a terminal only, never when quiet, and fed by real transfers."""

from __future__ import annotations

import io
import shutil
import uuid

import pytest

from persistkit import progress
from persistkit.progress import Progress
from persistkit.store import Store
from store_helpers import use_slow_bytes


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def loud() -> None:
    progress.set_quiet(False)
    yield
    progress.set_quiet(False)


def test_a_bar_is_drawn_on_a_terminal() -> None:
    term = FakeTerminal()
    with Progress("upload m", 10 * progress.MIN_BYTES, stream=term) as bar:
        bar.update(10 * progress.MIN_BYTES)
    assert "upload m" in term.getvalue()
    assert "100%" in term.getvalue()
    assert term.getvalue().endswith("\n")


def test_no_bar_when_the_stream_is_not_a_terminal() -> None:
    pipe = io.StringIO()
    with Progress("upload m", 10 * progress.MIN_BYTES, stream=pipe) as bar:
        bar.update(10 * progress.MIN_BYTES)
    assert pipe.getvalue() == ""


def test_no_bar_when_quiet() -> None:
    term = FakeTerminal()
    progress.set_quiet(True)
    with Progress("upload m", 10 * progress.MIN_BYTES, stream=term) as bar:
        bar.update(10 * progress.MIN_BYTES)
    assert term.getvalue() == ""


def test_no_bar_when_persistkit_quiet_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTKIT_QUIET", "1")
    assert not progress.enabled(FakeTerminal())


def test_no_bar_for_small_transfers() -> None:
    term = FakeTerminal()
    with Progress("upload m", progress.MIN_BYTES - 1, stream=term) as bar:
        bar.update(progress.MIN_BYTES - 1)
    assert term.getvalue() == ""


def test_remote_uploads_and_downloads_report_every_byte(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bars: list[Progress] = []

    class RecordedProgress(Progress):
        def __init__(self, label: str, total: int) -> None:
            super().__init__(label, total, stream=FakeTerminal())
            bars.append(self)

    monkeypatch.setattr("persistkit.catalog.space.Progress", RecordedProgress)
    monkeypatch.setattr("persistkit.cache.Progress", RecordedProgress)
    use_slow_bytes(chunks=3)
    store = Store(f"memory://progress-{uuid.uuid4().hex[:8]}")
    art = store.save(b"x" * 1000, "m", backend="slowbytes")
    shutil.rmtree(art.path)  # drop the copy cached at save time, so the load downloads
    assert store.load("m") == b"x" * 1000
    total = art.manifest.total_size  # the 3000 payload bytes and requirements.txt
    assert total > 3000
    assert [(b.label.split()[0], b.done, b.total) for b in bars] == [
        ("upload", total, total),
        ("download", total, total),
    ]
