"""``python -m agents.pki.tool`` and its async client: real subprocesses, JSON in and out, one-line errors
(never a traceback), errors mapped to what callers handle, no child left behind. Plus the point of it
all: the modules the agent loads never import ``cryptography``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from agents.manager.ca import NodeCredentials, Role, RootCA
from agents.pki import client as pkiclient
from agents.pki import der, signing

ROOT = Path(__file__).resolve().parents[3]
CLUSTER = "cluster0000000000000000001"


def _tool(stdin: bytes, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "agents.pki.tool"], input=stdin, capture_output=True,
                          cwd=cwd, env=env, timeout=60)


@pytest.fixture(scope="module")
def root() -> RootCA:
    return signing.new_root(CLUSTER)


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        (b"{not json", "Expecting property name"),
        (b"\xff\xfe", "Expecting value"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"op": "sign-everything"}', "unknown op"),
        (b'{"op": ["x"]}', "unhashable"),
        (b'{"op": "csr", "key": "-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n"}',
         "not a usable PEM private key"),
        (b'{"op": "csr"}', "'key' must be a non-empty string"),
        (b'{"op": "init", "cluster_id": "bad id", "node_id": "n1"}', "invalid cluster id"),
    ],
)
def test_bad_requests_exit_1_with_one_json_line(tmp_path: Path, stdin: bytes, message: str) -> None:
    p = _tool(stdin, tmp_path)
    assert p.returncode == 1
    lines = p.stdout.decode().splitlines()
    assert len(lines) == 1 and b"Traceback" not in p.stdout + p.stderr and p.stderr == b""
    answer = json.loads(lines[0])
    assert answer["kind"] == "invalid" and message in answer["error"], answer


def test_bad_csr_refused(tmp_path: Path, root: RootCA) -> None:
    base: dict[str, Any] = {"op": "issue", "ca_cert": root.cert_pem.decode(), "ca_key": (root.key_pem or b"").decode(),
                            "node_id": "n1", "role": "swarm-worker", "cluster_id": CLUSTER, "expiry_s": 3600}
    garbage = {**base, "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}
    small_rsa = {**base, "csr": "hello"}
    for req, message in ((garbage, "not a PEM certificate request"), (small_rsa, "not a PEM certificate request"),
                         ({**base, "csr": signing.make_csr(signing.new_node_key()).decode(), "expiry_s": 60},
                          "expiry must be at least")):
        p = _tool(json.dumps(req).encode(), tmp_path)
        assert p.returncode == 1 and len(p.stdout.splitlines()) == 1 and b"Traceback" not in p.stdout + p.stderr
        assert message in json.loads(p.stdout)["error"]


def test_client_round_trip(root: RootCA) -> None:
    async def main() -> None:
        ca, creds = await pkiclient.init_cluster(CLUSTER, "manager1")
        assert ca.can_sign and ca.cluster_id == CLUSTER
        signing.check_root(ca.cert_pem, ca.key_pem)
        assert (creds.node_id, creds.role, creds.cluster_id) == ("manager1", Role.MANAGER, CLUSTER)
        x509.load_pem_x509_certificate(creds.cert_pem).verify_directly_issued_by(
            x509.load_pem_x509_certificate(ca.cert_pem))
        key_pem, csr = await pkiclient.new_key_and_csr()
        cert = await pkiclient.issue(ca, csr, "worker1", "worker", CLUSTER, dt.timedelta(days=1))
        joined = NodeCredentials(cert, key_pem)
        assert (joined.node_id, joined.role) == ("worker1", Role.WORKER)
        assert joined.cert.not_after - joined.cert.not_before == dt.timedelta(days=1, hours=1)  # backdated 1h
        renewal_csr = await pkiclient.csr_for(key_pem)  # same key, new certificate
        renewed = NodeCredentials(await pkiclient.issue(ca, renewal_csr, "worker1", Role.MANAGER, CLUSTER,
                                                        dt.timedelta(days=90)), key_pem)
        assert renewed.role is Role.MANAGER and renewed.cert.spki_der == joined.cert.spki_der
        raw = bytearray(der.pem_to_der(csr, "CERTIFICATE REQUEST"))
        raw[-5] ^= 0xFF  # inside the signature: the CSR no longer proves possession of the key
        forged = b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(bytes(raw)) + (
            b"-----END CERTIFICATE REQUEST-----\n")
        with pytest.raises(ValueError, match="invalid signature"):
            await pkiclient.issue(ca, forged, "w", "worker", CLUSTER, dt.timedelta(days=1))
        with pytest.raises(ValueError, match="invalid node id"):
            await pkiclient.issue(ca, csr, "bad/id", "worker", CLUSTER, dt.timedelta(days=1))
        with pytest.raises(ValueError, match="does not match"):  # another CA's key
            await pkiclient.issue(RootCA(ca.cert_pem, root.key_pem), csr, "w", "worker", CLUSTER,
                                  dt.timedelta(days=1))

    asyncio.run(main())


def test_timeout_kills_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[asyncio.subprocess.Process] = []
    real = asyncio.create_subprocess_exec

    async def spy(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await real(*args, **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spy)

    async def main() -> None:
        with pytest.raises(pkiclient.PkiToolError, match="did not answer"):
            await pkiclient.run_tool({"op": "new_key"}, timeout=0.001)

    asyncio.run(main())
    assert len(started) == 1 and started[0].returncode is not None  # killed and reaped


def test_internal_failure_is_a_pki_tool_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")

    async def main() -> None:
        with pytest.raises(pkiclient.PkiToolError, match="failed"):
            await pkiclient.csr_for(b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n")

    asyncio.run(main())


AGENT_MODULES = [
    "agents.daemon", "agents.manager.ca", "agents.manager.keys", "agents.manager.tokens", "agents.api.convert",
    "agents.swarmnode", "agents.manager.dispatcher", "agents.manager.controlplane", "agents.manager.membership",
    "agents.manager.manager", "agents.manager.joinclient", "agents.api.nodelogs", "agents.api.forwarding",
    "agents.pki.client", "agents.pki.der",
]


def test_agent_modules_do_not_import_cryptography(tmp_path: Path) -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {AGENT_MODULES!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('cryptography', '_cffi_backend', 'bcrypt', '_bcrypt'))))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == []
