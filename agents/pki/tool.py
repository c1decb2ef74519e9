"""``python -m agents.pki.tool``: one key/CSR/signing operation per process, JSON in, JSON out.

The agent runs this for ``swarm init``, joins, renewals and role changes (see :mod:`agents.pki.client`)
so that ``cryptography`` is only ever loaded by a process that exits a moment later. The request is one
JSON object on stdin with an ``op``; the answer is one JSON line on stdout. Exit 0 with the result, or
exit 1 with ``{"error": ..., "kind": "invalid" | "internal"}``: ``invalid`` means the request (a CSR, an
id, a key) was refused, ``internal`` that something else failed. Never a traceback.

Operations (all PEM as text):

* ``init`` {cluster_id, node_id} -> {ca_cert, ca_key, cert, key}: a new root CA and the first manager's
  credentials (``swarm init``);
* ``issue`` {ca_cert, ca_key, csr, node_id, role, cluster_id, expiry_s} -> {cert}: a node certificate;
* ``new_key`` {} -> {key, csr}: a fresh node key and a CSR for it (``swarm join``);
* ``csr`` {key} -> {csr}: a CSR for an existing key (renewal, promotion, demotion).
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from collections.abc import Callable
from typing import Any

MAX_REQUEST = 1 << 20

_Request = dict[str, Any]


def _text(req: _Request, name: str) -> str:
    value = req.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name!r} must be a non-empty string")
    return value


def _op_init(req: _Request) -> _Request:
    from agents.manager.tokens import Role
    from agents.pki import signing

    cluster_id = _text(req, "cluster_id")
    ca_cert, ca_key = signing.create_root(cluster_id)
    cert, key = signing.issue_credentials(ca_cert, ca_key, _text(req, "node_id"), Role.MANAGER, cluster_id)
    return {"ca_cert": ca_cert.decode(), "ca_key": ca_key.decode(), "cert": cert.decode(), "key": key.decode()}


def _op_issue(req: _Request) -> _Request:
    from agents.pki import signing

    expiry_s = req.get("expiry_s")
    if isinstance(expiry_s, bool) or not isinstance(expiry_s, int | float) or not 0 < expiry_s < 1e10:
        raise ValueError("'expiry_s' must be a positive number of seconds")
    cert = signing.issue(
        _text(req, "ca_cert"), _text(req, "ca_key"), _text(req, "csr"), _text(req, "node_id"),
        _text(req, "role"), _text(req, "cluster_id"), _dt.timedelta(seconds=expiry_s),
    )
    return {"cert": cert.decode()}


def _op_new_key(req: _Request) -> _Request:
    from agents.pki import signing

    key = signing.new_node_key()
    return {"key": signing.key_to_pem(key).decode(), "csr": signing.make_csr(key).decode()}


def _op_csr(req: _Request) -> _Request:
    from agents.pki import signing

    return {"csr": signing.make_csr(_text(req, "key")).decode()}


OPS: dict[str, Callable[[_Request], _Request]] = {
    "init": _op_init,
    "issue": _op_issue,
    "new_key": _op_new_key,
    "csr": _op_csr,
}


def run(raw: bytes) -> tuple[int, _Request]:
    """Answer one request: ``(exit status, answer)``."""
    try:
        if len(raw) > MAX_REQUEST:
            raise ValueError("request too large")
        req = json.loads(raw)
        if not isinstance(req, dict):
            raise ValueError("the request must be a JSON object")
        op = OPS.get(req.get("op"))  # type: ignore[arg-type]
        if op is None:
            raise ValueError(f"unknown op {req.get('op')!r} (one of: {', '.join(OPS)})")
        return 0, op(req)
    except (ValueError, TypeError) as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        return 1, {"error": " ".join(str(e).split()) or type(e).__name__, "kind": "invalid"}
    except Exception as e:
        return 1, {"error": f"{type(e).__name__}: {' '.join(str(e).split())}", "kind": "internal"}


def main() -> int:
    status, answer = run(sys.stdin.buffer.read(MAX_REQUEST + 1))
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
