"""Wire codec: exact round trips, compact arrays, and nothing but CodecError on hostile bytes."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.raft.codec import (
    WIRE_VERSION,
    CodecError,
    decode_message,
    decode_messages,
    encode_message,
    encode_messages,
    join_encoded,
)
from agents.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

u64 = st.integers(0, (1 << 64) - 1)
small = st.integers(0, 1000)
entries = st.builds(Entry, small, small, st.sampled_from(EntryType), st.binary(max_size=64))
snapshots = st.builds(
    Snapshot,
    st.builds(
        SnapshotMeta,
        u64,
        u64,
        st.builds(
            ConfState,
            st.tuples(small, small),
            st.lists(small, max_size=3).map(tuple),
            st.lists(small, max_size=2).map(tuple),
        ),
    ),
    st.binary(max_size=64),
)
messages = st.builds(
    Message,
    st.sampled_from(MessageType),
    u64,
    u64,
    u64,
    log_term=u64,
    index=u64,
    entries=st.lists(entries, max_size=5).map(tuple),
    commit=u64,
    reject=st.booleans(),
    reject_hint=u64,
    snapshot=st.none() | snapshots,
    context=st.binary(max_size=32),
)


@given(messages)
def test_roundtrip(m: Message) -> None:
    assert decode_message(encode_message(m)) == m


@given(st.lists(messages, max_size=20))
def test_batch_roundtrip_and_join(ms: list[Message]) -> None:
    b = encode_messages(ms)
    assert decode_messages(b) == ms
    assert join_encoded([encode_message(m) for m in ms]) == b


def test_join_handles_array_header_sizes() -> None:
    m = Message(MessageType.HEARTBEAT, 2, 1, 3)
    for n in (0, 14, 15, 16, 70_000):
        b = join_encoded([encode_message(m)] * n)
        assert b == encode_messages([m] * n)
        assert len(decode_messages(b)) == n


def test_compact_encoding() -> None:
    hb = Message(MessageType.HEARTBEAT, 2, 1, 3, commit=10)
    assert len(encode_message(hb)) <= 16
    raw = msgpack.unpackb(encode_message(hb))
    assert isinstance(raw, list) and len(raw) == 12  # positional array, no field names
    app = Message(MessageType.APPEND, 2, 1, 3, 3, 9, (Entry(3, 10, data=b"x" * 100),), commit=9)
    assert len(encode_message(app)) < 130


def test_decoded_types_are_exact() -> None:
    m = Message(
        MessageType.SNAPSHOT,
        2,
        1,
        3,
        snapshot=Snapshot(SnapshotMeta(5, 2, ConfState((1, 2), (3,), (3,))), b"s"),
        entries=(Entry(1, 1, EntryType.CONF_CHANGE, b"c"),),
    )
    d = decode_message(encode_message(m))
    assert type(d.type) is MessageType and type(d.entries[0].type) is EntryType
    assert isinstance(d.entries, tuple) and isinstance(d.snapshot, Snapshot)
    assert d.snapshot.meta.conf.voters == (1, 2)


def _valid() -> list[object]:
    raw: list[object] = msgpack.unpackb(
        encode_message(Message(MessageType.APPEND, 2, 1, 3, entries=(Entry(3, 1),)))
    )
    return raw


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (0, 99),  # unknown message type
        (0, True),
        (1, -1),  # negative id
        (3, "3"),  # str instead of int
        (3, 1.5),
        (6, [3, 1, 0]),  # entries not a multiple of 4
        (6, [3, 1, 7, b""]),  # unknown entry type
        (6, [3, 1, 0, "text"]),  # str data
        (8, 1),  # reject must be a bool
        (10, [1, 2]),  # short snapshot
        (10, [1, 2, [1, "x"], [], [], b""]),
        (10, [1, 2, [1], [], [-1], b""]),
        (11, "ctx"),
        (11, {"a": 1}),
    ],
)
def test_malformed_fields_raise_codec_error(field: int, value: object) -> None:
    raw = _valid()
    raw[field] = value
    with pytest.raises(CodecError):
        decode_message(msgpack.packb(raw))


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xc1",
        msgpack.packb([1, 2, 3]),
        msgpack.packb([]),
        msgpack.packb({"a": 1}),
        msgpack.packb([WIRE_VERSION + 1]),
        msgpack.packb([WIRE_VERSION, [1]]),
        msgpack.packb(_valid()) + b"\x00",  # trailing garbage
        b"\x91" * 100_000,  # deep nesting
        b"\xdd\xff\xff\xff\xff",  # claims 4G elements
        b"\xc6\xff\xff\xff\xff",  # claims a 4 GB bin
    ],
)
def test_garbage_raises_codec_error(blob: bytes) -> None:
    with pytest.raises(CodecError):
        decode_messages(blob)
    with pytest.raises(CodecError):
        decode_message(blob)


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_fuzz_random_bytes_only_codec_error(b: bytes) -> None:
    for decode in (decode_message, decode_messages):
        try:
            decode(b)
        except CodecError:
            pass


@settings(max_examples=500)
@given(st.lists(messages, min_size=1, max_size=3), st.data())
def test_fuzz_mutated_encodings_only_codec_error(ms: list[Message], data: st.DataObject) -> None:
    b = bytearray(encode_messages(ms))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(b)))
    for blob in (bytes(b), bytes(b[:cut])):
        try:
            out = decode_messages(blob)
        except CodecError:
            continue
        assert all(isinstance(m, Message) for m in out)


def test_unencodable_message_raises_codec_error() -> None:
    with pytest.raises(CodecError):
        encode_message(Message(MessageType.APPEND, 2, 1, 3, context=object()))  # type: ignore[arg-type]


def test_every_conf_state_field_survives() -> None:
    # Guards the positional format: a field added to ConfState must be added to the codec too.
    conf = ConfState(**{f.name: (7, 8) for f in dataclasses.fields(ConfState)})
    m = Message(MessageType.SNAPSHOT, 2, 1, 3, snapshot=Snapshot(SnapshotMeta(5, 2, conf), b""))
    assert decode_message(encode_message(m)) == m
