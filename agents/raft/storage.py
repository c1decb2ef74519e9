"""Durable Raft state: a write-ahead log of segment files plus atomically written snapshot files.

Directory layout (copy the whole directory while the node is stopped to back it up; open the copy to
restore -- nothing in it depends on its path)::

    <dir>/LOCK                                  flock()ed while open: one process per directory
    <dir>/wal/<seq:016x>-<first:016x>.wal       append-only segments; ``seq`` counts up from 1, ``first`` is
                                                the index the next entry had when the segment was cut
    <dir>/snap/<term:016x>-<index:016x>.snap    snapshots; the newest two are kept

Every WAL segment and snapshot file is a sequence of records framed as (little endian)::

    [length u32][crc32 u32][type u8][payload: length bytes]

where the CRC-32 (zlib) covers ``length``, ``type`` and ``payload``, so a torn or flipped record is noticed
without the encryption key. Record types:

``HEADER`` (1)
    first record of a segment, never encrypted: msgpack ``[format, seq, first, encrypted]``.
``BATCH`` (2)
    one :meth:`RaftStorage.save` call -- a single record, so a crash keeps all of a save or none of it:
    msgpack ``[hard_state | nil, marker | nil, first_index, [[term, type, data], ...]]`` with
    ``hard_state = [term, vote, commit]`` and ``marker = [snap_index, snap_term, keep]``. Replay applies
    the marker, then the entries (which truncate the log from ``first_index``: this is the truncation
    marker), then the hard state. ``keep`` says whether the log held ``(snap_index, snap_term)`` when the
    snapshot was saved: if so the entries after it stay (a local compaction snapshot), otherwise the whole
    log is discarded (a snapshot from the leader replaced a conflicting log). A new segment starts with a
    BATCH carrying the current hard state and snapshot marker, so it stands alone once older segments go.
``SNAPSHOT`` (3)
    the only record of a ``.snap`` file: msgpack ``[format, index, term, voters, learners, promoting,
    data]``.

With a :class:`Cipher`, BATCH and SNAPSHOT payloads are encrypted (the CRC covers the ciphertext).

Recovery (:meth:`RaftStorage.open`): a bad record with nothing valid after it is a torn tail from a crash
mid-write -- it is cut off with a warning; a bad record followed by valid ones is damage, and opening
fails with :class:`CorruptLogError`. Snapshot files newer than the last snapshot marker in the WAL are
leftovers of a save that crashed before its WAL record was durable and are deleted; a snapshot file that
fails its CRC is renamed ``*.corrupt`` and the previous one is used if the WAL still covers the gap. To
keep that fallback possible, compaction deletes only WAL segments wholly below the *older* of the two
retained snapshots.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import re
import struct
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgpack

from agents.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta

log = logging.getLogger(__name__)

__all__ = [
    "AesGcmCipher",
    "Cipher",
    "CorruptLogError",
    "RaftStorage",
    "Restored",
    "StorageLockedError",
]

FORMAT_VERSION = 1
DEFAULT_SEGMENT_BYTES = 64 << 20
KEEP_SNAPSHOTS = 2

REC_HEADER = 1
REC_BATCH = 2
REC_SNAPSHOT = 3

_HDR = struct.Struct("<IIB")  # length, crc, type
_HDR_SIZE = _HDR.size
_LEN_TYPE = struct.Struct("<IB")
_MAX_RECORD = 0xFFFFFFFF

_SEGMENT_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
_SNAP_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_ENTRY_TYPES: dict[int, EntryType] = {int(t): t for t in EntryType}


class CorruptLogError(Exception):
    """The stored state is damaged (or unreadable with the given key): refuse to start rather than guess."""


class StorageLockedError(Exception):
    """Another process holds the storage directory open."""


class Cipher(Protocol):
    """Encryption at rest for record payloads; ``decrypt`` raises on tampering or a wrong key."""

    def encrypt(self, data: bytes) -> bytes: ...

    def decrypt(self, data: bytes) -> bytes: ...


class AesGcmCipher:
    """AES-GCM with a random 96-bit nonce per payload (stored as ``nonce || ciphertext+tag``)."""

    def __init__(self, key: bytes) -> None:
        from agents.pki.aead import AesGcm  # OpenSSL via ctypes: no ``cryptography`` in the agent

        self._aead = AesGcm(key)  # validates the key length (16, 24 or 32 bytes)

    def encrypt(self, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, None)

    def decrypt(self, data: bytes) -> bytes:
        if len(data) < 12 + 16:
            raise ValueError("ciphertext too short")
        return self._aead.decrypt(data[:12], data[12:], None)


@dataclass(frozen=True)
class Restored:
    """What a node restarts from: entries are those after the snapshot (if any), contiguous."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]


@dataclass
class _Segment:
    seq: int
    first: int
    path: Path


class _BadRecord(Exception):
    """A record that is sound on disk (CRC ok) but cannot be applied: damage or a wrong key."""


class _SnapshotDamaged(Exception):
    """A snapshot file that fails its checksum or cannot be parsed (the previous one may stand in)."""


def _frame(rtype: int, payload: bytes) -> bytes:
    n = len(payload)
    if n > _MAX_RECORD:
        raise ValueError(f"record of {n} bytes is too large")
    crc = zlib.crc32(payload, zlib.crc32(_LEN_TYPE.pack(n, rtype)))
    return _HDR.pack(n, crc, rtype) + payload


def _record_at(buf: bytes, pos: int) -> tuple[int, bytes] | None:
    """The (type, payload) of a sound record at ``pos``, or None if it is torn or fails its CRC."""
    end = len(buf)
    if pos + _HDR_SIZE > end:
        return None
    n, crc, rtype = _HDR.unpack_from(buf, pos)
    start = pos + _HDR_SIZE
    if start + n > end or rtype not in (REC_HEADER, REC_BATCH, REC_SNAPSHOT):
        return None
    payload = buf[start : start + n]
    if zlib.crc32(payload, zlib.crc32(_LEN_TYPE.pack(n, rtype))) != crc:
        return None
    return rtype, payload


def _valid_record_after(buf: bytes, pos: int) -> int | None:
    """Offset of some sound BATCH record starting after ``pos`` (error path only: a byte-by-byte scan)."""
    type_byte = bytes([REC_BATCH])
    i = buf.find(type_byte, pos + 1 + _HDR_SIZE - 1)
    while i != -1:
        start = i - (_HDR_SIZE - 1)
        if _record_at(buf, start) is not None:
            return start
        i = buf.find(type_byte, i + 1)
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_datasync = getattr(os, "fdatasync", os.fsync)


