"""How much work may be admitted at once: past the limit a request is refused before the work
starts, so a burst costs the server a 503 each instead of memory and CPU time. One gate counts
model requests in flight (before their bodies are read), another images being decoded."""

from __future__ import annotations


class AdmissionGate:
    """A counter, not a semaphore: a refused request gets its 503 at once instead of waiting.
    Only touched from the event loop, so it needs no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def has_room(self, n: int = 1) -> bool:
        return self.in_flight + n <= self.limit

    def try_enter(self, n: int = 1) -> bool:
        """Take ``n`` units (requests, images) if all fit; none otherwise."""
        if not self.has_room(n):
            return False
        self.in_flight += n
        return True

    def leave(self, n: int = 1) -> None:
        self.in_flight -= n
