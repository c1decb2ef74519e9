"""Our ctypes AES-GCM and stdlib HKDF against ``cryptography`` and the published test vectors.

Byte-identical output matters: WAL records and wrapped DEKs written by earlier builds (through
``cryptography``) must stay readable.
"""

from __future__ import annotations

import base64
import ctypes
import os
import random
import threading
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag as CryptoInvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agents.manager import keys
from agents.pki import aead
from agents.pki.aead import AesGcm, InvalidTag, hkdf_sha256
from agents.raft.storage import AesGcmCipher, CorruptLogError, RaftStorage
from agents.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta

KEY_SIZES = (16, 24, 32)
PLAINTEXTS = {"empty": b"", "short": b"x", "odd": bytes(range(256)) * 3 + b"abc", "1MB": os.urandom(1 << 20)}


@pytest.mark.parametrize("size", KEY_SIZES)
@pytest.mark.parametrize("pt_name", sorted(PLAINTEXTS))
@pytest.mark.parametrize(
    "aad", [None, b"", b"header", os.urandom(1000)], ids=["none", "empty", "short", "long"]
)
def test_identical_to_cryptography(size: int, pt_name: str, aad: bytes | None) -> None:
    key, nonce, pt = os.urandom(size), os.urandom(12), PLAINTEXTS[pt_name]
    ours = AesGcm(key).encrypt(nonce, pt, aad)
    theirs = AESGCM(key).encrypt(nonce, pt, aad)
    assert ours == theirs
    assert len(ours) == len(pt) + 16
    assert AesGcm(key).decrypt(nonce, theirs, aad) == pt
    assert AESGCM(key).decrypt(nonce, ours, aad) == pt


@pytest.mark.parametrize("nonce_len", [8, 12, 16, 64, 128])
def test_other_nonce_lengths_match(nonce_len: int) -> None:
    key, nonce = os.urandom(32), os.urandom(nonce_len)
    assert AesGcm(key).encrypt(nonce, b"payload", b"ad") == AESGCM(key).encrypt(nonce, b"payload", b"ad")


def test_bytes_like_inputs() -> None:
    key, nonce = os.urandom(16), os.urandom(12)
    expect = AESGCM(key).encrypt(nonce, b"data", b"ad")
    c = AesGcm(bytearray(key))
    assert c.encrypt(memoryview(nonce), bytearray(b"data"), memoryview(b"ad")) == expect
    assert c.decrypt(bytearray(nonce), memoryview(expect), bytearray(b"ad")) == b"data"
    with pytest.raises(TypeError):
        c.encrypt(nonce, "data", None)  # type: ignore[arg-type]


def _flip(data: bytes, i: int) -> bytes:
    b = bytearray(data)
    b[i] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize("size", KEY_SIZES)
def test_tampering_and_wrong_key_rejected(size: int) -> None:
    key, nonce, pt, aad = os.urandom(size), os.urandom(12), os.urandom(300), b"kek-id"
    ct = AesGcm(key).encrypt(nonce, pt, aad)
    c = AesGcm(key)
    with pytest.raises(InvalidTag):
        c.decrypt(nonce, _flip(ct, 0), aad)  # ciphertext
    with pytest.raises(InvalidTag):
        c.decrypt(nonce, _flip(ct, len(ct) - 1), aad)  # tag
    with pytest.raises(InvalidTag):
        c.decrypt(nonce, ct, b"kek-iD")  # associated data
    with pytest.raises(InvalidTag):
        c.decrypt(nonce, ct, None)  # associated data dropped
    with pytest.raises(InvalidTag):
        c.decrypt(_flip(nonce, 5), ct, aad)  # nonce
    with pytest.raises(InvalidTag):
        c.decrypt(nonce, ct[:-1], aad)  # truncated
    with pytest.raises(InvalidTag):
        c.decrypt(nonce, ct[:15], aad)  # shorter than a tag
    with pytest.raises(InvalidTag):
        AesGcm(_flip(key, 0)).decrypt(nonce, ct, aad)  # wrong key
    # cryptography agrees that these are forgeries (so the tests above are not vacuous)
    with pytest.raises(CryptoInvalidTag):
        AESGCM(_flip(key, 0)).decrypt(nonce, ct, aad)
    assert c.decrypt(nonce, ct, aad) == pt  # and the good one still opens


def test_empty_plaintext_tag_checked() -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    ct = AesGcm(key).encrypt(nonce, b"", b"ad")
    assert len(ct) == 16
    assert AesGcm(key).decrypt(nonce, ct, b"ad") == b""
    with pytest.raises(InvalidTag):
        AesGcm(key).decrypt(nonce, _flip(ct, 3), b"ad")


