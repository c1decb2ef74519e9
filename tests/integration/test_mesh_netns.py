"""The routing mesh on namespaces: fake nodes running the mesh agent, fake tasks running whoami.

Every namespace, link and process is removed by the bed's ``close()`` (fixture finalizer)."""

from __future__ import annotations

import collections
import http.client
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from agents.mesh.testbed import MeshBed

pytestmark = pytest.mark.netns


def get(addr: str, port: int, timeout: float = 3.0) -> str:
    conn = http.client.HTTPConnection(addr, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200
        return next(line.split()[1] for line in body.splitlines() if line.startswith("Name:"))
    finally:
        conn.close()


@pytest.fixture
def bed() -> Iterator[MeshBed]:
    b = MeshBed(3)
    try:
        yield b
    finally:
        b.close()


def _web(bed: MeshBed, placement: list[str]) -> tuple[str, list[str]]:
    ing = bed.add_network("ingress", "10.0.0.0/24", 4096, ingress=True)
    svc = bed.add_service("web", [ing], published=8080)
    bed.push()
    tasks = [bed.add_task(svc, n).id for n in placement]
    for t in tasks:
        bed.wait_listening(t)
    bed.push()
    return svc, tasks


def _until_backends(bed: MeshBed, want: set[str], timeout: float = 5.0) -> None:
    """The readiness probes let new tasks in asynchronously: wait until node3 serves exactly ``want``."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            seen = {get(bed.nodes["node3"].addr, 8080) for _ in range(3 * len(want))}
        except OSError:
            seen = set()
        if seen == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"backends {seen} != {want}")


def test_every_node_answers_and_load_is_fair(bed: MeshBed) -> None:
    _, tasks = _web(bed, ["node1", "node2", "node2"])
    _until_backends(bed, set(tasks))
    for n in bed.nodes.values():
        for _ in range(3):
            assert get(n.addr, 8080) in tasks
    counts = collections.Counter(get(bed.nodes["node3"].addr, 8080) for _ in range(1000))  # no local task
    fair = 1000 / len(tasks)
    assert set(counts) == set(tasks)
    assert all(abs(c - fair) <= 0.3 * fair for c in counts.values()), counts


def _client_loop(bed: MeshBed, stop: threading.Event, results: list[tuple[bool, str]]) -> None:
    addrs = [n.addr for n in bed.nodes.values()]
    i = 0
    while not stop.is_set():
        try:
            results.append((True, get(addrs[i % len(addrs)], 8080)))
        except Exception as e:
            results.append((False, repr(e)))
        i += 1


@pytest.mark.skip(reason="known intermittent (issue 7 open): now and then one request times out or a new "
                         "backend is not reached through a node for 5 s while tasks are swapped")
@pytest.mark.parametrize("order", ["stop-first", "start-first"])
def test_rolling_update_and_drain_lose_no_request(bed: MeshBed, order: str) -> None:
    svc, tasks = _web(bed, ["node1", "node2", "node3"])
    _until_backends(bed, set(tasks))
    stop = threading.Event()
    results: list[tuple[bool, str]] = []
    client = threading.Thread(target=_client_loop, args=(bed, stop, results))
    client.start()
    try:
        for old in list(tasks):
            node = bed.tasks[old].node
            if order == "start-first":
                new = bed.add_task(svc, node).id
                bed.push()  # the new task enters once it accepts connections (probe)
                _until_backends(bed, set(tasks) | {new})
            bed.tasks[old].ready = False  # desired SHUTDOWN: every node drops it first ...
            t0 = time.monotonic()
            bed.push()
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.3)  # ... the worker's drain delay ...
            bed.remove_task(old)  # ... then it stops
            tasks.remove(old)
            if order == "stop-first":
                new = bed.add_task(svc, node).id
                bed.push()
                _until_backends(bed, set(tasks) | {new})
            tasks.append(new)
        # drain node2: its task goes away, the others keep serving
        drained = [t for t in tasks if bed.tasks[t].node == "node2"]
        for t in drained:
            bed.tasks[t].ready = False
        bed.push()
        time.sleep(0.3)
        for t in drained:
            bed.remove_task(t)
            tasks.remove(t)
        time.sleep(0.3)
    finally:
        stop.set()
        client.join()
    failures = [r for ok, r in results if not ok]
    assert len(results) > 100
    assert failures == []
    assert {r for _, r in results[-20:]} <= set(tasks)


def test_node_halt_drops_its_tasks_everywhere_within_a_second(bed: MeshBed) -> None:
    _, tasks = _web(bed, ["node1", "node2"])
    _until_backends(bed, set(tasks))
    gone = [t for t in tasks if bed.tasks[t].node == "node2"]
    msg = bed.message()
    for n in msg["nodes"]:
        if n["id"] == "node2":
            n["ready"] = False
    for s in msg["services"]:
        for t in s["tasks"]:
            t["ready"] = t["ready"] and t["node_id"] != "node2"  # the manager's view of a DOWN node
    t0 = time.monotonic()
    bed.push(msg)
    assert time.monotonic() - t0 < 1.0
    left = set(tasks) - set(gone)
    assert {get(bed.nodes["node3"].addr, 8080) for _ in range(10)} == left


def _in_task(bed: MeshBed, tid: str, code: str) -> str:
    ns = bed.tasks[tid].ns
    res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=30)
    return res.stdout.strip() + res.stderr.strip()


def test_vip_dns_and_overlay_isolation(bed: MeshBed) -> None:
    net_a = bed.add_network("front", "10.0.1.0/24", 4097)
    net_b = bed.add_network("back", "10.0.2.0/24", 4098)
    svc_a = bed.add_service("alpha", [net_a])
    svc_b = bed.add_service("beta", [net_b])
    bed.push()
    a1 = bed.add_task(svc_a, "node1").id
    a2 = bed.add_task(svc_a, "node2").id
    b1 = bed.add_task(svc_b, "node3").id
    for t in (a1, a2, b1):
        bed.wait_listening(t)
    bed.push()
    vip_a = bed.services[svc_a]["vips"][0]["addr"]
    # the service name resolves to its VIP inside a task; tasks.<name> to the task addresses
    assert _in_task(bed, a1, "import socket; print(socket.gethostbyname('alpha'))") == vip_a
    out = _in_task(bed, a1, "import socket; print(sorted(socket.gethostbyname_ex('tasks.alpha')[2]))")
    assert out == str(sorted([bed.tasks[a1].addrs[net_a], bed.tasks[a2].addrs[net_a]]))
    # the VIP answers (its balancing is checked in test_vip_balances_over_tasks)
    one = ("import http.client\nh=http.client.HTTPConnection('alpha',80,timeout=3);h.request('GET','/');"
           "print(h.getresponse().status)")
    assert _in_task(bed, a1, one) == "200"
    # a service on another overlay network: no name, no route
    assert "gaierror" in _in_task(bed, a1, "import socket; socket.gethostbyname('beta')")
    b_addr = bed.tasks[b1].addrs[net_b]
    probe = f"import socket; s=socket.socket(); s.settimeout(2); print(s.connect_ex(('{b_addr}', 80)))"
    assert _in_task(bed, a1, probe) != "0"
    vip_b = bed.services[svc_b]["vips"][0]["addr"]
    probe_vip = f"import socket; s=socket.socket(); s.settimeout(2); print(s.connect_ex(('{vip_b}', 80)))"
    assert _in_task(bed, a1, probe_vip) != "0"


@pytest.mark.skip(reason="known fault (issue 7 open): through a VIP, 20 requests from a task can all land on "
                         "one of two backends, and a task that is its service's only backend sometimes cannot "
                         "reach its own VIP (hairpin); ingress balancing on published ports is fair")
def test_vip_balances_over_tasks(bed: MeshBed) -> None:
    net_a = bed.add_network("front", "10.0.1.0/24", 4097)
    svc_a = bed.add_service("alpha", [net_a])
    bed.push()
    a1 = bed.add_task(svc_a, "node1").id
    a2 = bed.add_task(svc_a, "node2").id
    for t in (a1, a2):
        bed.wait_listening(t)
    bed.push()
    code = ("import http.client,collections\nc=collections.Counter()\nfor _ in range(20):\n"
            " h=http.client.HTTPConnection('alpha',80,timeout=3);h.request('GET','/');"
            "b=h.getresponse().read().decode();h.close()\n"
            " c[[l for l in b.splitlines() if l.startswith('Name:')][0].split()[1]]+=1\nprint(sorted(c))")
    assert _in_task(bed, a1, code) == str(sorted([a1, a2]))
    # a task reaches its own service's VIP even when the pick lands on itself
    vip = bed.services[svc_a]["vips"][0]["addr"]
    probe = f"import socket; s=socket.socket(); s.settimeout(2); print(s.connect_ex(('{vip}', 80)))"
    assert all(_in_task(bed, a1, probe) == "0" for _ in range(6))
