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
