"""The routing mesh on namespaces: fake nodes running the mesh agent, fake tasks running whoami.

Every namespace, link and process is removed by the bed's ``close()`` (fixture finalizer)."""

from __future__ import annotations

import collections
import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from agents.mesh.rules import bridge_name
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


def test_the_gateway_mac_does_not_follow_the_bridge_ports(bed: MeshBed) -> None:
    """A Linux bridge takes its lowest port MAC unless given one: a task coming or going would change
    the gateway's MAC under the other tasks (their replies then flood into the overlay for seconds)."""
    _, tasks = _web(bed, ["node1"])
    n1 = bed.nodes["node1"]
    br = bridge_name(next(iter(bed.tasks[tasks[0]].addrs)))

    def mac() -> str:
        return json.loads(bed.nsexec(n1.ns, "ip", "-j", "link", "show", "dev", br))[0]["address"]

    before = mac()
    bed.nsexec(n1.ns, "ip", "link", "add", "lowmac0", "address", "00:00:5e:00:53:01", "type", "veth",
               "peer", "name", "lowmac1")
    bed.nsexec(n1.ns, "ip", "link", "set", "lowmac0", "master", br, "up")
    assert mac() == before
    bed.nsexec(n1.ns, "ip", "link", "del", "lowmac0")
    assert mac() == before


def test_a_node_never_becomes_a_remote_tasks_gateway(bed: MeshBed) -> None:
    """Every node has the gateway address. When a node asks over the overlay for a remote task's MAC,
    the task must not take that node's MAC for its gateway: its replies would then cross the overlay
    to that node, and stop when it goes down, although the task's own node is fine."""
    _, tasks = _web(bed, ["node1"])
    _until_backends(bed, set(tasks))
    task = bed.tasks[tasks[0]]
    n1, n3 = bed.nodes["node1"], bed.nodes["node3"]
    # node3 resolves the task anew, from its gateway address (ping picks the bridge's address as source)
    addr = next(iter(task.addrs.values()))
    bed.nsexec(n3.ns, "ip", "neigh", "flush", "to", addr)
    bed.nsexec(n3.ns, "ping", "-c", "1", "-W", "1", addr, check=False)
    bed.nsexec(n3.ns, "ip", "link", "set", "eth0", "down")  # node3 loses power, as far as the others see
    assert [get(n1.addr, 8080, timeout=2.0) for _ in range(5)] == [task.id] * 5


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


_VIP_CLIENT = """
import collections, http.client, json
counts, errors = collections.Counter(), []
for _ in range({n}):
    h = http.client.HTTPConnection({host!r}, 80, timeout=0.5)  # a dropped SYN (1 s retransmit) fails
    try:
        h.request("GET", "/")
        body = h.getresponse().read().decode()
        counts[[x for x in body.splitlines() if x.startswith("Name:")][0].split()[1]] += 1
    except Exception as e:
        errors.append(repr(e))
        if len(errors) == 5:
            break
    finally:
        h.close()
print(json.dumps({{"counts": counts, "errors": errors}}))
"""


def _vip_counts(bed: MeshBed, tid: str, host: str, n: int) -> tuple[dict[str, int], list[str]]:
    """``n`` new connections from task ``tid`` to ``host``:80: backend -> count, and the errors."""
    out = _in_task(bed, tid, _VIP_CLIENT.format(n=n, host=host))
    try:
        res = json.loads(out)
    except ValueError:
        raise AssertionError(out) from None
    return dict(res["counts"]), list(res["errors"])


def test_vip_balances_over_tasks(bed: MeshBed) -> None:
    """Through a VIP every task gets a fair share, including the asking task itself (hairpin: the
    pick is the sender, DNAT and SNAT on its own node), and a sole backend reaches its own VIP."""
    net_a = bed.add_network("front", "10.0.1.0/24", 4097)
    svc_a = bed.add_service("alpha", [net_a])
    svc_s = bed.add_service("solo", [net_a])
    bed.push()
    a1 = bed.add_task(svc_a, "node1").id
    a2 = bed.add_task(svc_a, "node2").id
    a3 = bed.add_task(svc_a, "node1").id
    s1 = bed.add_task(svc_s, "node3").id
    for t in (a1, a2, a3, s1):
        bed.wait_listening(t)
    bed.push()
    n = 300
    counts, errors = _vip_counts(bed, a1, "alpha", n)
    assert not errors and set(counts) == {a1, a2, a3}, counts
    fair = n / 3
    assert all(abs(c - fair) <= 0.3 * fair for c in counts.values()), counts
    # a task that is its service's only backend: every connection to its own VIP is a hairpin
    counts, errors = _vip_counts(bed, s1, "solo", 20)
    assert (counts, errors) == ({s1: 20}, [])
