"""A minimal, strict DER reader for the parts of X.509 certificates and PKCS#8 keys the agent reads.

Why not ``cryptography``: the long-lived agent only ever *reads* certificates (who is this peer, when
does my certificate expire, which public key does it hold); loading ``cryptography`` for that costs every
node ~11 MB of RSS. Creating keys and signing happens in a short-lived subprocess
(:mod:`agents.pki.tool`). This module parses exactly the structures of RFC 5280 / RFC 5208 it needs and
refuses anything malformed with one exception type, :class:`DERError` (a ``ValueError``): truncated
input, lengths past the end, indefinite or non-minimal lengths, wrong tags and trailing bytes.
It does not verify signatures: TLS (OpenSSL) verifies chains on every connection.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import re
from dataclasses import dataclass

__all__ = [
    "OID_BASIC_CONSTRAINTS",
    "OID_COMMON_NAME",
    "OID_ORGANIZATION",
    "OID_ORGANIZATIONAL_UNIT",
    "Certificate",
    "DERError",
    "PrivateKeyInfo",
    "parse_certificate",
    "parse_private_key",
    "pem_blocks",
    "pem_to_der",
]

OID_COMMON_NAME = "2.5.4.3"
OID_ORGANIZATION = "2.5.4.10"
OID_ORGANIZATIONAL_UNIT = "2.5.4.11"
OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"

_BOOLEAN, _INTEGER, _BIT_STRING, _OCTET_STRING, _NULL, _OID = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_SEQUENCE, _SET = 0x30, 0x31
_STRING_TAGS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x14: "latin-1",  # TeletexString (as OpenSSL treats it)
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}
_MAX_LEN_OCTETS = 4  # 4 GiB is far beyond any certificate; longer length fields are refused

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


class DERError(ValueError):
    """The input is not the well-formed DER/PEM structure expected (the message says where)."""


# ------------------------------------------------------------------------------------------------ TLV


@dataclass(frozen=True)
class _TLV:
    tag: int
    start: int  # offset of the tag byte
    body: int  # offset of the contents
    end: int  # offset just past the contents
    data: bytes

    @property
    def content(self) -> bytes:
        return self.data[self.body : self.end]

    @property
    def raw(self) -> bytes:
        return self.data[self.start : self.end]


def _tlv(data: bytes, pos: int, limit: int, what: str) -> _TLV:
    """One tag-length-value at ``pos`` that must end by ``limit``."""
    if pos + 2 > limit:
        raise DERError(f"{what}: truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DERError(f"{what}: multi-byte tags are not used in certificates")
    first = data[pos + 1]
    body = pos + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DERError(f"{what}: indefinite length is not DER")
    else:
        n = first & 0x7F
        if n > _MAX_LEN_OCTETS or body + n > limit:
            raise DERError(f"{what}: bad length")
        length = int.from_bytes(data[body : body + n], "big")
        if length < 0x80 or data[body] == 0:
            raise DERError(f"{what}: non-minimal length is not DER")
        body += n
    end = body + length
    if end > limit:
        raise DERError(f"{what}: truncated")
    return _TLV(tag, pos, body, end, data)


def _expect(data: bytes, pos: int, limit: int, tag: int, what: str) -> _TLV:
    t = _tlv(data, pos, limit, what)
    if t.tag != tag:
        raise DERError(f"{what}: expected tag 0x{tag:02x}, got 0x{t.tag:02x}")
    return t


def _children(parent: _TLV, what: str) -> list[_TLV]:
    out: list[_TLV] = []
    pos = parent.body
    while pos < parent.end:
        t = _tlv(parent.data, pos, parent.end, what)
        out.append(t)
        pos = t.end
    return out


def _oid(t: _TLV, what: str) -> str:
    if t.tag != _OID:
        raise DERError(f"{what}: expected an OBJECT IDENTIFIER")
    raw = t.content
    if not raw or raw[-1] & 0x80:
        raise DERError(f"{what}: malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    fresh = True
    for b in raw:
        if fresh and b == 0x80:
            raise DERError(f"{what}: non-minimal OBJECT IDENTIFIER arc")
        value = (value << 7) | (b & 0x7F)
        fresh = not b & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _integer(t: _TLV, what: str) -> int:
    if t.tag != _INTEGER or not t.content:
        raise DERError(f"{what}: expected an INTEGER")
    c = t.content
    if len(c) > 1 and ((c[0] == 0 and not c[1] & 0x80) or (c[0] == 0xFF and c[1] & 0x80)):
        raise DERError(f"{what}: non-minimal INTEGER")
    return int.from_bytes(c, "big", signed=True)


def _string(t: _TLV, what: str) -> str:
    enc = _STRING_TAGS.get(t.tag)
    if enc is None:
        raise DERError(f"{what}: unsupported string type 0x{t.tag:02x}")
    try:
        return t.content.decode(enc)
    except UnicodeDecodeError:
        raise DERError(f"{what}: badly encoded string") from None


def _time(t: _TLV, what: str) -> _dt.datetime:
    """UTCTime (``YYMMDDHHMMSSZ``, 1950-2049) or GeneralizedTime (``YYYYMMDDHHMMSSZ``), as RFC 5280 fixes."""
    try:
        text = t.content.decode("ascii")
    except UnicodeDecodeError:
        raise DERError(f"{what}: malformed time") from None
    if t.tag == _UTC_TIME and re.fullmatch(r"\d{12}Z", text):
        yy = int(text[:2])
        text = f"{1900 + yy if yy >= 50 else 2000 + yy}{text[2:]}"
    elif not (t.tag == _GENERALIZED_TIME and re.fullmatch(r"\d{14}Z", text)):
        raise DERError(f"{what}: malformed time")
    try:
        return _dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=_dt.UTC)
    except ValueError:
        raise DERError(f"{what}: invalid date") from None


def _name(t: _TLV, what: str) -> tuple[tuple[str, str], ...]:
    """Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value DirectoryString }, flattened in order."""
    if t.tag != _SEQUENCE:
        raise DERError(f"{what}: expected a Name")
    out: list[tuple[str, str]] = []
    for rdn in _children(t, what):
        if rdn.tag != _SET:
            raise DERError(f"{what}: expected a RelativeDistinguishedName")
        for atv in _children(rdn, what):
            if atv.tag != _SEQUENCE:
                raise DERError(f"{what}: expected an AttributeTypeAndValue")
            parts = _children(atv, what)
            if len(parts) != 2:
                raise DERError(f"{what}: malformed AttributeTypeAndValue")
            out.append((_oid(parts[0], what), _string(parts[1], what)))
    return tuple(out)


# -------------------------------------------------------------------------------------------- certificate


@dataclass(frozen=True)
class Extension:
    oid: str
    critical: bool
    value: bytes  # the DER inside the extnValue OCTET STRING


@dataclass(frozen=True)
class Certificate:
    """What the agent reads from an X.509 certificate; ``der`` is the whole certificate."""

    der: bytes
    serial_number: int
    issuer: tuple[tuple[str, str], ...]
    issuer_der: bytes
    subject: tuple[tuple[str, str], ...]
    subject_der: bytes
    not_before: _dt.datetime
    not_after: _dt.datetime
    spki_der: bytes
    extensions: tuple[Extension, ...]

    def subject_values(self, oid: str) -> list[str]:
        return [v for o, v in self.subject if o == oid]

    def extension(self, oid: str) -> Extension | None:
        return next((e for e in self.extensions if e.oid == oid), None)

    @property
    def is_ca(self) -> bool:
        """BasicConstraints cA (absent extension or field = not a CA)."""
        ext = self.extension(OID_BASIC_CONSTRAINTS)
        if ext is None:
            return False
        seq = _expect(ext.value, 0, len(ext.value), _SEQUENCE, "basicConstraints")
        if seq.end != len(ext.value):
            raise DERError("basicConstraints: trailing bytes")
        items = _children(seq, "basicConstraints")
        if items and items[0].tag == _BOOLEAN:
            if len(items[0].content) != 1 or items[0].content[0] not in (0x00, 0xFF):
                raise DERError("basicConstraints: malformed BOOLEAN")
            return items[0].content[0] == 0xFF
        return False


def _extensions(t: _TLV) -> tuple[Extension, ...]:
    """``[3] EXPLICIT SEQUENCE OF Extension``."""
    inner = _tlv(t.data, t.body, t.end, "extensions")
    if inner.tag != _SEQUENCE or inner.end != t.end:
        raise DERError("extensions: expected one SEQUENCE")
    out: list[Extension] = []
    for ext in _children(inner, "extension"):
        parts = _children(ext, "extension") if ext.tag == _SEQUENCE else []
        if len(parts) not in (2, 3):
            raise DERError("extension: malformed")
        critical = False
        if len(parts) == 3:
            b = parts[1]
            if b.tag != _BOOLEAN or len(b.content) != 1 or b.content[0] not in (0x00, 0xFF):
                raise DERError("extension: malformed critical flag")
            critical = b.content[0] == 0xFF
        if parts[-1].tag != _OCTET_STRING:
            raise DERError("extension: expected an OCTET STRING value")
        out.append(Extension(_oid(parts[0], "extension"), critical, parts[-1].content))
    return tuple(out)


def parse_certificate(data: bytes) -> Certificate:
    """Parse one DER certificate (nothing may follow it); :class:`DERError` if it is malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DERError("certificate: expected bytes")
    data = bytes(data)
    cert = _expect(data, 0, len(data), _SEQUENCE, "certificate")
    if cert.end != len(data):
        raise DERError("certificate: trailing bytes")
    top = _children(cert, "certificate")
    if len(top) != 3 or top[0].tag != _SEQUENCE or top[1].tag != _SEQUENCE or top[2].tag != _BIT_STRING:
        raise DERError("certificate: expected tbsCertificate, signatureAlgorithm, signatureValue")
    fields = _children(top[0], "tbsCertificate")
    i = 1 if fields and fields[0].tag == 0xA0 else 0  # [0] EXPLICIT version
    if len(fields) < i + 6:
        raise DERError("tbsCertificate: missing fields")
    serial, sig_alg, issuer, validity, subject, spki = fields[i : i + 6]
    if sig_alg.tag != _SEQUENCE or spki.tag != _SEQUENCE or validity.tag != _SEQUENCE:
        raise DERError("tbsCertificate: malformed")
    times = _children(validity, "validity")
    if len(times) != 2:
        raise DERError("validity: expected notBefore and notAfter")
    exts: tuple[Extension, ...] = ()
    for extra in fields[i + 6 :]:
        if extra.tag == 0xA3:
            exts = _extensions(extra)
        elif extra.tag not in (0x81, 0xA1, 0x82, 0xA2):  # issuer/subject unique ids: ignored
            raise DERError(f"tbsCertificate: unexpected field 0x{extra.tag:02x}")
    return Certificate(
        der=data,
        serial_number=_integer(serial, "serialNumber"),
        issuer=_name(issuer, "issuer"),
        issuer_der=issuer.raw,
        subject=_name(subject, "subject"),
        subject_der=subject.raw,
        not_before=_time(times[0], "notBefore"),
        not_after=_time(times[1], "notAfter"),
        spki_der=spki.raw,
        extensions=exts,
    )


