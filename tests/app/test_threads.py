"""The service's pools name their threads for the operating system too (app/threads.py)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from app import threads
from app.threads import OS_NAME_BYTES, named_pool

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="/proc and prctl are Linux's"
)


def _os_name() -> str:
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()


@linux_only
def test_pool_threads_carry_their_python_name_to_the_os() -> None:
    caller = _os_name()
    both = threading.Barrier(2, timeout=10)  # two tasks at once: both workers must start

    def names(_: int) -> tuple[str, str]:
        both.wait()
        return threading.current_thread().name, _os_name()

    with named_pool(2, "image") as pool:
        seen = set(pool.map(names, range(2)))
    assert seen == {("image_0", "image_0"), ("image_1", "image_1")}
    # a long name is cut at the kernel's limit, from the start
    with named_pool(1, "batch-npr-general") as pool:
        assert pool.submit(_os_name).result() == "batch-npr-general_0"[:OS_NAME_BYTES]
    assert _os_name() == caller  # the calling thread keeps its own


def test_a_pool_whose_threads_cannot_be_named_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoPrctl:
        def prctl(self, *args: object) -> int:
            raise AttributeError("no prctl here")

    monkeypatch.setattr(threads, "_libc", lambda: NoPrctl())
    with named_pool(1, "image") as pool:
        assert pool.submit(lambda: 6 * 7).result(timeout=10) == 42
    monkeypatch.setattr(threads, "_libc", lambda: None)  # off Linux: nothing to do
    with named_pool(1, "image") as pool:
        assert pool.submit(lambda: threading.current_thread().name).result(timeout=10) == "image_0"
