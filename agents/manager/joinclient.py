"""The joining side of `docker swarm join`: fetch the CA, pin it against the token, ask to be admitted.

The first request goes out over unverified TLS (the node trusts nothing yet); the CA it returns is only
accepted if its digest matches the one inside the join token. Every later request verifies the manager
against that pinned CA. Followers answer 421 with the leader's address; the joiner retries there.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp

from agents.manager import ca, tokens
from agents.manager.errors import InvalidArgument, ManagerError, NoLeader
from agents.pki import client as pkiclient

MAX_REDIRECTS = 5


class JoinError(ManagerError):
    status = 500


def _addr(remote: str) -> str:
    return remote if ":" in remote else f"{remote}:2377"


async def _post(session: aiohttp.ClientSession, remote: str, path: str, body: dict[str, Any],
                ssl_ctx: ssl.SSLContext, timeout: float) -> tuple[int, dict[str, Any]]:
    async with session.post(f"https://{_addr(remote)}{path}", json=body, ssl=ssl_ctx,
                            timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        try:
            data = json.loads(await resp.text())
        except ValueError:
            data = {"message": f"unexpected answer from {remote}"}
        return resp.status, data if isinstance(data, dict) else {"message": str(data)}


async def fetch_pinned_ca(remote: str, token: str, timeout: float = 10.0) -> bytes:
    """The cluster's root CA from `remote`, accepted only if it matches the token's digest."""
    try:
        tokens.parse_token(token)  # malformed tokens fail before any network traffic
    except tokens.JoinTokenError as e:
        raise InvalidArgument(str(e)) from None
    try:
        async with aiohttp.ClientSession() as session, session.get(
            f"https://{_addr(remote)}/v1/ca", ssl=ca.bootstrap_client_context(),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise JoinError(f"could not reach the manager at {_addr(remote)}: {e}") from None
    pem = str(data.get("ca", "")).encode()
    try:
        tokens.pin_ca(pem, token)
    except (tokens.JoinTokenError, tokens.CAPinError) as e:
        raise InvalidArgument(str(e)) from None
    return pem


async def request(remote: str, path: str, body: dict[str, Any], ssl_ctx: ssl.SSLContext,
                  timeout: float = 30.0) -> dict[str, Any]:
    """POST to the leader's control plane, following "ask the leader" answers."""
    target = remote
    async with aiohttp.ClientSession() as session:
        for _ in range(MAX_REDIRECTS):
            try:
                status, data = await _post(session, target, path, body, ssl_ctx, timeout)
            except (aiohttp.ClientError, TimeoutError) as e:
                raise JoinError(f"could not reach the manager at {_addr(target)}: {e}") from None
            if status == 421 and data.get("leader"):
                target = str(data["leader"])
                continue
            if status == 200:
                return data
            message = str(data.get("message", f"HTTP {status}"))
            if status == 503:
                raise NoLeader(message)
            prefix = "rpc error: code = InvalidArgument desc = "
            if message.startswith(prefix):
                raise InvalidArgument(message[len(prefix):])
            err = ManagerError(message)
            err.status = status
            raise err
    raise JoinError("too many redirects while looking for the leader")


async def get(remote: str, path: str, ssl_ctx: ssl.SSLContext, timeout: float = 5.0) -> dict[str, Any]:
    """GET from a manager's control plane (no leader needed); raises ManagerError on failure."""
    try:
        async with aiohttp.ClientSession() as session, session.get(
            f"https://{_addr(remote)}{path}", ssl=ssl_ctx, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            data = json.loads(await resp.text())
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise JoinError(f"could not reach the manager at {_addr(remote)}: {e}") from None
    if status != 200 or not isinstance(data, dict):
        raise JoinError(f"{_addr(remote)}{path}: HTTP {status}")
    return data


async def join(remote: str, token: str, *, advertise_ip: str, hostname: str,
               description: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """Admission: the manager's welcome (node id, certificate, CA, managers) and this node's new key.

    The key and its CSR are made (out of process) only once the CA is pinned, so a wrong token or
    address costs no key generation.
    """
    ca_pem = await fetch_pinned_ca(remote, token)
    try:
        key_pem, csr = await pkiclient.new_key_and_csr()
    except (ValueError, pkiclient.PkiToolError) as e:
        raise JoinError(f"could not create the node key: {e}") from None
    body = {
        "token": token, "csr": csr.decode(), "advertise_ip": advertise_ip,
        "hostname": hostname, "description": description,
    }
    welcome = await request(remote, "/v1/join", body, ca.client_context(None, ca_pem))
    if welcome.get("ca", "").encode() != ca_pem:
        raise JoinError("the manager answered with a different CA than the pinned one")
    return welcome, key_pem