# ------------------------------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class PrivateKeyInfo:
    """A PKCS#8 private key: its DER and the SubjectPublicKeyInfo DER of its public half."""

    der: bytes
    spki_der: bytes


def _header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes((tag, length))
    n = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | n)) + length.to_bytes(n, "big")


def parse_private_key(data: bytes) -> PrivateKeyInfo:
    """An unencrypted PKCS#8 EC key (as the signing tool writes them), with its embedded public key.

    The SubjectPublicKeyInfo is rebuilt from the key's AlgorithmIdentifier and the ``publicKey`` of its
    ECPrivateKey (RFC 5915), which OpenSSL always writes: byte for byte what a certificate for it holds.
    """
    data = bytes(data)
    top = _expect(data, 0, len(data), _SEQUENCE, "private key")
    if top.end != len(data):
        raise DERError("private key: trailing bytes")
    parts = _children(top, "private key")
    if len(parts) < 3 or parts[1].tag != _SEQUENCE or parts[2].tag != _OCTET_STRING:
        raise DERError("private key: not PKCS#8")
    if _integer(parts[0], "private key version") not in (0, 1):
        raise DERError("private key: unknown PKCS#8 version")
    alg = _children(parts[1], "private key algorithm")
    if not alg or _oid(alg[0], "private key algorithm") != OID_EC_PUBLIC_KEY:
        raise DERError("private key: only EC keys are supported")
    inner = parts[2].content
    ec = _expect(inner, 0, len(inner), _SEQUENCE, "EC private key")
    if ec.end != len(inner):
        raise DERError("EC private key: trailing bytes")
    pub = next((f for f in _children(ec, "EC private key") if f.tag == 0xA1), None)
    if pub is None:
        raise DERError("EC private key: no embedded public key")
    bits = _expect(inner, pub.body, pub.end, _BIT_STRING, "EC public key")
    if bits.end != pub.end or not bits.content or bits.content[0] != 0:
        raise DERError("EC public key: malformed")
    body = parts[1].raw + bits.raw
    return PrivateKeyInfo(der=data, spki_der=_header(_SEQUENCE, len(body)) + body)


# -------------------------------------------------------------------------------------------------- PEM


def pem_blocks(data: bytes | str, label: str) -> list[bytes]:
    """The DER of every ``-----BEGIN <label>-----`` block, in order; base64 is checked strictly."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    out: list[bytes] = []
    for m in _PEM_RE.finditer(raw):
        if m.group(1).decode() != label:
            continue
        body = b"".join(m.group(2).split())
        try:
            out.append(base64.b64decode(body, validate=True))
        except (binascii.Error, ValueError):
            raise DERError(f"{label}: bad base64 in PEM") from None
    return out


def pem_to_der(data: bytes | str, label: str = "CERTIFICATE") -> bytes:
    """The first ``label`` block of a PEM text as DER; :class:`DERError` if there is none."""
    blocks = pem_blocks(data, label)
    if not blocks:
        raise DERError(f"no PEM {label} found")
    return blocks[0]
