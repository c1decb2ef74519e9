"""The agent's DER reader against certificates and keys built by ``cryptography``: same subject, issuer,
validity, public key and serial as ``cryptography`` reports, and one clear error for malformed input.
Also the on-disk compatibility of what the agent derives from them (DEK key id and IKM, TLSInfo).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from agents.api.convert import tls_info
from agents.manager import keys
from agents.manager.ca import RootCA, load_certificate
from agents.pki import der, signing

CLUSTER = "cluster0000000000000000001"


@pytest.fixture(scope="module")
def root() -> RootCA:
    return signing.new_root(CLUSTER)


def _crypto(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _pairs(name: x509.Name) -> tuple[tuple[str, str], ...]:
    return tuple((a.oid.dotted_string, str(a.value)) for a in name)


def _assert_same(ours: der.Certificate, theirs: x509.Certificate) -> None:
    spki = theirs.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ours.der == theirs.public_bytes(serialization.Encoding.DER)
    assert ours.subject == _pairs(theirs.subject) and ours.issuer == _pairs(theirs.issuer)
    assert ours.subject_der == theirs.subject.public_bytes()
    assert ours.issuer_der == theirs.issuer.public_bytes()
    assert ours.not_before == theirs.not_valid_before_utc and ours.not_after == theirs.not_valid_after_utc
    assert ours.not_before.tzinfo is dt.UTC
    assert ours.spki_der == spki
    assert ours.serial_number == theirs.serial_number


def test_root_and_node_certificates_read_as_cryptography_does(root: RootCA) -> None:
    _assert_same(root.cert, _crypto(root.cert_pem))
    assert root.cert.is_ca and root.cert.subject == (("2.5.4.3", "swarm-ca"),)
    creds = signing.new_credentials(root, "node1", "worker")
    _assert_same(creds.cert, _crypto(creds.cert_pem))
    assert not creds.cert.is_ca
    assert creds.cert.subject == (("2.5.4.10", CLUSTER), ("2.5.4.11", "swarm-worker"), ("2.5.4.3", "node1"))
    assert creds.cert.issuer_der == root.cert.subject_der
    crit = {e.oid: e.critical for e in creds.cert.extensions}
    assert crit["2.5.29.19"] is True and crit["2.5.29.17"] is False  # basicConstraints, SAN


def test_other_string_types_times_and_multivalued_rdns() -> None:
    """PrintableString (C), IA5String (email), UTF-8, a two-valued RDN, UTCTime and GeneralizedTime."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")]),
        x509.RelativeDistinguishedName([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Übung"),
            x509.NameAttribute(NameOID.COMMON_NAME, "zwei"),
        ]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@b.example")]),
    ])
    cases = [
        (dt.datetime(1951, 1, 2, 3, 4, 5, tzinfo=dt.UTC), dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC)),
        (dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.datetime(2050, 1, 1, tzinfo=dt.UTC)),  # GeneralizedTime
        (dt.datetime(1950, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)),
    ]
    for start, end in cases:
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(random.getrandbits(150)).not_valid_before(start).not_valid_after(end)
            .sign(key, hashes.SHA256())
        )
        ours = der.parse_certificate(cert.public_bytes(serialization.Encoding.DER))
        _assert_same(ours, cert)
        assert ours.extensions == () and not ours.is_ca


def test_rsa_certificate(root: RootCA) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = signing.issue(root.cert_pem, root.key_pem, signing.make_csr(key), "rsa1", "manager", CLUSTER)
    _assert_same(load_certificate(pem), _crypto(pem))


def test_every_truncation_and_trailing_byte_is_a_der_error(root: RootCA) -> None:
    raw = root.cert.der
    for n in range(len(raw)):
        with pytest.raises(der.DERError):
            der.parse_certificate(raw[:n])
    with pytest.raises(der.DERError, match="trailing"):
        der.parse_certificate(raw + b"\x00")


