"""What a process holds for its lifetime (threads, sockets, files) and who finishes it.

A collector process's appender and spool keep threads and open files. At exit each is
closed, newest first (an appender hands what Redis did not answer to its spool before
the spool closes); in a child that ``fork`` made, each starts afresh, since the parent's
threads do not exist there and its files and sockets are the parent's.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import Protocol

log = logging.getLogger(__name__)


class Resident(Protocol):
    """An object that holds threads, sockets or files for as long as its process lives."""

    def close(self) -> None:
        """Finish: hand over or write what waits, stop threads, close files."""

    def after_fork(self) -> None:
        """Start afresh in a forked child (drop the parent's threads, files and sockets)."""


_RESIDENTS: list[weakref.ref[Resident]] = []
_LOCK = threading.Lock()


def register(resident: Resident) -> None:
    """Have ``resident`` closed at exit and started afresh in forked children."""
    with _LOCK:
        _RESIDENTS[:] = [ref for ref in _RESIDENTS if ref() is not None]
        _RESIDENTS.append(weakref.ref(resident))


def unregister(resident: Resident) -> None:
    """Forget ``resident`` (it was closed already)."""
    with _LOCK:
        _RESIDENTS[:] = [ref for ref in _RESIDENTS if ref() not in (None, resident)]


def living() -> list[Resident]:
    """Return the residents of this process not closed yet, oldest first."""
    with _LOCK:
        return [r for r in (ref() for ref in _RESIDENTS) if r is not None]


def _at_exit() -> None:
    for resident in reversed(living()):
        try:
            resident.close()
        except Exception:  # noqa: BLE001 - one failing must not keep the others open
            log.warning("%s could not finish at exit", type(resident).__name__, exc_info=True)


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()  # the parent's may have been held by another thread
    for resident in living():
        resident.after_fork()


atexit.register(_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
