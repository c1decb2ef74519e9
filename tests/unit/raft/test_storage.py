"""WAL + snapshot store: round trips, overwrites, torn tails, corruption, compaction, backups, encryption."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import struct
import zlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.raft.storage import (
    AesGcmCipher,
    CorruptLogError,
    RaftStorage,
    Restored,
    StorageLockedError,
    _frame,
)
from agents.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta

HDR = struct.Struct("<IIB")


def ents(first: int, n: int, term: int, size: int = 20) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, bytes([i % 251]) * size) for i in range(first, first + n)]


def snap(index: int, term: int, data: bytes = b"state") -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState((1, 2, 3), (4, 5), (5,))), data)


def reopen(d: Path, **kw: object) -> Restored:
    with RaftStorage.open(d, fsync=False, **kw) as s:  # type: ignore[arg-type]
        return s.load()


def segments(d: Path) -> list[Path]:
    return sorted((d / "wal").glob("*.wal"))


def record_offsets(path: Path) -> list[int]:
    """Start offsets of the records in a segment (test helper, assumes a sound file)."""
    buf = path.read_bytes()
    out, pos = [], 0
    while pos < len(buf):
        out.append(pos)
        pos += HDR.size + HDR.unpack_from(buf, pos)[0]
    return out


def flip(path: Path, offset: int) -> None:
    b = bytearray(path.read_bytes())
    b[offset] ^= 0x5A
    path.write_bytes(bytes(b))


# ---------------------------------------------------------------------------- basics


def test_fresh_directory_is_empty(tmp_path: Path) -> None:
    r = reopen(tmp_path / "s")
    assert r == Restored(HardState(), None, [])
    assert (tmp_path / "s" / "wal").is_dir() and (tmp_path / "s" / "snap").is_dir()


def test_roundtrip(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with RaftStorage.open(d, fsync=True) as s:
        s.save(HardState(1, 2, 0), ents(1, 10, 1))
        s.save(None, ents(11, 5, 1))
        s.save(HardState(1, 2, 12), [])
        s.save(None, [Entry(1, 16, EntryType.CONF_CHANGE, b"cc")])
        assert s.load().entries == [*ents(1, 15, 1), Entry(1, 16, EntryType.CONF_CHANGE, b"cc")]
    r = reopen(d)
    assert r.hard_state == HardState(1, 2, 12)
    assert r.snapshot is None
    assert r.entries == [*ents(1, 15, 1), Entry(1, 16, EntryType.CONF_CHANGE, b"cc")]


def test_restart_keeps_term_and_vote(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with RaftStorage.open(d, fsync=False) as s:
        s.save(HardState(7, 3, 0), [])
    assert reopen(d).hard_state == HardState(7, 3, 0)
    with RaftStorage.open(d, fsync=False) as s:
        s.save(HardState(8, 0, 0), [])
    assert reopen(d).hard_state == HardState(8, 0, 0)


def test_overwrite_of_tail(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with RaftStorage.open(d, fsync=False) as s:
        s.save(HardState(1, 1, 3), ents(1, 10, 1))
        s.save(HardState(2, 2, 3), ents(6, 3, 2))  # a new leader overwrites 6..10 with 6..8
        s.save(None, ents(9, 2, 2))
        s.save(None, ents(4, 1, 3))  # and again, from 4
        with pytest.raises(ValueError):
            s.save(None, ents(7, 1, 3))  # would leave a gap after 4
        with pytest.raises(ValueError):
            s.save(None, [*ents(5, 1, 3), *ents(7, 1, 3)])  # not contiguous
    r = reopen(d)
    assert r.entries == ents(1, 3, 1) + ents(4, 1, 3)
    assert r.hard_state == HardState(2, 2, 3)


def test_directory_is_locked_while_open(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with RaftStorage.open(d, fsync=False), pytest.raises(StorageLockedError):
        RaftStorage.open(d, fsync=False)
    RaftStorage.open(d, fsync=False).close()


def test_segments_roll_and_replay_in_order(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with RaftStorage.open(d, fsync=False, segment_bytes=2048) as s:
        for i in range(50):
            s.save(HardState(1 + i // 10, 1, i * 5), ents(1 + i * 5, 5, 1 + i // 10))
        size = s.size_bytes()
    assert len(segments(d)) >= 4
    assert size == sum(p.stat().st_size for p in (d / "wal").iterdir())
    r = reopen(d, segment_bytes=2048)
    assert [e.index for e in r.entries] == list(range(1, 251))
    assert r.hard_state == HardState(5, 1, 245)


# ---------------------------------------------------------------------------- crashes and damage


def _three_saves(d: Path) -> tuple[Restored, Path, int]:
    """Returns (state before the last save, segment, offset of the last record)."""
    with RaftStorage.open(d, fsync=False) as s:
        s.save(HardState(1, 1, 0), ents(1, 5, 1))
        s.save(HardState(2, 2, 3), ents(6, 5, 2))
        before = s.load()
        s.save(HardState(3, 3, 8), ents(9, 4, 3))  # overwrites 9, 10 and appends
    seg = segments(d)[-1]
    return before, seg, record_offsets(seg)[-1]


def test_torn_tail_at_every_offset_loses_only_the_last_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    orig = tmp_path / "orig"
    before, seg, start = _three_saves(orig)
    end = seg.stat().st_size
    assert end - start > 50
    for cut in range(start, end):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(orig, d)
        with open(d / "wal" / seg.name, "r+b") as f:
            f.truncate(cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            r = reopen(d)
        assert r == before, cut
        if cut > start:
            assert any(seg.name in m and f"offset {start}" in m for m in caplog.messages)
        assert (d / "wal" / seg.name).stat().st_size == start  # cut off, so appends start clean
        with RaftStorage.open(d, fsync=False) as s:  # and the log keeps working
            s.save(HardState(4, 4, 9), ents(11, 1, 4))
        assert reopen(d).entries == [*before.entries, *ents(11, 1, 4)]
        shutil.rmtree(d)


def test_flipped_byte_in_last_record_is_cut_off(tmp_path: Path) -> None:
    orig = tmp_path / "orig"
    before, seg, start = _three_saves(orig)
    for off in range(start, seg.stat().st_size):
        d = tmp_path / f"flip{off}"
        shutil.copytree(orig, d)
        flip(d / "wal" / seg.name, off)
        assert reopen(d) == before, off
        shutil.rmtree(d)


def test_flipped_byte_in_middle_record_refuses_to_start(tmp_path: Path) -> None:
    orig = tmp_path / "orig"
    _three_saves(orig)
    seg = segments(orig)[-1]
    offsets = record_offsets(seg)
    middle, nxt = offsets[-2], offsets[-1]
    for off in range(middle, nxt):
        d = tmp_path / f"flip{off}"
        shutil.copytree(orig, d)
        flip(d / "wal" / seg.name, off)
        with pytest.raises(CorruptLogError, match=rf"{seg.name}: corrupt record at offset {middle}"):
            RaftStorage.open(d, fsync=False)
        shutil.rmtree(d)


def test_damage_in_an_older_segment_refuses_to_start(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with RaftStorage.open(d, fsync=False, segment_bytes=512) as s:
        for i in range(20):
            s.save(None, ents(1 + i * 5, 5, 1))
    first = segments(d)[0]
    flip(first, record_offsets(first)[-1] + HDR.size + 3)  # last record of a full, older segment
    with pytest.raises(CorruptLogError, match=first.name):
        RaftStorage.open(d, fsync=False)


def test_crash_while_creating_a_segment(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with RaftStorage.open(d, fsync=False, segment_bytes=512) as s:
        for i in range(10):
            s.save(HardState(1, 1, i), ents(1 + i * 5, 5, 1))
        expect = s.load()
    last = segments(d)[-1]
    seq, first = int(last.name[:16], 16) + 1, expect.entries[-1].index + 1
    nxt = last.with_name(f"{seq:016x}-{first:016x}.wal")
    header = _frame(1, msgpack.packb((1, seq, first, False)))
    nxt.write_bytes(header[: len(header) // 2])  # torn header of a brand-new segment
    assert reopen(d, segment_bytes=512) == expect
    assert not nxt.exists()
    nxt.write_bytes(header)  # header only, no state preamble
    assert reopen(d, segment_bytes=512) == expect
    assert not nxt.exists()


# ---------------------------------------------------------------------------- snapshots


def test_snapshot_and_compaction(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with RaftStorage.open(d, fsync=False, segment_bytes=1024) as s:
        for i in range(40):
            s.save(HardState(1, 1, i * 5), ents(1 + i * 5, 5, 1))
        n_before = len(segments(d))
        s.save(HardState(1, 1, 200), [], snap(100, 1))  # local snapshot: entries after 100 stay
        assert len(segments(d)) >= n_before - 1  # nothing below an *older* kept snapshot yet
        s.save(None, ents(201, 5, 1))
        s.save(HardState(1, 1, 205), [], snap(180, 1))
        remaining = segments(d)
        assert len(remaining) < n_before
        # Everything from the older kept snapshot on is still covered.
        assert int(remaining[0].name[17:33], 16) <= 101
        s.save(None, [], snap(190, 1))  # a third: the oldest snapshot file goes
        assert sorted(p.name for p in (d / "snap").iterdir()) == [
            f"{1:016x}-{180:016x}.snap",
            f"{1:016x}-{190:016x}.snap",
        ]
        expect = s.load()
    assert expect.snapshot == snap(190, 1)
    assert [e.index for e in expect.entries] == list(range(191, 206))
    assert reopen(d, segment_bytes=1024) == expect
    with RaftStorage.open(d, fsync=False, segment_bytes=1024) as s:
        with pytest.raises(ValueError):
            s.save(None, [], snap(150, 1))  # older than what is stored
        with pytest.raises(ValueError):
            s.save(None, ents(150, 1, 1))  # below the snapshot


def test_every_conf_state_field_survives(tmp_path: Path) -> None:
    # Guards the positional format: a field added to ConfState must be added to the snapshot file too.
    conf = ConfState(**{f.name: (7, 8) for f in dataclasses.fields(ConfState)})
    sn = Snapshot(SnapshotMeta(5, 2, conf), b"x")
    with RaftStorage.open(tmp_path / "s", fsync=False) as s:
        s.save(HardState(2, 0, 5), [], sn)
    assert reopen(tmp_path / "s").snapshot == sn


def test_snapshot_from_leader_replaces_a_conflicting_log(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with RaftStorage.open(d, fsync=False) as s:
        s.save(HardState(2, 1, 3), ents(1, 10, 1))
        # The leader's snapshot at 8 has term 2: our entry 8 (term 1) conflicts, so the log goes.
        s.save(HardState(2, 1, 8), [], snap(8, 2))
        s.save(None, ents(9, 2, 2))
    r = reopen(d)
    assert r.snapshot == snap(8, 2) and r.entries == ents(9, 2, 2) and r.hard_state.commit == 8
    d2 = tmp_path / "s2"
    with RaftStorage.open(d2, fsync=False) as s:
        s.save(HardState(2, 1, 3), ents(1, 10, 2))
        s.save(HardState(2, 1, 8), [], snap(8, 2))  # matches our entry 8: entries 9, 10 stay
    r = reopen(d2)
    assert r.snapshot == snap(8, 2) and r.entries == ents(9, 2, 2)


def test_corrupt_newest_snapshot_falls_back_to_previous(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with RaftStorage.open(d, fsync=False) as s:
        s.save(HardState(1, 1, 50), ents(1, 60, 1))
        s.save(None, [], snap(20, 1, b"at-20"))
        s.save(None, [], snap(40, 1, b"at-40"))
    newest = d / "snap" / f"{1:016x}-{40:016x}.snap"
    flip(newest, newest.stat().st_size - 2)
    r = reopen(d)
    assert r.snapshot == snap(20, 1, b"at-20")
    assert [e.index for e in r.entries] == list(range(21, 61))
    assert r.hard_state == HardState(1, 1, 50)
    assert not newest.exists() and newest.with_name(newest.name + ".corrupt").exists()
    assert reopen(d) == r  # stable on the next start too


def test_corrupt_only_snapshot_with_whole_wal_replays_from_one(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with RaftStorage.open(d, fsync=False) as s:
        s.save(HardState(1, 1, 10), ents(1, 10, 1))
        s.save(None, [], snap(5, 1))
    (d / "snap" / f"{1:016x}-{5:016x}.snap").write_bytes(b"garbage")
    r = reopen(d)
    assert r.snapshot is None and r.entries == ents(1, 10, 1)


def test_corrupt_snapshot_without_wal_coverage_refuses_to_start(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with RaftStorage.open(d, fsync=False) as s:
        s.save(HardState(3, 1, 100), [], snap(100, 3))  # a new follower's first state: a snapshot
        s.save(None, ents(101, 5, 3))
    f = d / "snap" / f"{3:016x}-{100:016x}.snap"
    flip(f, 20)
    with pytest.raises(CorruptLogError, match="snapshot"):
        RaftStorage.open(d, fsync=False)


def test_snapshot_without_wal_record_is_an_orphan(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with RaftStorage.open(d, fsync=False) as s:
        s.save(HardState(1, 1, 5), ents(1, 5, 1))
        expect = s.load()
        s.save(None, [], snap(5, 1))
    # Crash between writing the snapshot file and its WAL record: drop the record.
    seg = segments(d)[-1]
    with open(seg, "r+b") as f:
        f.truncate(record_offsets(seg)[-1])
    assert reopen(d) == expect
    assert list((d / "snap").iterdir()) == []


# ---------------------------------------------------------------------------- backup and encryption


def test_backup_copy_and_restore(tmp_path: Path) -> None:
    d = tmp_path / "live"
    with RaftStorage.open(d, fsync=True, segment_bytes=1024) as s:
        for i in range(30):
            s.save(HardState(2, 1, i * 3), ents(1 + i * 3, 3, 2))
        s.save(None, [], snap(30, 2))
        s.save(None, [], snap(60, 2))
        s.save(HardState(3, 2, 88), ents(91, 2, 3))
        expect = s.load()
    backup = tmp_path / "backup"
    shutil.copytree(d, backup)
    shutil.rmtree(d)
    restored = tmp_path / "restored"
    shutil.copytree(backup, restored)
    assert reopen(restored, segment_bytes=1024) == expect
    with RaftStorage.open(restored, fsync=False, segment_bytes=1024) as s:
        s.save(HardState(4, 0, 88), [])
    assert reopen(backup, segment_bytes=1024) == expect  # the copy is independent


def test_cipher_hides_plaintext(tmp_path: Path) -> None:
    d = tmp_path / "s"
    key = bytes(range(32))
    secret = b"TOP-SECRET-SERVICE-ENV-PASSWORD"
    with RaftStorage.open(d, fsync=False, cipher=AesGcmCipher(key), segment_bytes=1024) as s:
        for i in range(10):
            s.save(HardState(1, 1, i), [Entry(1, i + 1, EntryType.NORMAL, secret + bytes([i]) * 50)])
        s.save(None, [], snap(5, 1, b"snapshot:" + secret))
        s.save(None, [], snap(8, 1, b"snapshot:" + secret))
        expect = s.load()
    files = [p for p in d.rglob("*") if p.is_file()]
    assert any(p.suffix == ".snap" for p in files) and any(p.suffix == ".wal" for p in files)
    for p in files:
        assert secret not in p.read_bytes(), p
        assert secret[:8] not in p.read_bytes(), p
    assert reopen(d, cipher=AesGcmCipher(key), segment_bytes=1024) == expect
    with pytest.raises(CorruptLogError, match="no key"):
        RaftStorage.open(d, fsync=False)
    with pytest.raises(CorruptLogError, match="wrong key"):
        RaftStorage.open(d, fsync=False, cipher=AesGcmCipher(bytes(32)))
    assert reopen(d, cipher=AesGcmCipher(key), segment_bytes=1024) == expect  # nothing was cut off


def test_crc_covers_header_and_payload() -> None:
    # Documented framing: [len u32][crc32 u32][type u8][payload], crc over len+type+payload.
    rec = _frame(2, b"abc")
    n, crc, t = HDR.unpack_from(rec)
    assert (n, t, rec[HDR.size :]) == (3, 2, b"abc")
    assert crc == zlib.crc32(b"abc", zlib.crc32(struct.pack("<IB", 3, 2)))


# ---------------------------------------------------------------------------- crash consistency


class Model:
    """What the storage should hold, applying save() by the documented rules."""

    def __init__(self) -> None:
        self.hs = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []

    @property
    def first(self) -> int:
        return self.snapshot.meta.index + 1 if self.snapshot else 1

    @property
    def last(self) -> int:
        return self.first + len(self.entries) - 1

    def save(self, hs: HardState | None, es: list[Entry], sn: Snapshot | None) -> None:
        if sn is not None:
            i = sn.meta.index - self.first
            keep = 0 <= i < len(self.entries) and self.entries[i].term == sn.meta.term
            self.entries = self.entries[i + 1 :] if keep else []
            self.snapshot = sn
        if es:
            del self.entries[es[0].index - self.first :]
            self.entries.extend(es)
        if hs is not None:
            self.hs = hs

    def restored(self) -> Restored:
        hs = self.hs
        if self.snapshot and hs.commit < self.snapshot.meta.index:
            hs = HardState(hs.term, hs.vote, self.snapshot.meta.index)
        return Restored(hs, self.snapshot, list(self.entries))


op = st.tuples(
    st.sampled_from(["append", "overwrite", "hs", "local_snap", "leader_snap"]),
    st.integers(0, 1000),
    st.integers(1, 6),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=25), cut=st.integers(0, 10_000), data_size=st.integers(0, 40))
def test_crash_consistency(tmp_path: Path, ops: list[tuple[str, int, int]], cut: int, data_size: int) -> None:
    d = tmp_path / f"h{abs(hash((tuple(ops), cut, data_size)))}"
    model = Model()
    prev = model.restored()
    term = 1
    with RaftStorage.open(d, fsync=False, segment_bytes=700) as s:
        for kind, r, n in ops:
            hs: HardState | None = None
            es: list[Entry] = []
            sn: Snapshot | None = None
            if kind == "append":
                es = ents(model.last + 1, n, term, data_size)
            elif kind == "overwrite" and model.entries:
                term += 1
                es = ents(model.first + r % len(model.entries), n, term, data_size)
                hs = HardState(term, r % 4, model.hs.commit)
            elif kind == "hs":
                term += r % 2
                hs = HardState(term, r % 4, min(model.last, model.hs.commit + n))
            elif kind == "local_snap" and model.entries:
                e = model.entries[r % len(model.entries)]
                sn = snap(e.index, e.term, bytes([r % 256]) * n)
            elif kind == "leader_snap":
                term += 1
                sn = snap(model.last + n, term, b"leader")
                es = ents(model.last + n + 1, n, term, data_size)
                hs = HardState(term, 0, model.last + n)
            else:
                continue
            if sn is None and not es and hs == model.hs:
                continue  # a no-op save writes nothing
            prev = model.restored()
            s.save(hs, es, sn)
            model.save(hs, es, sn)
            assert s.load() == model.restored()
    after = model.restored()
    assert reopen(d, segment_bytes=700) == after
    # Crash mid-write of the last save: cut its record anywhere; we get the state before or after it.
    seg = segments(d)[-1]
    offsets = record_offsets(seg)
    if len(offsets) > 2:
        start, end = offsets[-1], seg.stat().st_size
        at = start + cut % (end - start)
        with open(seg, "r+b") as f:
            f.truncate(at)
        assert reopen(d, segment_bytes=700) in (prev, after)
    shutil.rmtree(d)
