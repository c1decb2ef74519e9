"""Process-wide settings that keep an agent's resident memory small.

Every lab node runs an agent for hours next to its tasks, and a classroom host runs dozens of them, so
the agent's RSS is a budget (issue: <= 60 MB with 20 tasks). Two defaults of the runtime are sized for
servers, not for a node agent:

* glibc gives each thread its own malloc arena (up to 8 per core), and memory freed in one arena is not
  reused by another. The agent's few helper threads (fsync, nft, file I/O) allocate briefly, so a shared
  pair of arenas costs nothing in contention and keeps their leftovers from piling up.
* asyncio gives every TLS connection a 256 KiB receive buffer, filled by one ``recv``. TLS records are at
  most 16 KiB, and the agent's connections (Raft peers, dispatcher sessions, forwarded API calls) carry
  small messages, so 32 KiB reads the same bytes in a couple more calls at most. A leader with ten
  connections keeps over 2 MB less.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number for the arena cap (malloc.h)."""

MALLOC_ARENAS = 2
TLS_READ_BUFFER = 32 * 1024


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (before threads start); False where libc is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))


def shrink_tls_read_buffer(size: int = TLS_READ_BUFFER) -> None:
    """Size asyncio's per-connection TLS receive buffer (a class attribute read when a connection starts)."""
    from asyncio import sslproto

    if getattr(sslproto.SSLProtocol, "max_size", None) is not None:
        sslproto.SSLProtocol.max_size = size


def apply() -> None:
    """Both settings; called once by the daemon before its event loop starts."""
    if not limit_malloc_arenas():
        log.debug("malloc arenas not capped (libc without mallopt)")
    shrink_tls_read_buffer()
