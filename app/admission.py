"""How many model requests may be in flight at once: past the limit a request is refused before
its body is read, so a burst costs the server a 503 each instead of memory and decode time."""

from __future__ import annotations


class AdmissionGate:
    """A counter, not a semaphore: a refused request gets its 503 at once instead of waiting.
    Only touched from the event loop, so it needs no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def try_enter(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1
