"""Thread pools whose threads carry their names to the operating system.

Python names its threads (``image_0``, ``batch-npr-general_0``) but Linux still calls every
one of them ``python``, so ``top -H``, ``ps -L`` and ``/proc/PID/task/*/comm`` cannot tell the
decode pool from a model's batch thread. Naming the OS thread too (first 15 bytes, the kernel's
limit: ``batch-npr-gener``) lets an operator see which part of the service uses the cores, and
lets ``bench.service_speed`` measure it. Naming is cosmetic: where it cannot be done, the
threads run unnamed.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

_PR_SET_NAME = 15  # linux/prctl.h
OS_NAME_BYTES = 15
logger = logging.getLogger(__name__)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """This process's C library (its own symbols: no search), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def name_os_thread() -> None:
    """Give the calling thread's OS name its Python name. Never raises: a pool whose
    initializer raises is broken for good, and a name is not worth a pool."""
    try:
        libc = _libc()
        if libc is None:
            return
        name = threading.current_thread().name.encode()[:OS_NAME_BYTES]
        if libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0) != 0:
            logger.debug("prctl(PR_SET_NAME) failed: errno %d", ctypes.get_errno())
    except Exception:  # e.g. no prctl symbol: run unnamed
        logger.debug("cannot name the OS thread", exc_info=True)


def named_pool(workers: int, prefix: str) -> ThreadPoolExecutor:
    """A thread pool whose threads are ``{prefix}_{i}`` for Python and for the OS."""
    return ThreadPoolExecutor(workers, thread_name_prefix=prefix, initializer=name_os_thread)
