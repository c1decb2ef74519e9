"""API latency figure for the Docker API issue, on the default netns lab (3 managers, 2 workers).

With 200 tasks in the swarm (a 200-replica service), measure p50 and p99 of
GET /nodes, GET /services?status=true and GET /tasks?filters={"service":["bench"]} — on the leader and
through a follower (which forwards to the leader). Targets: p50 <= 10 ms on the leader, <= 20 ms through
a follower. Requests go over each node's unix socket from the host, as the docker CLI's would.

Prints one JSON object; the lab is torn down at the end, also on failure.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REQUESTS = int(os.environ.get("API_BENCH_REQUESTS", "200"))
REPLICAS = 200


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.path)
        self.sock = s


def measure(sock: str, url: str, n: int) -> dict[str, float]:
    conn = UnixConnection(sock)  # keep-alive, as the docker CLI and SDK do
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", url)
        resp = conn.getresponse()
        body = resp.read()
        samples.append((time.perf_counter() - t0) * 1000)
        assert resp.status == 200, (url, resp.status, body[:200])
    conn.close()
    qs = statistics.quantiles(samples, n=100)
    return {"p50_ms": round(statistics.median(samples), 2), "p99_ms": round(qs[98], 2)}


def main() -> int:
    import docker

    from labctl import lifecycle, registry
    from labctl.providers.netns import NetnsProvider
    from labctl.spec import parse_spec

    home = tempfile.mkdtemp(prefix="labctl-apibench-")
    os.environ["LABCTL_HOME"] = home
    spec = parse_spec({"name": "bench-api", "managers": 3, "workers": 2})
    result: dict[str, object] = {}
    try:
        record, _ = lifecycle.up(spec)
        provider = NetnsProvider(registry.load(record.name))
        client = docker.DockerClient(base_url=provider.docker_host("manager1"), version="1.45", timeout=120)
        leader = next(n.attrs["Description"]["Hostname"] for n in client.nodes.list()
                      if (n.attrs.get("ManagerStatus") or {}).get("Leader"))
        follower = next(n.name for n in record.spec.nodes if n.role == "manager" and n.name != leader)
        client.services.create("busybox", ["sleep", "86400"], name="bench", mode={"Replicated": {"Replicas": REPLICAS}})
        deadline = time.time() + 300
        while True:
            tasks = client.api.tasks(filters={"service": "bench", "desired-state": "running"})
            running = sum(1 for t in tasks if t["Status"]["State"] == "running")
            if running >= REPLICAS:
                break
            assert time.time() < deadline, f"only {running}/{REPLICAS} tasks running after 300 s"
            time.sleep(0.5)
        filters = urllib.parse.quote(json.dumps({"service": ["bench"]}))
        urls = {
            "GET /nodes": "/v1.45/nodes",
            "GET /services?status=true": "/v1.45/services?status=true",
            "GET /tasks?filters=service": f"/v1.45/tasks?filters={filters}",
        }
        for where, node in (("leader", leader), ("follower", follower)):
            sock = provider.socket_path(node)
            result[where] = {name: measure(sock, url, REQUESTS) for name, url in urls.items()}
    finally:
        if spec.name in registry.names():
            lifecycle.down(spec.name)
        shutil.rmtree(home, ignore_errors=True)
    leader_ok = all(v["p50_ms"] <= 10 for v in result["leader"].values())  # type: ignore[union-attr]
    follower_ok = all(v["p50_ms"] <= 20 for v in result["follower"].values())  # type: ignore[union-attr]
    print(json.dumps({
        "bench": "api",
        "lab": "default netns lab (3 managers, 2 workers)",
        "tasks": REPLICAS,
        "requests_per_endpoint": REQUESTS,
        **result,
        "targets": {"leader_p50_ms": 10, "follower_p50_ms": 20},
        "meets": {"leader": leader_ok, "follower": follower_ok},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