@pytest.mark.parametrize("size", [0, 8, 15, 17, 31, 33, 64])
def test_bad_key_length(size: int) -> None:
    with pytest.raises(ValueError, match="128, 192, or 256 bits"):
        AesGcm(bytes(size))


@pytest.mark.parametrize("size", [0, 7, 129])
def test_bad_nonce_length(size: int) -> None:
    c = AesGcm(bytes(16))
    with pytest.raises(ValueError, match="nonce"):
        c.encrypt(bytes(size), b"x", None)
    with pytest.raises(ValueError, match="nonce"):
        c.decrypt(bytes(size), bytes(32), None)


# The GCM specification (McGrew & Viega), test cases 3/4 (AES-128), 10 (AES-192), 16 (AES-256).
_GCM_P = bytes.fromhex(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
)
_GCM_A = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
_GCM_IV = bytes.fromhex("cafebabefacedbaddecaf888")
_GCM_VECTORS = [
    (  # test case 3: no AAD, full plaintext
        "feffe9928665731c6d6a8f9467308308",
        bytes.fromhex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
        ),
        None,
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
        "4d5c2af327cd64a62cf35abd2ba6fab4",
    ),
    (  # test case 4
        "feffe9928665731c6d6a8f9467308308",
        _GCM_P,
        _GCM_A,
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
        "5bc94fbc3221a5db94fae95ae7121a47",
    ),
    (  # test case 10
        "feffe9928665731c6d6a8f9467308308feffe9928665731c",
        _GCM_P,
        _GCM_A,
        "3980ca0b3c00e841eb06fac4872a2757859e1ceaa6efd984628593b40ca1e19c7d773d00c144c525ac619d18c84a3f4718e2448b2fe324d9ccda2710",
        "2519498e80f1478f37ba55bd6d27618c",
    ),
    (  # test case 16
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        _GCM_P,
        _GCM_A,
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
]


@pytest.mark.parametrize("key_hex,pt,aad,ct_hex,tag_hex", _GCM_VECTORS)
def test_gcm_spec_vectors(key_hex: str, pt: bytes, aad: bytes | None, ct_hex: str, tag_hex: str) -> None:
    c = AesGcm(bytes.fromhex(key_hex))
    out = c.encrypt(_GCM_IV, pt, aad)
    assert out == bytes.fromhex(ct_hex + tag_hex)
    assert c.decrypt(_GCM_IV, out, aad) == pt


def test_gcm_spec_vector_zero_key_empty() -> None:
    # test case 1: zero key and IV, empty plaintext: only the tag
    assert AesGcm(bytes(16)).encrypt(bytes(12), b"", None) == bytes.fromhex(
        "58e2fccefa7e3061367f1d57a4e7455a"
    )


def test_hkdf_rfc5869_case1() -> None:
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = bytes.fromhex(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    assert hkdf_sha256(ikm, salt, info, 42) == okm


def test_hkdf_rfc5869_case3_no_salt() -> None:
    okm = bytes.fromhex(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )
    assert hkdf_sha256(bytes.fromhex("0b" * 22), None, b"", 42) == okm
    assert hkdf_sha256(bytes.fromhex("0b" * 22), b"", b"", 42) == okm


@pytest.mark.parametrize("length", [1, 16, 32, 33, 64, 100, 255 * 32])
def test_hkdf_identical_to_cryptography(length: int) -> None:
    rng = random.Random(length)
    ikm, salt, info = rng.randbytes(48), rng.randbytes(16), b"labagent raft-dek kek v1"
    expect = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)
    assert hkdf_sha256(ikm, salt, info, length) == expect


@pytest.mark.parametrize("length", [0, -1, 255 * 32 + 1])
def test_hkdf_bad_length(length: int) -> None:
    with pytest.raises(ValueError):
        hkdf_sha256(b"ikm", b"salt", b"info", length)


def test_threads_concurrent() -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            barrier.wait()
            for i in range(150):
                key = rng.randbytes((16, 24, 32)[i % 3])
                nonce, pt, ad = (
                    rng.randbytes(12),
                    rng.randbytes(rng.randrange(0, 9000)),
                    rng.randbytes(i % 40),
                )
                c = AesGcm(key)
                ct = c.encrypt(nonce, pt, ad)
                assert ct == AESGCM(key).encrypt(nonce, pt, ad)
                assert c.decrypt(nonce, ct, ad) == pt
                if i % 10 == 0:
                    with pytest.raises(InvalidTag):
                        c.decrypt(nonce, _flip(ct, 0), ad)
        except BaseException as e:  # reported to the main thread below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_libcrypto_is_the_one_ssl_uses() -> None:
    import _ssl  # noqa: F401

    with open("/proc/self/maps") as f:
        mapped = {line.split(maxsplit=5)[5].strip() for line in f if "/libcrypto.so" in line}
    path = aead._libcrypto_path()
    assert not mapped or path in mapped