def test_mutations_give_a_der_error_or_a_certificate_never_another_exception(root: RootCA) -> None:
    raw = root.cert.der
    rng = random.Random(5)
    for pos in range(len(raw)):
        for flip in (0x01, 0x80, rng.randrange(1, 256)):
            mutated = bytearray(raw)
            mutated[pos] ^= flip
            try:
                der.parse_certificate(bytes(mutated))
            except der.DERError:
                pass


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "truncated"),
        (b"\x30", "truncated"),
        (b"\x30\x80\x00\x00", "indefinite"),
        (b"\x30\x81\x05" + b"\x00" * 5, "non-minimal"),
        (b"\x30\x82\x00\x05" + b"\x00" * 5, "non-minimal"),
        (b"\x30\x85\x01\x00\x00\x00\x00", "bad length"),
        (b"\x31\x00", "expected tag"),
        (b"\x30\x00", "expected tbsCertificate"),
        (b"\x1f\x01\x00", "multi-byte tags"),
    ],
)
def test_malformed_der(data: bytes, why: str) -> None:
    with pytest.raises(der.DERError, match=why):
        der.parse_certificate(data)


def test_errors_are_value_errors_and_bad_times_refused(root: RootCA) -> None:
    assert issubclass(der.DERError, ValueError)
    raw = root.cert.der
    # The notBefore UTCTime "YYMMDDHHMMSSZ" with a month of 13: a DERError, not strptime's ValueError.
    t = raw.index(b"\x17\x0d")
    bad = raw[: t + 4] + b"13" + raw[t + 6 :]
    with pytest.raises(der.DERError, match="invalid date"):
        der.parse_certificate(bad)
    with pytest.raises(der.DERError):
        der.parse_certificate("not bytes")  # type: ignore[arg-type]


def test_pem_helpers(root: RootCA) -> None:
    assert der.pem_to_der(root.cert_pem) == root.cert.der
    assert der.pem_to_der(root.cert_pem.replace(b"\n", b"\r\n")) == root.cert.der
    chain = root.cert_pem + signing.new_credentials(root, "n2", "manager").cert_pem
    assert der.pem_to_der(chain) == root.cert.der and len(der.pem_blocks(chain, "CERTIFICATE")) == 2
    with pytest.raises(der.DERError, match="no PEM CERTIFICATE"):
        der.pem_to_der(b"garbage")
    with pytest.raises(der.DERError, match="base64"):
        der.pem_to_der(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError):
        load_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


# ------------------------------------------------------------------------------------------------ keys


def _old_key_id_and_ikm(key_pem: bytes) -> tuple[str, bytes]:
    """What keys.py computed with cryptography before the agent stopped loading it."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ikm = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return "node-key:" + hashlib.sha256(spki).hexdigest()[:32], ikm


def test_key_id_and_ikm_unchanged_for_existing_state_dirs(root: RootCA) -> None:
    for _ in range(5):
        creds = signing.new_credentials(root, "n1", "manager")
        key = keys._load_key(creds.key_pem)
        assert (keys._key_id(key), keys._key_ikm(key)) == _old_key_id_and_ikm(creds.key_pem)
        assert key.spki_der == creds.cert.spki_der  # the certificate holds the same public key


def test_private_key_refusals() -> None:
    rsa_pem = signing.key_to_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(der.DERError, match="only EC"):
        keys._load_key(rsa_pem)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    sec1 = ec_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    with pytest.raises(der.DERError, match="no PEM PRIVATE KEY"):  # "EC PRIVATE KEY" is not PKCS#8
        keys._load_key(sec1)
    pkcs8 = der.pem_to_der(signing.key_to_pem(ec_key), "PRIVATE KEY")
    for n in range(len(pkcs8)):
        with pytest.raises(der.DERError):
            der.parse_private_key(pkcs8[:n])


def test_tls_info_is_byte_identical(root: RootCA) -> None:
    c = _crypto(root.cert_pem)
    spki = c.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert tls_info(root.cert_pem) == {
        "TrustRoot": root.cert_pem.decode(),
        "CertIssuerSubject": base64.b64encode(c.subject.public_bytes()).decode(),
        "CertIssuerPublicKey": base64.b64encode(spki).decode(),
    }
