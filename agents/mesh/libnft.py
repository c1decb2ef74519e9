"""nftables in-process through libnftables (ctypes), the library the ``nft`` binary is built on.

Why: a mesh update is a few lines, but ``nft -f -`` as a process costs a fork/exec, loading the
library and re-reading the whole ruleset every time (15-25 ms on an idle machine at 100 services,
hundreds of ms on a loaded one). One context kept for the agent's life keeps its ruleset cache and
only refetches what changed (the kernel's generation id), so the same transaction takes well under
a millisecond. The text and the semantics are ``nft -f``'s: one buffer = one atomic transaction.

Only for the calling process's own network namespace (the context's netlink socket is opened there);
where the library cannot be loaded, `agents.mesh.commands.Runner` runs the ``nft`` binary instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

NFT_CTX_DEFAULT = 0
_NAMES = ("libnftables.so.1",)


class NftError(Exception):
    """A transaction was refused; the message is nft's."""


class LibNft:
    """One ``nft_ctx`` with buffered output and errors; calls are serialised (the context is not
    thread-safe, and callers run it in a worker thread)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self._lib = lib
        self._lock = threading.Lock()
        ctx = lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx:
            raise OSError("nft_ctx_new failed")
        self._ctx: ctypes.c_void_p | None = ctypes.c_void_p(ctx)
        # buffered: nothing reaches this process's stdout/stderr (nodeproc speaks JSON on stdout)
        if lib.nft_ctx_buffer_output(self._ctx) or lib.nft_ctx_buffer_error(self._ctx):
            lib.nft_ctx_free(self._ctx)
            raise OSError("nft_ctx_buffer_* failed")

    def run(self, script: str) -> str:
        """Run ``script`` (``nft -f`` syntax) as one transaction; returns nft's output."""
        with self._lock:
            if self._ctx is None:
                raise NftError("libnftables context closed")
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace").strip()
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
        if rc != 0:
            raise NftError(err or f"nft: error {rc}")
        return out

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None


_shared: LibNft | None = None
_loaded = False
_load_lock = threading.Lock()


def shared() -> LibNft | None:
    """This process's context, created on first use; None when libnftables is not installed."""
    global _shared, _loaded
    with _load_lock:
        if not _loaded:
            _loaded = True
            for name in (*_NAMES, None):
                name = name or ctypes.util.find_library("nftables")  # runs ldconfig: only if needed
                if not name:
                    continue
                try:
                    _shared = LibNft(ctypes.CDLL(name))
                    break
                except (OSError, AttributeError):
                    continue
        return _shared
