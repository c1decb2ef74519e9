"""Docker's views of task containers: ``GET /containers/json`` entries and ``docker ps`` durations."""

from __future__ import annotations

import shlex
import time
from typing import Any

from agents.worker.executor.base import Container


def human_duration(seconds: float) -> str:
    """Docker's ``units.HumanDuration`` ("Less than a second", "5 seconds", "About a minute"...)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def status_text(c: Container, now: float | None = None) -> str:
    now = time.time() if now is None else now
    if c.state == "running":
        return f"Up {human_duration(now - c.started_at)}"
    if c.state == "exited":
        if not c.started_at:
            return "Created"
        return f"Exited ({c.exit_code if c.exit_code is not None else 0}) {human_duration(now - c.finished_at)} ago"
    return "Created"


def labels(c: Container) -> dict[str, str]:
    """The ``com.docker.swarm.*`` labels dockerd puts on task containers, plus the spec's labels."""
    t = c.task
    out = dict(t.spec.container.labels)
    out.update(
        {
            "com.docker.swarm.node.id": t.node_id,
            "com.docker.swarm.service.id": t.service_id,
            "com.docker.swarm.service.name": t.service_annotations.name,
            "com.docker.swarm.task": "",
            "com.docker.swarm.task.id": t.id,
            "com.docker.swarm.task.name": t.annotations.name,
        }
    )
    return out


def container_name(c: Container) -> str:
    return c.task.annotations.name or f"{c.task.service_annotations.name}.{c.task.slot}.{c.task.id}"


def exposed_ports(image: str) -> list[dict[str, Any]]:
    """The image's EXPOSEd ports, which ``docker ps`` shows as ``80/tcp`` for a task container (its
    published ports belong to the routing mesh, not to the container)."""
    from agents.worker.images import catalog

    try:
        spec = catalog.resolve(image)
    except catalog.ImageError:
        return []
    out: list[dict[str, Any]] = []
    for p in spec.exposed_ports:
        port, _, proto = p.partition("/")
        out.append({"PrivatePort": int(port), "Type": proto or "tcp"})
    return out


def summary(c: Container, now: float | None = None) -> dict[str, Any]:
    """One ``GET /containers/json`` entry."""
    networks = {
        f"net{i}": {"IPAddress": a.partition("/")[0], "IPPrefixLen": int(a.partition("/")[2] or 0)}
        for i, a in enumerate(c.addresses)
    }
    for n, a in zip(c.task.networks, c.addresses, strict=False):
        networks[n.network_id] = networks.pop(f"net{c.addresses.index(a)}")
    return {
        "Id": c.id,
        "Names": ["/" + container_name(c)],
        "Image": c.image,
        "ImageID": "",
        "Command": " ".join(shlex.quote(w) for w in c.argv),
        "Created": int(c.created),
        "Ports": exposed_ports(c.image),
        "Labels": labels(c),
        "State": c.state,
        "Status": status_text(c, now),
        "HostConfig": {"NetworkMode": "default"},
        "NetworkSettings": {"Networks": networks},
        "Mounts": [],
    }
