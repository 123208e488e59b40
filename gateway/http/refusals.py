"""The refusal log both HTTP servers share: what they refuse (a malformed request, a
head too large or too slow, a connection over the cap) is logged as one warning per
kind per interval, with a count, never as one line per refusal."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("gateway")


class RefusalLog:
    """One warning per kind of refusal per ``every`` seconds, with the count since the
    last one: a flood of bad requests must not become a flood of log lines."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.last: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def note(self, kind: str, message: str) -> None:
        now = time.monotonic()
        self.count[kind] = self.count.get(kind, 0) + 1
        if now - self.last.get(kind, -self.every) >= self.every:
            self.last[kind] = now
            log.warning("refused: %s (%d since the last such line)", message, self.count[kind])
            self.count[kind] = 0
