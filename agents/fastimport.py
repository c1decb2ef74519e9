"""Import aiohttp without loading the system CA bundle into its client SSL contexts.

aiohttp builds two client SSL contexts when ``aiohttp.connector`` is imported, and each loads the
system CA bundle: about 120 ms of CPU and 1 MB of memory per context. The agent never uses them: every
TLS connection it opens passes its own context pinned to the swarm's root CA (``agents.manager.ca``),
and it talks to a Docker engine over plain HTTP on a unix socket. So the daemon imports aiohttp with
CA loading skipped and never loads it; a request that fell back to aiohttp's defaults would fail
certificate verification (closed, with OpenSSL's error) rather than trust the system's CAs. Contexts
created during the import are returned, so this does not depend on aiohttp's private names.
"""

from __future__ import annotations

import importlib
import ssl
import threading
from types import ModuleType

_lock = threading.Lock()


def import_without_system_cas(module: str) -> tuple[ModuleType, list[ssl.SSLContext]]:
    """Import ``module``; SSL contexts that asked for the system CAs meanwhile get none (and are returned).

    Contexts created after the import load their CAs as usual.
    """
    skipped: list[ssl.SSLContext] = []
    real = ssl.SSLContext.set_default_verify_paths

    def record(self: ssl.SSLContext) -> None:
        skipped.append(self)

    with _lock:
        ssl.SSLContext.set_default_verify_paths = record  # type: ignore[method-assign]
        try:
            mod = importlib.import_module(module)
        finally:
            ssl.SSLContext.set_default_verify_paths = real  # type: ignore[method-assign]
    return mod, skipped
