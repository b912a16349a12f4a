"""Following aliases: a daemon thread that calls
:meth:`~persistkit.server.repository.ModelRepository.follow_once` every few seconds.

A thread, not an event-loop task, so the REST and the gRPC server can each start one the
same way, and a slow store read or model load never holds up requests.
"""

from __future__ import annotations

import logging
import threading

from persistkit.server.repository import ModelRepository

DEFAULT_INTERVAL_S = 5.0
logger = logging.getLogger("persistkit.server")


class AliasFollower:
    """Re-resolves ``repository``'s followed aliases every ``interval`` seconds until
    :meth:`stop`. Start it after start-up loading; it never raises (errors are logged)."""

    def __init__(self, repository: ModelRepository, interval: float) -> None:
        if interval <= 0:
            raise ValueError("the follow interval must be positive")
        self.repository = repository
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="persistkit-follow", daemon=True)

    def start(self) -> AliasFollower:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` seconds (a load under way
        finishes first; the thread is a daemon, so it never holds up the process's exit)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.repository.follow_once()
            except Exception:  # a bug here must not stop following for good
                logger.exception("following aliases failed")