class _CryptographyCipher:
    """The WAL cipher as earlier builds wrote it (``cryptography``'s AESGCM, ``nonce || ct+tag``)."""

    def __init__(self, key: bytes) -> None:
        self._a = AESGCM(key)

    def encrypt(self, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._a.encrypt(nonce, data, None)

    def decrypt(self, data: bytes) -> bytes:
        return self._a.decrypt(data[:12], data[12:], None)


def test_wal_written_with_cryptography_still_opens(tmp_path: Path) -> None:
    d, key = tmp_path / "raft", os.urandom(32)
    with RaftStorage.open(d, fsync=False, cipher=_CryptographyCipher(key), segment_bytes=1024) as s:
        for i in range(20):
            s.save(HardState(1, 1, i), [Entry(1, i + 1, EntryType.NORMAL, bytes([i]) * 90)])
        s.save(None, [], Snapshot(SnapshotMeta(10, 1, ConfState((1,), (), ())), b"snapshot state"))
        expect = s.load()
    with RaftStorage.open(d, fsync=False, cipher=AesGcmCipher(key), segment_bytes=1024) as s:
        assert s.load() == expect
        s.save(HardState(2, 1, 20), [Entry(2, 21, EntryType.NORMAL, b"new")])
        expect = s.load()
    # and the other way round: what we write, cryptography reads
    with RaftStorage.open(d, fsync=False, cipher=_CryptographyCipher(key), segment_bytes=1024) as s:
        assert s.load() == expect
    with pytest.raises(CorruptLogError, match="wrong key"):
        RaftStorage.open(d, fsync=False, cipher=AesGcmCipher(os.urandom(32)))


def test_dek_wrap_compatible_with_cryptography() -> None:
    ikm, kek_id, dek = os.urandom(138), "node-key:" + "ab" * 16, os.urandom(keys.DEK_SIZE)
    # a wrap as earlier builds made it: salt(16) || nonce(12) || AESGCM(HKDF(ikm, salt)) with the id as AAD
    salt, nonce = os.urandom(16), os.urandom(12)
    kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=keys._HKDF_INFO).derive(ikm)
    blob = base64.b64encode(salt + nonce + AESGCM(kek).encrypt(nonce, dek, kek_id.encode())).decode()
    assert keys._unwrap({"wraps": {kek_id: blob}}, kek_id, ikm) == dek
    with pytest.raises(keys.DEKError, match="cannot be decrypted"):
        keys._unwrap({"wraps": {kek_id: blob}}, kek_id, ikm + b"x")
    with pytest.raises(keys.DEKError, match="cannot be decrypted"):
        keys._unwrap({"wraps": {"unlock-key": blob}}, "unlock-key", ikm)  # AAD binds the kek id
    # ours, read with cryptography
    raw = base64.b64decode(keys._wrap(dek, kek_id, ikm))
    kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=raw[:16], info=keys._HKDF_INFO).derive(ikm)
    assert AESGCM(kek).decrypt(raw[16:28], raw[28:], kek_id.encode()) == dek


def test_legacy_cipher_handles_give_the_same_output(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without EVP_CIPHER_fetch (OpenSSL 1.1) the EVP_aes_*_gcm() handles are used: same bytes.
    fetched = aead._libcrypto()
    legacy = aead._LibCrypto(ctypes.CDLL(aead._libcrypto_path()), fetch=False)
    if hasattr(ctypes.CDLL(aead._libcrypto_path()), "EVP_CIPHER_fetch"):
        assert legacy.ciphers != fetched.ciphers  # so both paths really are exercised here
    monkeypatch.setattr(aead, "_lib", legacy)
    for size in KEY_SIZES:
        for nonce_len in (12, 16):
            key, nonce, pt = os.urandom(size), os.urandom(nonce_len), os.urandom(333)
            ct = AesGcm(key).encrypt(nonce, pt, b"ad")
            assert ct == AESGCM(key).encrypt(nonce, pt, b"ad")
            assert AesGcm(key).decrypt(nonce, ct, b"ad") == pt
            with pytest.raises(InvalidTag):
                AesGcm(key).decrypt(nonce, _flip(ct, 1), b"ad")
