"""Forming the swarm after the nodes are up (`swarm: form`): what a teacher would type, done for them.

`docker swarm init` on the first manager with its lab IP as the advertise address, then `docker swarm
join` with the manager token on the other managers (one at a time, so each is caught up before the next
changes the quorum) and with the worker token on the workers; node labels from the spec are applied last.
It goes through each node's Docker API with the docker SDK, so it works the same for every provider.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from labctl.errors import LabError
from labctl.providers.base import Progress, Provider, no_progress
from labctl.spec import NodeSpec

API_VERSION = "1.45"
TIMEOUT = 60


def _client(provider: Provider, node: str) -> Any:
    import docker  # imported here: only `up` with swarm: form needs it

    return docker.DockerClient(base_url=provider.docker_host(node), version=API_VERSION, timeout=TIMEOUT)


def _api_error(node: str, what: str, e: Exception) -> LabError:
    explanation = getattr(e, "explanation", None) or str(e)
    return LabError(f"{what} on {node} failed: {explanation}")


def form(provider: Provider, progress: Progress = no_progress,
         client_for: Callable[[Provider, str], Any] = _client) -> None:
    spec = provider.spec
    if spec.swarm != "form":
        return
    managers = [n for n in spec.nodes if n.role == "manager"]
    workers = [n for n in spec.nodes if n.role == "worker"]
    first = managers[0]
    leader = client_for(provider, first.name)
    try:
        leader.swarm.init(advertise_addr=str(first.ip), listen_addr=f"{first.ip}:2377")
    except Exception as e:
        raise _api_error(first.name, "docker swarm init", e) from None
    progress(f"swarm initialised on {first.name}")
    try:
        leader.swarm.reload()
        tokens = leader.swarm.attrs["JoinTokens"]
    except Exception as e:
        raise _api_error(first.name, "docker swarm join-token", e) from None
    remote = [f"{first.ip}:2377"]

    def join(node: NodeSpec, token: str) -> None:
        try:
            client_for(provider, node.name).swarm.join(
                remote_addrs=remote, join_token=token, advertise_addr=str(node.ip), listen_addr=f"{node.ip}:2377"
            )
        except Exception as e:
            raise _api_error(node.name, "docker swarm join", e) from None

    for node in managers[1:]:
        join(node, tokens["Manager"])
        progress(f"{node.name} joined as a manager")
    if workers:
        with ThreadPoolExecutor(max_workers=min(8, len(workers))) as pool:
            for _ in pool.map(lambda n: join(n, tokens["Worker"]), workers):
                pass
        progress(f"{len(workers)} worker(s) joined")
    labelled = [n for n in spec.nodes if n.labels]
    for node in labelled:
        try:
            target = leader.nodes.get(node.name)
            node_spec = dict(target.attrs["Spec"])
            node_spec["Labels"] = {**(node_spec.get("Labels") or {}), **node.labels}
            target.update(node_spec)
        except Exception as e:
            raise _api_error(first.name, f"docker node update --label-add on {node.name}", e) from None
    if labelled:
        progress(f"labels set on {', '.join(n.name for n in labelled)}")
