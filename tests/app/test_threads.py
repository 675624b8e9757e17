"""The service's pools name their threads for the operating system too (app/threads.py)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from app.threads import OS_NAME_BYTES, named_pool


def _os_name() -> str:
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux's")
def test_pool_threads_carry_their_python_name_to_the_os() -> None:
    with named_pool(2, "image") as pool:
        names = set(pool.map(lambda _: (threading.current_thread().name, _os_name()), range(8)))
    assert {py for py, _ in names} <= {"image_0", "image_1"}
    assert all(os_name == py for py, os_name in names)
    # a long name is cut at the kernel's limit, from the start
    with named_pool(1, "batch-npr-general") as pool:
        assert pool.submit(_os_name).result() == "batch-npr-general_0"[:OS_NAME_BYTES]
    assert _os_name() != "image_0"  # the calling thread keeps its own
