"""Run :mod:`agents.pki.tool` for the agent: one short-lived process per key or signing operation.

The agent itself never loads ``cryptography`` (see :mod:`agents.pki.der`); each call here costs one
Python start plus the ``cryptography`` import, ~0.1-0.2 s of CPU, which is fine for ``swarm init``, a
join, a renewal or a role change. There is deliberately no long-lived signer process. Failures map to
what callers handle: a refused request (bad CSR, bad id) raises ``ValueError``, anything else
:class:`PkiToolError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import agents
from agents.manager.ca import NodeCredentials, RootCA
from agents.manager.tokens import Role

__all__ = ["TOOL_TIMEOUT_S", "PkiToolError", "csr_for", "init_cluster", "issue", "new_key_and_csr", "run_tool"]

TOOL_TIMEOUT_S = 60.0
"""Generous: the start costs ~0.2 s of CPU, but nodes share two cores with busy tests."""

_CODE_ROOT = str(Path(agents.__file__).resolve().parent.parent)
"""The directory holding the ``agents`` package this process runs (a checkout or a pushed copy)."""


class PkiToolError(RuntimeError):
    """The signing tool could not run or failed for a reason other than a refused request."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_CODE_ROOT, env.get("PYTHONPATH")) if p)
    return env


async def run_tool(request: dict[str, Any], *, timeout: float = TOOL_TIMEOUT_S) -> dict[str, Any]:
    """Send ``request`` to a fresh ``python -m agents.pki.tool``; its answer, or the mapped error.

    The child is killed (and reaped) on timeout or cancellation, so none outlives the call.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agents.pki.tool",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=_CODE_ROOT, env=_env(),
        )
    except OSError as e:
        raise PkiToolError(f"cannot start the signing tool: {e}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(request).encode()), timeout)
    except TimeoutError:
        raise PkiToolError(f"the signing tool did not answer within {timeout:g}s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
    try:
        answer = json.loads(out)
        if not isinstance(answer, dict):
            raise ValueError
    except ValueError:
        last = (err.decode(errors="replace").strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise PkiToolError(f"the signing tool failed: {last}") from None
    if proc.returncode == 0 and "error" not in answer:
        return answer
    message = str(answer.get("error") or f"exit status {proc.returncode}")
    if answer.get("kind") == "invalid":
        raise ValueError(message)
    raise PkiToolError(f"the signing tool failed: {message}")


def _pem(answer: dict[str, Any], name: str) -> bytes:
    value = answer.get(name)
    if not isinstance(value, str) or "-----BEGIN" not in value:
        raise PkiToolError(f"the signing tool answered without {name!r}")
    return value.encode()


async def init_cluster(cluster_id: str, node_id: str) -> tuple[RootCA, NodeCredentials]:
    """``swarm init``: a new root CA (with its key) and the first manager's credentials, in one process."""
    a = await run_tool({"op": "init", "cluster_id": cluster_id, "node_id": node_id})
    root = RootCA.from_pem(_pem(a, "ca_cert"), _pem(a, "ca_key"), cluster_id)
    return root, NodeCredentials(_pem(a, "cert"), _pem(a, "key"))


async def issue(
    root: RootCA, csr_pem: bytes | str, node_id: str, role: Role | str, cluster_id: str, expiry: _dt.timedelta
) -> bytes:
    """A node certificate (PEM) for the key in ``csr_pem``; ``ValueError`` if the request is refused."""
    if root.key_pem is None:
        raise ValueError("this node holds no root CA key: only managers sign certificates")
    csr = csr_pem.decode(errors="replace") if isinstance(csr_pem, bytes) else csr_pem
    a = await run_tool({
        "op": "issue", "ca_cert": root.cert_pem.decode(), "ca_key": root.key_pem.decode(), "csr": csr,
        "node_id": node_id, "role": Role.parse(role).value, "cluster_id": cluster_id,
        "expiry_s": expiry.total_seconds(),
    })
    return _pem(a, "cert")


async def new_key_and_csr() -> tuple[bytes, bytes]:
    """A fresh node key (PKCS#8 PEM) and a CSR for it: what a joining node sends."""
    a = await run_tool({"op": "new_key"})
    return _pem(a, "key"), _pem(a, "csr")


async def csr_for(key_pem: bytes) -> bytes:
    """A CSR for this node's existing key (renewal and role changes keep the key)."""
    a = await run_tool({"op": "csr", "key": key_pem.decode()})
    return _pem(a, "csr")
