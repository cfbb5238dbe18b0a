"""Keeping a long-running agent small: glibc's allocator, told not to hoard freed memory.

By default glibc gives each thread that allocates its own arena and keeps freed memory in it;
a service with a dozen request threads then holds hundreds of MiB after a few large answers.
Two arenas are plenty for the agent, and trimming after big work gives the rest back.
Elsewhere than glibc these calls do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(count: int = 2) -> None:
    """Use at most `count` malloc arenas; call before starting threads."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, count)


def give_back() -> None:
    """Return freed heap memory to the system (after an update or a large answer)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
