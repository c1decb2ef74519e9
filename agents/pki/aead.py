"""AES-GCM and HKDF-SHA256 for the long-lived agent, without the ``cryptography`` package.

Why: managers encrypt every Raft WAL record and snapshot at rest, and wrap the Raft DEK, in-process.
``cryptography`` would cost each agent ~11 MB of RSS for that; the OpenSSL ``libcrypto`` that Python's
own ``_ssl`` module links is already mapped into the process, so calling its EVP API through ``ctypes``
costs next to nothing. The output is byte-identical to ``cryptography``'s ``AESGCM`` and ``HKDF``
(both are the same standard algorithms), so existing WAL files and wrapped DEKs stay readable.

AES-GCM here: 16/24/32-byte keys, nonces of 8 to 128 bytes (12 is the norm), a 16-byte tag appended to
the ciphertext; decryption raises :class:`InvalidTag` for any tampering or a wrong key.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import hmac
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["AesGcm", "InvalidTag", "hkdf_sha256"]

TAG_SIZE = 16
_MIN_NONCE, _MAX_NONCE = 8, 128
_DEFAULT_NONCE = 12  # GCM's default IV length: no EVP_CTRL_AEAD_SET_IVLEN needed
_MAX_LEN = 2**31 - 1  # EVP takes int lengths

# EVP_CIPHER_CTX_ctrl operations for GCM (openssl/evp.h: EVP_CTRL_AEAD_*).
_CTRL_SET_IVLEN = 0x9
_CTRL_GET_TAG = 0x10
_CTRL_SET_TAG = 0x11

Buffer = bytes | bytearray | memoryview


class InvalidTag(Exception):
    """Authentication failed: the ciphertext, tag or associated data was altered, or the key is wrong."""


class _LibCrypto:
    """The EVP functions we call, with their C signatures declared (a wrong guess would corrupt memory)."""

    def __init__(self, lib: ctypes.CDLL, fetch: bool = True) -> None:
        vp, i, ip = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)
        self.ctx_new = self._fn(lib, "EVP_CIPHER_CTX_new", vp, [])
        self.ctx_free = self._fn(lib, "EVP_CIPHER_CTX_free", None, [vp])
        self.ctx_ctrl = self._fn(lib, "EVP_CIPHER_CTX_ctrl", i, [vp, i, i, vp])
        self.enc_init = self._fn(lib, "EVP_EncryptInit_ex", i, [vp, vp, vp, vp, vp])
        self.enc_update = self._fn(lib, "EVP_EncryptUpdate", i, [vp, vp, ip, vp, i])
        self.enc_final = self._fn(lib, "EVP_EncryptFinal_ex", i, [vp, vp, ip])
        self.dec_init = self._fn(lib, "EVP_DecryptInit_ex", i, [vp, vp, vp, vp, vp])
        self.dec_update = self._fn(lib, "EVP_DecryptUpdate", i, [vp, vp, ip, vp, i])
        self.dec_final = self._fn(lib, "EVP_DecryptFinal_ex", i, [vp, vp, ip])
        self.clear_error = self._fn(lib, "ERR_clear_error", None, [])
        # OpenSSL 3: fetch each cipher once (kept for the process's life); with the legacy
        # EVP_aes_*_gcm() handles every EVP_*Init_ex call would look the implementation up again.
        fetcher = None
        if fetch and hasattr(lib, "EVP_CIPHER_fetch"):
            fetcher = self._fn(lib, "EVP_CIPHER_fetch", vp, [vp, ctypes.c_char_p, ctypes.c_char_p])
        ciphers: dict[int, int] = {}
        for bits in (128, 192, 256):
            ptr = fetcher(None, f"AES-{bits}-GCM".encode(), None) if fetcher is not None else None
            if not ptr:
                self.clear_error()
                ptr = self._fn(lib, f"EVP_aes_{bits}_gcm", vp, [])()
            if not ptr:
                raise OSError(f"libcrypto has no AES-{bits}-GCM")
            ciphers[bits // 8] = ptr
        self.ciphers = ciphers

    @staticmethod
    def _fn(lib: ctypes.CDLL, name: str, restype: Any, argtypes: list[Any]) -> Callable[..., Any]:
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
        return fn  # type: ignore[no-any-return]


_lib: _LibCrypto | None = None
_lib_lock = threading.Lock()


def _libcrypto_path() -> str:
    """The libcrypto that ``_ssl`` is linked to (already mapped: no extra memory), else the system one."""
    import _ssl  # noqa: F401  (maps libcrypto into the process when Python links OpenSSL dynamically)

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and "/libcrypto.so" in fields[5]:
                    return fields[5].strip()
    except OSError:
        pass
    found = ctypes.util.find_library("crypto")
    if not found:
        raise OSError("cannot find OpenSSL libcrypto (needed for AES-GCM)")
    return found


def _libcrypto() -> _LibCrypto:
    """Load libcrypto once, on first use (double-checked under a lock: WAL writes may run in threads)."""
    global _lib
    lib = _lib
    if lib is None:
        with _lib_lock:
            if _lib is None:
                _lib = _LibCrypto(ctypes.CDLL(_libcrypto_path()))
            lib = _lib
    return lib


def _as_bytes(name: str, value: object) -> bytes:
    """Bytes-like input as ``bytes`` (ctypes passes a ``bytes`` object's buffer without copying)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{name} must be bytes-like, not {type(value).__name__}")


def _check_len(*parts: bytes) -> None:
    for p in parts:
        if len(p) > _MAX_LEN:
            raise OverflowError(f"data or associated data too long (max {_MAX_LEN} bytes)")


def _init(lib: _LibCrypto, init: Callable[..., int], ctx: int, key: bytes, iv: bytes) -> bool:
    """Set cipher, key and nonce on a fresh context (one call for the default 12-byte nonce)."""
    cipher = lib.ciphers[len(key)]
    if len(iv) == _DEFAULT_NONCE:
        return init(ctx, cipher, None, key, iv) == 1
    return (
        init(ctx, cipher, None, None, None) == 1
        and lib.ctx_ctrl(ctx, _CTRL_SET_IVLEN, len(iv), None) == 1
        and init(ctx, None, None, key, iv) == 1
    )


class AesGcm:
    """AES-GCM with a fixed key, the interface of ``cryptography``'s ``AESGCM`` (encrypt/decrypt).

    Thread-safe: every call uses its own EVP context, freed before it returns.
    """

    __slots__ = ("_key",)

    def __init__(self, key: Buffer) -> None:
        k = _as_bytes("key", key)
        if len(k) not in (16, 24, 32):
            raise ValueError("AES-GCM key must be 128, 192, or 256 bits")
        self._key = k

    @staticmethod
    def _nonce(nonce: Buffer) -> bytes:
        n = _as_bytes("nonce", nonce)
        if not _MIN_NONCE <= len(n) <= _MAX_NONCE:
            raise ValueError(f"nonce must be between {_MIN_NONCE} and {_MAX_NONCE} bytes")
        return n

    def encrypt(self, nonce: Buffer, data: Buffer, associated_data: Buffer | None) -> bytes:
        """``ciphertext || tag`` (16 bytes) of ``data``, authenticating ``associated_data`` too."""
        iv = self._nonce(nonce)
        pt = _as_bytes("data", data)
        aad = b"" if associated_data is None else _as_bytes("associated_data", associated_data)
        _check_len(pt, aad)
        lib = _libcrypto()
        out = ctypes.create_string_buffer(len(pt) + TAG_SIZE)
        outl = ctypes.c_int(0)
        ctx = lib.ctx_new()
        if not ctx:
            raise MemoryError("EVP_CIPHER_CTX_new failed")
        try:
            ok = _init(lib, lib.enc_init, ctx, self._key, iv) and (
                not aad or lib.enc_update(ctx, None, ctypes.byref(outl), aad, len(aad)) == 1
            )
            n = 0
            if ok and pt:
                ok = lib.enc_update(ctx, out, ctypes.byref(outl), pt, len(pt)) == 1
                n = outl.value
            if ok:
                ok = lib.enc_final(ctx, ctypes.byref(out, n), ctypes.byref(outl)) == 1
                n += outl.value
            if ok and n != len(pt):
                ok = False
            if ok:
                ok = lib.ctx_ctrl(ctx, _CTRL_GET_TAG, TAG_SIZE, ctypes.byref(out, n)) == 1
            if not ok:
                lib.clear_error()
                raise RuntimeError("OpenSSL AES-GCM encryption failed")
        finally:
            lib.ctx_free(ctx)
        return out.raw

    def decrypt(self, nonce: Buffer, data: Buffer, associated_data: Buffer | None) -> bytes:
        """The plaintext of ``ciphertext || tag``; :class:`InvalidTag` unless it authenticates."""
        iv = self._nonce(nonce)
        blob = _as_bytes("data", data)
        aad = b"" if associated_data is None else _as_bytes("associated_data", associated_data)
        _check_len(blob, aad)
        if len(blob) < TAG_SIZE:
            raise InvalidTag("ciphertext is shorter than the tag")
        ct_len, tag = len(blob) - TAG_SIZE, blob[-TAG_SIZE:]  # the ciphertext is read in place
        lib = _libcrypto()
        out = ctypes.create_string_buffer(max(ct_len, 1))
        outl = ctypes.c_int(0)
        ctx = lib.ctx_new()
        if not ctx:
            raise MemoryError("EVP_CIPHER_CTX_new failed")
        try:
            ok = _init(lib, lib.dec_init, ctx, self._key, iv) and (
                not aad or lib.dec_update(ctx, None, ctypes.byref(outl), aad, len(aad)) == 1
            )
            n = 0
            if ok and ct_len:
                ok = lib.dec_update(ctx, out, ctypes.byref(outl), blob, ct_len) == 1
                n = outl.value
            if not (ok and lib.ctx_ctrl(ctx, _CTRL_SET_TAG, TAG_SIZE, tag) == 1):
                lib.clear_error()
                raise RuntimeError("OpenSSL AES-GCM decryption failed")
            # The tag is checked here; a mismatch is the only expected failure.
            final_ok = lib.dec_final(ctx, ctypes.byref(out, n), ctypes.byref(outl)) == 1
            if not final_ok:
                lib.clear_error()
                raise InvalidTag("AES-GCM authentication failed (tampered data or wrong key)")
            n += outl.value
        finally:
            lib.ctx_free(ctx)
        if n != ct_len:
            raise RuntimeError("OpenSSL AES-GCM decryption returned a short plaintext")
        return out.raw if ct_len else b""


def hkdf_sha256(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256: extract (HMAC(salt, ikm)) then expand to ``length`` bytes."""
    size = hashlib.sha256().digest_size
    if not 0 < length <= 255 * size:
        raise ValueError(f"HKDF length must be between 1 and {255 * size} bytes")
    prk = hmac.digest(salt or bytes(size), ikm, "sha256")
    okm, block = b"", b""
    for i in range(1, -(-length // size) + 1):
        block = hmac.digest(prk, block + info + bytes([i]), "sha256")
        okm += block
    return okm[:length]
