"""Wire format of Raft messages: msgpack arrays (positional, no field names) for speed and size.

A message is ``[type, to, frm, term, log_term, index, entries, commit, reject, reject_hint, snapshot,
context]`` where ``entries`` is a flat array ``[term, index, type, data, term, index, type, data, ...]``
(flat, so decoding allocates no per-entry arrays) and ``snapshot`` is nil or
``[index, term, voters, learners, promoting, data]``. A batch (what the transport puts in one frame) is
``[WIRE_VERSION, msg, msg, ...]``.

Decoding trusts nothing: every field is type- and range-checked, and any malformed input raises
:class:`CodecError` -- never another exception -- so a bad peer can only get its connection closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from agents.raft.types import ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMeta

__all__ = [
    "WIRE_VERSION",
    "CodecError",
    "decode_message",
    "decode_messages",
    "encode_message",
    "encode_messages",
    "join_encoded",
]

WIRE_VERSION = 1
_FIELDS = 12
_U64 = (1 << 64) - 1
_MESSAGE_TYPES: dict[int, MessageType] = {int(t): t for t in MessageType}
_ENTRY_TYPES: dict[int, EntryType] = {int(t): t for t in EntryType}
_pack = msgpack.packb  # a shared Packer would be faster but is not thread-safe


class CodecError(ValueError):
    """Bytes that are not a well-formed encoded message (or batch), or a message that cannot be encoded."""


def _message_array(m: Message) -> list[Any]:
    flat: list[Any] = []
    for e in m.entries:
        flat += (e.term, e.index, e.type, e.data)
    snap = m.snapshot
    s: list[Any] | None = None
    if snap is not None:
        meta = snap.meta
        conf = meta.conf
        s = [meta.index, meta.term, conf.voters, conf.learners, conf.promoting, snap.data]
    return [
        m.type,
        m.to,
        m.frm,
        m.term,
        m.log_term,
        m.index,
        flat,
        m.commit,
        m.reject,
        m.reject_hint,
        s,
        m.context,
    ]


def encode_message(m: Message) -> bytes:
    """One message as a msgpack array (what :func:`join_encoded` batches)."""
    try:
        out: bytes = _pack(_message_array(m))
    except Exception as e:
        raise CodecError(f"cannot encode {m!r}: {e}") from None
    return out


def encode_messages(ms: Sequence[Message]) -> bytes:
    """A batch of messages, decoded by :func:`decode_messages`."""
    try:
        out: bytes = _pack([WIRE_VERSION, *[_message_array(m) for m in ms]])
    except Exception as e:
        raise CodecError(f"cannot encode a batch: {e}") from None
    return out


def join_encoded(parts: Sequence[bytes]) -> bytes:
    """The batch of already-encoded messages: equal to ``encode_messages`` of the originals, without re-encoding."""
    n = len(parts) + 1
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 0x10000:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return b"".join((head, bytes((WIRE_VERSION,)), *parts))


def _unpack(b: bytes) -> Any:
    try:
        return msgpack.unpackb(b, use_list=False, raw=False, strict_map_key=True)
    except Exception as e:  # ExtraData, FormatError, StackError, ValueError, UnicodeDecodeError, ...
        raise CodecError(f"not msgpack: {type(e).__name__}: {e}") from None


def _is_u64(x: object) -> bool:
    return type(x) is int and 0 <= x <= _U64


def _ids(x: object) -> tuple[int, ...]:
    if type(x) is not tuple or not all(_is_u64(i) for i in x):
        raise CodecError("bad member id list")
    return x


def _entries(flat: tuple[Any, ...]) -> tuple[Entry, ...]:
    it = iter(flat)
    etypes = _ENTRY_TYPES
    out = []
    try:
        for term, index, etype, data in zip(it, it, it, it, strict=True):
            if (
                type(term) is not int
                or type(index) is not int
                or type(etype) is not int
                or type(data) is not bytes
                or not (0 <= term <= _U64 and 0 <= index <= _U64)
            ):
                raise CodecError("malformed entry")
            out.append(Entry(term, index, etypes[etype], data))
    except KeyError:
        raise CodecError("unknown entry type") from None
    return tuple(out)


def _message(a: object) -> Message:
    if type(a) is not tuple or len(a) != _FIELDS:
        raise CodecError("a message must be an array of 12 fields")
    t, to, frm, term, log_term, index, flat, commit, reject, reject_hint, snap, context = a
    mtype = _MESSAGE_TYPES.get(t) if type(t) is int else None
    if mtype is None:
        raise CodecError(f"unknown message type {t!r}")
    if not (
        _is_u64(to)
        and _is_u64(frm)
        and _is_u64(term)
        and _is_u64(log_term)
        and _is_u64(index)
        and _is_u64(commit)
        and _is_u64(reject_hint)
        and type(reject) is bool
        and type(context) is bytes
        and type(flat) is tuple
        and len(flat) % 4 == 0
    ):
        raise CodecError("malformed message fields")
    entries: tuple[Entry, ...] = ()
    if flat:
        entries = _entries(flat)
    snapshot = None
    if snap is not None:
        if type(snap) is not tuple or len(snap) != 6:
            raise CodecError("malformed snapshot")
        s_index, s_term, voters, learners, promoting, s_data = snap
        if not (_is_u64(s_index) and _is_u64(s_term) and type(s_data) is bytes):
            raise CodecError("malformed snapshot")
        snapshot = Snapshot(
            SnapshotMeta(s_index, s_term, ConfState(_ids(voters), _ids(learners), _ids(promoting))), s_data
        )
    return Message(
        mtype, to, frm, term, log_term, index, entries, commit, reject, reject_hint, snapshot, context
    )


def decode_message(b: bytes) -> Message:
    """Inverse of :func:`encode_message`; raises CodecError on anything else."""
    return _message(_unpack(b))


def decode_messages(b: bytes) -> list[Message]:
    """Inverse of :func:`encode_messages` / :func:`join_encoded`; raises CodecError on anything else."""
    a = _unpack(b)
    if type(a) is not tuple or not a or a[0] != WIRE_VERSION or type(a[0]) is not int:
        raise CodecError("not a message batch of a known wire version")
    return [_message(m) for m in a[1:]]
