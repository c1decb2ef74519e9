"""Throwaway certificates for tests, benchmarks and the KV demo.

The manager's real CA comes later; this module only makes a self-signed CA and leaf certificates that are
valid both as TLS server and TLS client (mutual TLS between Raft members) for ``127.0.0.1``/``localhost``.
ECDSA P-256 keeps handshakes cheap, which matters when a test starts and kills many processes.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = _dt.timedelta(days=30)


@dataclass(frozen=True)
class CA:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Issued:
    """Paths a TLS context needs: own certificate and key, and the CA to verify peers with."""

    cert: Path
    key: Path
    ca: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def make_ca(directory: Path | str, name: str = "labctl-dev-ca") -> CA:
    """Create ``ca.pem``/``ca.key`` in ``directory`` (created if missing)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _dt.datetime.now(_dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    ca = CA(cert=d / "ca.pem", key=d / "ca.key")
    ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca.key, key)
    return ca


def issue(
    directory: Path | str,
    ca: CA,
    name: str,
    *,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> Issued:
    """Issue ``<name>.pem``/``<name>.key`` signed by ``ca``; usable as server and as client certificate."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("devcerts only signs with the EC keys make_ca() writes")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    if name not in hosts:
        sans.append(x509.DNSName(name))
    now = _dt.datetime.now(_dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    out = Issued(cert=d / f"{name}.pem", key=d / f"{name}.key", ca=ca.cert)
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(out.key, key)
    return out


def make_cluster_certs(directory: Path | str, ids: list[int] | tuple[int, ...]) -> dict[int, Issued]:
    """One CA plus ``node-<id>`` certificates: the layout ``python -m agents.raft.kv --tls-dir`` expects."""
    ca = make_ca(directory)
    return {i: issue(directory, ca, f"node-{i}") for i in ids}


def main(argv: list[str] | None = None) -> None:
    """``python -m agents.raft.devcerts DIR 1 2 3``: a CA and node certificates for the KV demo."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m agents.raft.devcerts", description=main.__doc__)
    ap.add_argument("directory", type=Path)
    ap.add_argument("ids", type=int, nargs="+")
    args = ap.parse_args(argv)
    for nid, issued in make_cluster_certs(args.directory, args.ids).items():
        print(f"node {nid}: {issued.cert} {issued.key} (CA {issued.ca})")


if __name__ == "__main__":
    main()
