"""The smoke lab on the fake swarm: a correct solution, and a stand-in for the node shell that applies
the lab's `docker service create` command the way an engine would."""

from __future__ import annotations

import shlex
from pathlib import Path

from labctl.exercises.model import Exercise, load_exercise
from labctl.exercises.target import HttpResponse
from tests.unit.exercises.fakedocker import FakeCluster, FakeTarget, swarm_lab

SMOKE = Path(__file__).resolve().parents[3] / "labs" / "smoke.yaml"


def smoke() -> Exercise:
    return load_exercise(SMOKE)


def smoke_lab() -> tuple[FakeCluster, FakeTarget]:
    cluster, target = swarm_lab(managers=1, workers=1, lab="smoke")
    target.http = lambda url: mesh(cluster, url)
    target.shell = lambda node, cmd: shell(cluster, node, cmd)
    return cluster, target


def mesh(cluster: FakeCluster, url: str) -> HttpResponse:
    """The routing mesh: any node answers on a published port while a task of its service runs."""
    port = int(url.split(":")[2].split("/")[0])
    for sid, svc in cluster.services.items():
        published = [p["PublishedPort"] for p in svc["Endpoint"]["Ports"]]
        running = [t for t in cluster.tasks if t["ServiceID"] == sid and t["Status"]["State"] == "running"]
        if port in published and running:
            image = svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
            if image.startswith("nginx"):
                return HttpResponse(200, {"Server": "nginx/1.27.3"}, "<title>Welcome to nginx!</title>")
            return HttpResponse(200, {"Server": "Apache/2.4"}, "It works!")
    raise ConnectionRefusedError(f"{url}: connection refused")


def shell(cluster: FakeCluster, node: str, cmd: str) -> tuple[int, str]:
    argv = shlex.split(cmd)
    if argv[:3] != ["docker", "service", "create"] or node != "manager1":
        return 127, f"unsupported in the fake: {cmd}"
    opts: dict[str, str] = {}
    rest = argv[3:]
    i = 0
    while rest[i].startswith("-"):
        if rest[i] == "--detach":
            i += 1
            continue
        opts[rest[i]] = rest[i + 1]
        i += 2
    image = rest[i]
    replicas = int(opts.get("--replicas", opts.get("-r", "1")))
    published = opts.get("--publish", opts.get("-p"))
    ports = [tuple(int(x) for x in published.split(":"))] if published else []
    name = opts.get("--name", "svc")
    cluster.add_service(name, image=image if ":" in image else image + ":latest", replicas=replicas, ports=ports)  # type: ignore[arg-type]
    cluster.run_replicas(name, ["manager1", "worker1"], replicas)
    return 0, "overall progress: 2 out of 2 tasks\nverify: Service converged\n"


def solved() -> tuple[FakeCluster, FakeTarget]:
    """The smoke lab as a student who did everything right leaves it."""
    cluster, target = smoke_lab()
    shell(cluster, "manager1", "docker service create --name web --replicas 2 -p 8080:80 nginx")
    return cluster, target