class _ReplayLog:
    """The log as the WAL describes it: entries from ``offset`` on, with save()'s truncation rules."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.offset = 1

    @property
    def last(self) -> int:
        return self.offset + len(self.entries) - 1

    def term_at(self, index: int) -> int | None:
        i = index - self.offset
        if 0 <= i < len(self.entries):
            return self.entries[i].term
        return None

    def append(self, first: int, new: list[Entry]) -> bool:
        """Apply a batch; False if it would leave a gap (only possible in a damaged log)."""
        if not self.entries or first < self.offset:
            self.offset = first
            self.entries = new
        elif first <= self.last + 1:
            del self.entries[first - self.offset :]
            self.entries.extend(new)
        else:
            return False
        return True

    def reset(self, offset: int) -> None:
        self.entries = []
        self.offset = offset


class RaftStorage:
    """WAL + snapshots for one Raft node; not thread-safe (the runner calls it from one place)."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync: bool,
        cipher: Cipher | None,
        segment_bytes: int,
    ) -> None:
        self._dir = directory
        self._wal_dir = directory / "wal"
        self._snap_dir = directory / "snap"
        self._fsync = fsync
        self._cipher = cipher
        self._segment_bytes = segment_bytes
        self._lock_fd = -1
        self._fd = -1
        self._seg_size = 0
        self._segments: list[_Segment] = []
        self._hs = HardState()
        self._marker: tuple[int, int] | None = None  # (index, term) of the newest snapshot
        self._snaps: list[tuple[int, int]] = []  # retained snapshot files, oldest first
        self._first = 1  # index of _terms[0]
        self._terms: array[int] = array("q")
        self._restored: Restored | None = None
        self._failed: BaseException | None = None
        self._closed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        fsync: bool = True,
        cipher: Cipher | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> RaftStorage:
        """Open (creating if needed) and recover ``directory``; raises CorruptLogError on damage."""
        directory = Path(directory)
        self = cls(directory, fsync=fsync, cipher=cipher, segment_bytes=segment_bytes)
        created = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        self._wal_dir.mkdir(exist_ok=True)
        self._snap_dir.mkdir(exist_ok=True)
        if created and fsync:
            _fsync_dir(directory.parent)
            _fsync_dir(directory)
        self._lock_fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StorageLockedError(f"{directory} is in use by another process") from None
        try:
            self._recover()
        except BaseException:
            self.close()
            raise
        return self

    def _recover(self) -> None:
        for tmp in self._snap_dir.glob("*.tmp"):
            tmp.unlink()
        self._segments = self._list_segments()
        replay, hs, marker, counts = self._replay(tolerant=True)
        # The last segment must hold its header and state preamble to stand alone; else it never got going.
        if self._segments and counts.get(self._segments[-1].seq, 0) < 2:
            dead = self._segments.pop()
            log.warning("raft wal: removing incomplete segment %s", dead.path)
            dead.path.unlink()
        snapshot = self._choose_snapshot(marker, replay)
        hs, entries = self._restore_view(replay, hs, snapshot)
        self._hs = hs
        self._restored = Restored(hs, snapshot, entries)
        self._first = (
            snapshot.meta.index + 1 if snapshot is not None else (entries[0].index if entries else 1)
        )
        self._terms = array("q", [e.term for e in entries])
        if not self._segments:
            self._new_segment(seq=1)
        else:
            seg = self._segments[-1]
            self._fd = os.open(seg.path, os.O_WRONLY)
            self._seg_size = os.lseek(self._fd, 0, os.SEEK_END)

    def _replay(
        self, *, tolerant: bool
    ) -> tuple[_ReplayLog, HardState, tuple[int, int] | None, dict[int, int]]:
        """Read every segment in order; ``tolerant`` cuts a torn tail instead of failing."""
        replay = _ReplayLog()
        hs = HardState()
        marker: tuple[int, int] | None = None
        counts: dict[int, int] = {}
        n = 0
        while n < len(self._segments):
            seg = self._segments[n]
            buf = seg.path.read_bytes()
            pos = 0
            count = 0
            while pos < len(buf):
                rec = _record_at(buf, pos)
                if rec is None:
                    if not tolerant:
                        raise CorruptLogError(f"{seg.path}: offset {pos}: unreadable record")
                    self._handle_bad_record(seg, n, buf, pos)  # may drop this and later segments
                    break
                rtype, payload = rec
                try:
                    if count == 0:
                        self._check_header(seg, rtype, payload)
                    elif rtype != REC_BATCH:
                        raise _BadRecord(f"unexpected record type {rtype}")
                    else:
                        hs, marker = self._replay_batch(payload, replay, hs, marker)
                except _BadRecord as e:
                    raise CorruptLogError(f"{seg.path}: offset {pos}: {e}") from None
                pos += _HDR_SIZE + len(payload)
                count += 1
            counts[seg.seq] = count
            n += 1
        return replay, hs, marker, counts

    @staticmethod
    def _restore_view(
        replay: _ReplayLog, hs: HardState, snapshot: Snapshot | None
    ) -> tuple[HardState, list[Entry]]:
        """Entries after the snapshot (checked contiguous) and the hard state, commit at least the snapshot."""
        if snapshot is None:
            if replay.entries and replay.offset != 1:
                raise CorruptLogError(
                    f"the log starts at index {replay.offset} but no snapshot covers the entries before it"
                )
            return hs, replay.entries
        s = snapshot.meta.index
        entries: list[Entry] = []
        if replay.entries and replay.last > s:
            if replay.offset > s + 1:
                raise CorruptLogError(
                    f"the log resumes at index {replay.offset}, after snapshot {s}: entries missing"
                )
            entries = replay.entries[s + 1 - replay.offset :]
        if hs.commit < s:
            hs = HardState(hs.term, hs.vote, s)  # a snapshot holds committed state only
        return hs, entries

    def _list_segments(self) -> list[_Segment]:
        segs = []
        for p in self._wal_dir.iterdir():
            m = _SEGMENT_RE.match(p.name)
            if m:
                segs.append(_Segment(int(m.group(1), 16), int(m.group(2), 16), p))
            else:
                log.warning("raft wal: ignoring unexpected file %s", p)
        segs.sort(key=lambda s: s.seq)
        for a, b in itertools.pairwise(segs):
            if b.seq != a.seq + 1:
                raise CorruptLogError(
                    f"{self._wal_dir}: segment {a.seq + 1:016x} is missing (found {b.path.name})"
                )
        return segs

    def _handle_bad_record(self, seg: _Segment, n: int, buf: bytes, pos: int) -> None:
        """Cut a torn tail (nothing sound after ``pos``), refuse a damaged middle."""
        later = _valid_record_after(buf, pos)
        if later is not None:
            raise CorruptLogError(
                f"{seg.path}: corrupt record at offset {pos} followed by a valid record at offset {later}; "
                "refusing to start (restore from a backup or remove this member and re-add it)"
            )
        for other in self._segments[n + 1 :]:
            other_buf = other.path.read_bytes()
            if _record_at(other_buf, 0) is not None or _valid_record_after(other_buf, 0) is not None:
                raise CorruptLogError(
                    f"{seg.path}: corrupt record at offset {pos} but later segment {other.path.name} has records; "
                    "refusing to start"
                )
        log.warning(
            "raft wal: %s: torn or corrupt tail at offset %d (%d bytes) discarded",
            seg.path,
            pos,
            len(buf) - pos,
        )
        for other in self._segments[n + 1 :]:
            log.warning("raft wal: removing empty segment %s", other.path)
            other.path.unlink()
        del self._segments[n + 1 :]
        with open(seg.path, "r+b") as f:
            f.truncate(pos)
        if pos == 0:
            log.warning("raft wal: removing empty segment %s", seg.path)
            seg.path.unlink()
            del self._segments[n:]

    def _check_header(self, seg: _Segment, rtype: int, payload: bytes) -> None:
        if rtype != REC_HEADER:
            raise _BadRecord("segment does not start with a header")
        try:
            version, seq, first, encrypted = msgpack.unpackb(payload)
        except Exception as e:
            raise _BadRecord(f"unreadable segment header: {e}") from None
        if version != FORMAT_VERSION:
            raise _BadRecord(f"unsupported WAL format {version}")
        if seq != seg.seq or first != seg.first:
            raise _BadRecord(f"header says segment {seq:016x}-{first:016x}, file name disagrees")
        if encrypted and self._cipher is None:
            raise _BadRecord("the log is encrypted but no key was given")
        if not encrypted and self._cipher is not None:
            raise _BadRecord("a key was given but the log is not encrypted")

    def _decrypt(self, payload: bytes) -> bytes:
        if self._cipher is None:
            return payload
        try:
            return self._cipher.decrypt(payload)
        except Exception:
            # The CRC matched, so the bytes are as written: this is a wrong key or tampering, never a torn write.
            raise _BadRecord("cannot decrypt a record (wrong key?)") from None

    def _replay_batch(
        self,
        payload: bytes,
        replay: _ReplayLog,
        hs: HardState,
        marker: tuple[int, int] | None,
    ) -> tuple[HardState, tuple[int, int] | None]:
        raw = self._decrypt(payload)
        try:
            hs_raw, marker_raw, first, ents = msgpack.unpackb(raw, use_list=False)
            if marker_raw is not None:
                s_index, s_term, keep = marker_raw
                marker = (s_index, s_term)
                if not keep:
                    replay.reset(s_index + 1)
            if ents:
                etypes = _ENTRY_TYPES
                new = [Entry(t, first + i, etypes[k], d) for i, (t, k, d) in enumerate(ents)]
                if not replay.append(first, new):
                    raise _BadRecord(f"entries from {first} leave a gap after {replay.last}")
            if hs_raw is not None:
                hs = HardState(*hs_raw)
        except _BadRecord:
            raise
        except Exception as e:
            raise _BadRecord(f"malformed batch record: {e!r}") from None
        return hs, marker

    def _choose_snapshot(self, marker: tuple[int, int] | None, replay: _ReplayLog) -> Snapshot | None:
        """Newest sound snapshot the WAL vouches for; falls back one step when the newest is damaged."""
        files = self._list_snapshots()
        if marker is None:
            for _idx, _term, p in files:
                log.warning("raft snap: %s has no WAL record (crash while saving it); removing", p)
                p.unlink()
            return None
        m_index, m_term = marker
        usable = []
        for index, term, p in files:
            if index > m_index or (index == m_index and term != m_term):
                log.warning("raft snap: %s is newer than the WAL's snapshot record; removing", p)
                p.unlink()
            else:
                usable.append((index, term, p))
        usable.reverse()  # newest first
        self._snaps = []
        chosen: Snapshot | None = None
        damaged: list[str] = []
        for index, term, p in usable:
            if chosen is not None:
                self._snaps.insert(0, (index, term))
                continue
            try:
                snap = self._read_snapshot(p, index, term)
            except _SnapshotDamaged as e:
                log.warning("raft snap: %s; renaming it to %s.corrupt", e, p.name)
                p.rename(p.with_name(p.name + ".corrupt"))
                damaged.append(str(e))
                continue
            if index != m_index:
                # Falling back: the WAL must still hold everything from here up to the newest snapshot.
                if not (replay.offset <= index + 1 and replay.term_at(m_index) == m_term):
                    raise CorruptLogError(
                        f"newest snapshot {m_term:016x}-{m_index:016x} is unusable "
                        f"({'; '.join(damaged) or 'file missing'}) and the WAL no longer covers the gap "
                        f"from the previous snapshot {p.name}"
                    )
                log.warning("raft snap: falling back to %s and replaying the WAL after it", p)
            chosen = snap
            self._snaps.insert(0, (index, term))
        if chosen is None and replay.offset == 1 and replay.term_at(m_index) == m_term:
            # Every entry since index 1 is still in the WAL: replay all of it instead.
            log.warning("raft snap: no usable snapshot; replaying the whole WAL from index 1 instead")
            self._marker = None
            return None
        if chosen is None:
            raise CorruptLogError(
                f"the WAL records snapshot {m_term:016x}-{m_index:016x} but no usable snapshot file exists in "
                f"{self._snap_dir} ({'; '.join(damaged) or 'file missing'})"
            )
        self._marker = (chosen.meta.index, chosen.meta.term)
        return chosen

    def _list_snapshots(self) -> list[tuple[int, int, Path]]:
        out = []
        for p in self._snap_dir.iterdir():
            m = _SNAP_RE.match(p.name)
            if m:
                out.append((int(m.group(2), 16), int(m.group(1), 16), p))
        out.sort()
        return out

    def _read_snapshot(self, path: Path, index: int, term: int) -> Snapshot:
        try:
            buf = path.read_bytes()
        except FileNotFoundError:
            raise _SnapshotDamaged(f"{path}: missing") from None
        rec = _record_at(buf, 0)
        if rec is None or rec[0] != REC_SNAPSHOT or _HDR_SIZE + len(rec[1]) != len(buf):
            raise _SnapshotDamaged(f"{path}: snapshot file fails its checksum")
        try:
            raw = self._decrypt(rec[1])
        except _BadRecord:
            raise CorruptLogError(f"{path}: cannot decrypt the snapshot (wrong key?)") from None
        try:
            version, s_index, s_term, voters, learners, promoting, data = msgpack.unpackb(raw)
            if version != FORMAT_VERSION or s_index != index or s_term != term:
                raise ValueError("metadata disagrees with the file name")
            meta = SnapshotMeta(index, term, ConfState(tuple(voters), tuple(learners), tuple(promoting)))
            return Snapshot(meta, bytes(data))
        except Exception as e:
            raise _SnapshotDamaged(f"{path}: malformed snapshot: {e}") from None

    # ------------------------------------------------------------------ public API

    def load(self) -> Restored:
        """The state recovered by :meth:`open` plus everything saved since (re-read from disk then)."""
        self._check_usable()
        if self._restored is None:
            replay, hs, _marker, _counts = self._replay(tolerant=False)
            snapshot = None
            if self._marker is not None:
                index, term = self._marker
                snapshot = self._read_snapshot(self._snap_dir / f"{term:016x}-{index:016x}.snap", index, term)
            hs, entries = self._restore_view(replay, hs, snapshot)
            self._restored = Restored(hs, snapshot, entries)
        return self._restored

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None = None
    ) -> None:
        """Persist snapshot, then entries (overwriting the tail from ``entries[0].index``), then hard state.

        The WAL part is one record and one fsync (group commit). A snapshot costs its own fsyncs first
        (file, then directory) since its WAL marker must never point at a file that is not durable.
        """
        self._check_usable()
        if snapshot is None and not entries and (hard_state is None or hard_state == self._hs):
            return
        keep = True
        first = self._first
        terms = self._terms
        if snapshot is not None and self._marker != (snapshot.meta.index, snapshot.meta.term):
            s_index, s_term = snapshot.meta.index, snapshot.meta.term
            if self._marker is not None and s_index <= self._marker[0]:
                raise ValueError(f"snapshot {s_index} is not newer than the stored one ({self._marker[0]})")
            i = s_index - first  # >= 0: the log starts right after the previous snapshot
            keep = 0 <= i < len(terms) and terms[i] == s_term
            terms = terms[i + 1 :] if keep else array("q")
            first = s_index + 1
        encoded: list[tuple[int, int, bytes]] = []
        first_index = 0
        if entries:
            first_index = entries[0].index
            last = first + len(terms) - 1
            if first_index > last + 1 or first_index < first:
                raise ValueError(f"entries start at {first_index}; the log holds indexes {first}..{last}")
            for n, e in enumerate(entries, first_index):
                if e.index != n:
                    raise ValueError(f"entries are not contiguous at index {n}")
            encoded = [(e.term, e.type, e.data) for e in entries]
        marker = [snapshot.meta.index, snapshot.meta.term, keep] if snapshot is not None else None
        hs = [hard_state.term, hard_state.vote, hard_state.commit] if hard_state is not None else None
        payload = msgpack.packb((hs, marker, first_index, encoded))
        if self._cipher is not None:
            payload = self._cipher.encrypt(payload)
        record = _frame(REC_BATCH, payload)

        try:
            if snapshot is not None:
                self._write_snapshot_file(snapshot)
            if self._seg_size >= self._segment_bytes:
                self._roll()
            self._write(record)
            if self._fsync:
                _datasync(self._fd)
        except BaseException as e:
            self._fail(e)
            raise

        # Durable: update the in-memory mirror.
        self._restored = None
        if snapshot is not None:
            self._marker = (snapshot.meta.index, snapshot.meta.term)
            self._snaps = [s for s in self._snaps if s[0] < snapshot.meta.index] + [self._marker]
        if entries:
            del terms[first_index - first :]
            terms.extend([e.term for e in entries])
        self._first = first
        self._terms = terms
        if hard_state is not None:
            self._hs = hard_state
        if snapshot is not None:
            self._compact()

    def close(self) -> None:
        """Release the files; further calls raise. Idempotent."""
        self._closed = True
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # drops the flock
            self._lock_fd = -1

    def size_bytes(self) -> int:
        """Bytes on disk (WAL segments + snapshot files), for metrics and compaction policy."""
        total = 0
        for d in (self._wal_dir, self._snap_dir):
            with os.scandir(d) as it:
                for de in it:
                    with contextlib.suppress(FileNotFoundError):
                        total += de.stat().st_size
        return total

    def __enter__(self) -> RaftStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError("storage is closed")
        if self._failed is not None:
            raise OSError(f"storage failed earlier and must be reopened: {self._failed!r}")

    def _fail(self, e: BaseException) -> None:
        """After a failed write or fsync the file state is unknown: refuse further writes (fsyncgate)."""
        self._failed = e
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._seg_size)  # best effort: do not leave a half record behind

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._seg_size += len(data)

    def _new_segment(self, seq: int) -> None:
        first = self._first + len(self._terms)
        path = self._wal_dir / f"{seq:016x}-{first:016x}.wal"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._seg_size = 0
        self._segments.append(_Segment(seq, first, path))
        header = msgpack.packb((FORMAT_VERSION, seq, first, self._cipher is not None))
        hs = self._hs
        marker = [self._marker[0], self._marker[1], True] if self._marker is not None else None
        preamble = msgpack.packb(([hs.term, hs.vote, hs.commit], marker, 0, ()))
        if self._cipher is not None:
            preamble = self._cipher.encrypt(preamble)
        self._write(_frame(REC_HEADER, header) + _frame(REC_BATCH, preamble))
        if self._fsync:
            _datasync(fd)
            _fsync_dir(self._wal_dir)

    def _roll(self) -> None:
        self._new_segment(self._segments[-1].seq + 1)

    def _write_snapshot_file(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        payload = msgpack.packb(
            (
                FORMAT_VERSION,
                meta.index,
                meta.term,
                list(meta.conf.voters),
                list(meta.conf.learners),
                list(meta.conf.promoting),
                snapshot.data,
            )
        )
        if self._cipher is not None:
            payload = self._cipher.encrypt(payload)
        final = self._snap_dir / f"{meta.term:016x}-{meta.index:016x}.snap"
        tmp = final.with_name(final.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            data = memoryview(_frame(REC_SNAPSHOT, payload))
            while data:
                data = data[os.write(fd, data) :]
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        if self._fsync:
            _fsync_dir(self._snap_dir)

    def _compact(self) -> None:
        """Drop old snapshot files (keep the newest two) and WAL segments below the older kept snapshot."""
        while len(self._snaps) > KEEP_SNAPSHOTS:
            index, term = self._snaps.pop(0)
            with contextlib.suppress(FileNotFoundError):
                (self._snap_dir / f"{term:016x}-{index:016x}.snap").unlink()
        for p in self._snap_dir.glob("*.corrupt"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        if len(self._snaps) < KEEP_SNAPSHOTS:
            return
        floor = self._snaps[0][0]
        while len(self._segments) > 1 and self._segments[1].first <= floor + 1:
            seg = self._segments.pop(0)
            with contextlib.suppress(FileNotFoundError):
                seg.path.unlink()
