"""The C library's calls that Python's `os` lacks (posix_spawn, prctl, renameat2,
sync_file_range), through ctypes, Linux only: one place that loads the library and declares a
function's argument types."""

from __future__ import annotations

import ctypes
import sys
from typing import Any


def _load() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


LIBC = _load()


def libc_function(name: str, argtypes: list[Any], restype: Any = ctypes.c_int) -> Any | None:
    """`name` from the C library, with its argument and result types declared; None off Linux
    or where this C library has no such function (an older glibc, another libc)."""
    func = getattr(LIBC, name, None)
    if func is None:
        return None
    func.argtypes = argtypes
    func.restype = restype
    return func


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the child subreaper of its descendants (Linux): orphaned commands
    are reparented to it rather than to init. Returns whether that took effect. Here rather
    than with the spawning code (tools/processes.py), which a starting daemon does not load."""
    c_ulong = ctypes.c_ulong
    prctl = libc_function("prctl", [ctypes.c_int, c_ulong, c_ulong, c_ulong, c_ulong])
    if prctl is None:  # not Linux
        return False
    return bool(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
