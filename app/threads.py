"""Thread pools whose threads carry their names to the operating system.

Python names its threads (``image_0``, ``batch-npr-general_0``) but Linux still calls every
one of them ``python``, so ``top -H``, ``ps -L`` and ``/proc/PID/task/*/comm`` cannot tell the
decode pool from a model's batch thread. Naming the OS thread too (first 15 bytes, the kernel's
limit) lets an operator see which part of the service uses the cores, and lets
``bench.service_speed`` measure it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

_PR_SET_NAME = 15  # linux/prctl.h
OS_NAME_BYTES = 15


def name_os_thread() -> None:
    """Give the calling thread's OS name its Python name; nothing off Linux or without libc."""
    if not sys.platform.startswith("linux"):
        return
    path = ctypes.util.find_library("c")
    if path is None:
        return
    name = threading.current_thread().name.encode()[:OS_NAME_BYTES]
    ctypes.CDLL(path, use_errno=True).prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def named_pool(workers: int, prefix: str) -> ThreadPoolExecutor:
    """A thread pool whose threads are ``{prefix}_{i}`` for Python and for the OS."""
    return ThreadPoolExecutor(workers, thread_name_prefix=prefix, initializer=name_os_thread)
