"""Routing-mesh benchmark on namespaces (root): one JSON object on stdout.

* requests/s and p50 latency of new-connection HTTP requests from the host through the mesh (the
  published port of a node with no local task) versus straight to the task IP routed through that same
  node (same path, no NAT), in interleaved rounds;
* nft rule update time on a node holding 100 services when one of them scales (one transaction), and
  the time to program all 100 from nothing. ``mode.Nft`` says how the agent reached nftables:
  ``libnftables`` in-process (one kept context; a scale is a sub-millisecond transaction plus the
  agent's own work) or the ``nft`` binary (a process per transaction that re-reads the ruleset:
  15-25 ms idle at 100 services, and 150-250 ms on this loaded 2-core machine before the switch).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agents.mesh.testbed import MeshBed, sh


def run(addr: str, port: int, n: int) -> tuple[float, list[float]]:
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        s = time.perf_counter()
        c = http.client.HTTPConnection(addr, port, timeout=5)
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        c.close()
        assert r.status == 200
        lat.append(time.perf_counter() - s)
    return n / (time.perf_counter() - t0), lat


def traffic(bed: MeshBed, rounds: int = 5, n: int = 400) -> dict[str, float]:
    ing = bed.add_network("ingress", "10.0.0.0/24", 4096, ingress=True)
    svc = bed.add_service("web", [ing], published=8080)
    bed.push()
    task = bed.add_task(svc, "node1")
    bed.wait_listening(task.id)
    bed.push()
    via = bed.nodes["node3"].addr  # no local task
    sh("ip", "route", "add", "10.0.0.0/24", "via", via)  # direct: routed through node3, no NAT
    time.sleep(0.3)
    mesh_rps, direct_rps, mesh_lat, direct_lat = [], [], [], []
    run(via, 8080, 50)
    run(task.addrs[ing], 80, 50)
    for _ in range(rounds):
        r, lat = run(via, 8080, n)
        mesh_rps.append(r)
        mesh_lat += lat
        r, lat = run(task.addrs[ing], 80, n)
        direct_rps.append(r)
        direct_lat += lat
    m, d = statistics.median(mesh_rps), statistics.median(direct_rps)
    pm, pd = statistics.median(mesh_lat) * 1000, statistics.median(direct_lat) * 1000
    return {
        "mesh_rps": round(m, 1),
        "direct_rps": round(d, 1),
        "mesh_over_direct": round(m / d, 3),
        "mesh_p50_ms": round(pm, 3),
        "direct_p50_ms": round(pd, 3),
        "p50_added_ms": round(pm - pd, 3),
    }


def rule_updates(bed: MeshBed, services: int = 100) -> dict[str, float]:
    """A synthetic table (VIP-only services with fake tasks) on the bed's nodes."""
    nets = [{"id": f"net{i:020d}", "name": f"n{i}", "vni": 5000 + i, "subnet": f"10.{100 + i}.0.0/16", "ingress": False}
            for i in range(4)]
    svcs = []
    for i in range(services):
        net = nets[i % 4]
        base = f"10.{100 + i % 4}.{i // 4 + 1}"
        svcs.append({"id": f"svc{i:022d}", "name": f"s{i}", "vips": [{"network_id": net["id"], "addr": f"{base}.1"}],
                     "ports": [], "networks": [net["id"]],
                     "tasks": [{"id": f"task{i:05d}{k:017d}", "node_id": "node1", "addrs": {net["id"]: f"{base}.{k + 2}"},
                                "ready": True} for k in range(3)]})
    nodes = [{"id": n.name, "addr": n.addr, "ready": True} for n in bed.nodes.values()]
    full = {"type": "mesh", "full": True, "services": svcs, "networks": nets, "nodes": nodes}
    t_full = bed.push(full)
    times = []
    for rep in range(10):
        s = json.loads(json.dumps(svcs[rep * 7]))
        base = s["vips"][0]["addr"].rsplit(".", 1)[0]
        s["tasks"].append({"id": f"scale{rep:020d}", "node_id": "node2", "addrs": {s["networks"][0]: f"{base}.200"},
                           "ready": True})
        t0 = time.perf_counter()
        applied = bed.push({"type": "mesh", "full": False, "services": [s], "removed": [], "networks": nets, "nodes": nodes})
        times.append((applied, time.perf_counter() - t0))
    return {
        "services": services,
        "full_program_ms": round(t_full * 1000, 1),
        "scale_update_ms_p50": round(statistics.median(a for a, _ in times) * 1000, 1),
        "scale_update_ms_max": round(max(a for a, _ in times) * 1000, 1),
        "scale_update_all_nodes_ms_p50": round(statistics.median(w for _, w in times) * 1000, 1),
    }


def main() -> None:
    out: dict[str, object] = {"bench": "mesh"}
    with MeshBed(3) as bed:
        out["mode"] = bed.nodes["node1"].info.get("started", {})
        out["traffic"] = traffic(bed)
    with MeshBed(3) as bed:
        out["rules"] = rule_updates(bed)
    t, r = out["traffic"], out["rules"]
    assert isinstance(t, dict) and isinstance(r, dict)
    out["targets"] = {
        "mesh_over_direct>=0.8": t["mesh_over_direct"] >= 0.8,
        "p50_added<=0.2ms": t["p50_added_ms"] <= 0.2,
        "rule_update<=200ms@100": r["scale_update_ms_max"] <= 200,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
