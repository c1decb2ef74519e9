"""Import aiohttp without paying for CA-bundle loading on the start-up path.

aiohttp builds two client SSL contexts when ``aiohttp.connector`` is imported, and each loads the
system CA bundle: about 120 ms of CPU per process, a third of the agent's start-up. A lab spawns several
agents at once on a two-core machine, and the server side never uses those contexts, so the daemon
imports aiohttp with CA loading deferred and loads the CAs into the same contexts a little later, off
the start-up path. Any context created during the import is recorded and completed, so this does not
depend on aiohttp's private names.
"""

from __future__ import annotations

import importlib
import logging
import ssl
import threading
from types import ModuleType

log = logging.getLogger("labagent")

_lock = threading.Lock()


def import_deferring_ca_loading(module: str) -> tuple[ModuleType, list[ssl.SSLContext]]:
    """Import ``module``; SSL contexts created meanwhile get no CAs yet and are returned for later.

    Call :func:`load_deferred_cas` on the returned list before any of them can be used for a
    verified TLS connection (the daemon does it shortly after it starts serving).
    """
    deferred: list[ssl.SSLContext] = []
    real = ssl.SSLContext.set_default_verify_paths

    def record(self: ssl.SSLContext) -> None:
        deferred.append(self)

    with _lock:
        ssl.SSLContext.set_default_verify_paths = record  # type: ignore[method-assign]
        try:
            mod = importlib.import_module(module)
        finally:
            ssl.SSLContext.set_default_verify_paths = real  # type: ignore[method-assign]
    return mod, deferred


def load_deferred_cas(contexts: list[ssl.SSLContext]) -> None:
    """Load the system CA paths into contexts from :func:`import_deferring_ca_loading` (blocking I/O)."""
    while contexts:
        ctx = contexts.pop()
        try:
            ctx.set_default_verify_paths()
        except ssl.SSLError as exc:  # same failure the import would have hit, just later
            log.warning("could not load the system CA certificates: %s", exc)
