"""The routing mesh on namespaces: fake nodes running the mesh agent, fake tasks running whoami; and one
real three-manager netns lab (`test_rolling_update_waits_for_a_busy_node`).

Every namespace, link and process is removed by the bed's ``close()`` or the lab's teardown (fixture
finalizers)."""

from __future__ import annotations

import collections
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.mesh.rules import bridge_name
from agents.mesh.testbed import MeshBed
from tests.labfixtures import DockerNode, LabHandle, eventually, lab_home, unique_lab

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


def _until_backends(bed: MeshBed, want: set[str], timeout: float = 5.0, node: str = "node3") -> None:
    """The readiness probes let new tasks in asynchronously: wait until ``node`` serves exactly ``want``."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            seen = {get(bed.nodes[node].addr, 8080) for _ in range(3 * len(want))}
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


_CLIENT = """
import collections, http.client, json
counts, errors = collections.Counter(), []
for _ in range({n}):
    h = http.client.HTTPConnection({host!r}, {port}, timeout=0.9)  # a dropped SYN (1 s retransmit) fails
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
    return _counts(_in_task(bed, tid, _CLIENT.format(n=n, host=host, port=80)))


def _counts(out: str) -> tuple[dict[str, int], list[str]]:
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


def _node_counts(bed: MeshBed, node: str, host: str, n: int) -> tuple[dict[str, int], list[str]]:
    """``n`` new connections from ``node`` itself (its namespace, as `labctl exec`) to ``host``:8080."""
    code = _CLIENT.format(n=n, host=host, port=8080)
    return _counts(bed.nsexec(bed.nodes[node].ns, sys.executable, "-c", code, check=False))


def test_a_node_reaches_published_ports_at_its_own_address_and_localhost(bed: MeshBed) -> None:
    """As with Docker, a published port answers on the node itself at its lab address and at 127.0.0.1,
    every time, whether the pick is a task on this node or on another (node1), and on a node with no
    task (node3). 127.0.0.1 needs ``route_localnet`` (the DNATed packet leaves the loopback device)."""
    _, tasks = _web(bed, ["node1", "node2"])
    for node in ("node1", "node3"):
        _until_backends(bed, set(tasks), node=node)
    for node in ("node1", "node3"):
        for host in (bed.nodes[node].addr, "127.0.0.1"):
            counts, errors = _node_counts(bed, node, host, 30)
            assert errors == [], (node, host, counts, errors)
            assert set(counts) == set(tasks) and sum(counts.values()) == 30, (node, host, counts)


_RAW_SYN = """
import random, socket, struct, sys, time
dst_mac, src_ip, dst_ip, dport = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def csum(b):
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
sock.bind(("eth0", 0))
sport = random.randint(20000, 60000)
tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
pseudo = socket.inet_aton(src_ip) + socket.inet_aton(dst_ip) + struct.pack("!BBH", 0, 6, len(tcp))
tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, socket.inet_aton(src_ip),
                 socket.inet_aton(dst_ip))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
sock.send(bytes.fromhex(dst_mac.replace(":", "")) + sock.getsockname()[4] + b"\\x08\\x00" + ip + tcp)
sock.settimeout(0.1)
deadline, answer = time.monotonic() + 1.5, "silent"
while time.monotonic() < deadline and answer == "silent":
    try:
        f = sock.recv(2048)
    except TimeoutError:
        continue
    if f[23] == 6 and f[26:30] == socket.inet_aton(dst_ip) and f[34:38] == struct.pack("!HH", dport, sport):
        answer = "synack" if f[47] & 0x12 == 0x12 else f"flags {f[47]:#x}"
print(answer)
"""


def test_loopback_stays_closed_to_the_network(bed: MeshBed) -> None:
    """``route_localnet`` would let a neighbour reach the node's 127.0.0.1 services: a SYN for 127.0.0.1
    sent to node1's MAC from node2 gets no answer, while the same SYN for node1's lab address does."""
    n1, n2 = bed.nodes["node1"], bed.nodes["node2"]
    port = 7777
    listener = subprocess.Popen(
        ["ip", "netns", "exec", n1.ns, sys.executable, "-c",
         f"import socket, time; s = socket.socket(); s.bind(('', {port})); s.listen(); time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while not bed.nsexec(n1.ns, "ss", "-Hltn", "sport", f"= :{port}", check=False).strip():
            assert time.monotonic() < deadline, "the listener never listened"
            time.sleep(0.05)
        mac = json.loads(bed.nsexec(n1.ns, "ip", "-j", "link", "show", "dev", "eth0"))[0]["address"]

        def syn(dst: str) -> str:
            return bed.nsexec(n2.ns, sys.executable, "-c", _RAW_SYN, mac, n2.addr, dst, str(port)).strip()

        assert syn(n1.addr) == "synack"  # the probe itself works
        assert syn("127.0.0.1") == "silent"
    finally:
        listener.kill()
        listener.wait()


def _until_served(bed: MeshBed, port: int, want: str, timeout: float = 5.0) -> None:
    """Every node answers ``port`` with task ``want`` (new rules and probes land asynchronously)."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            seen = {get(n.addr, port, timeout=1.0) for n in bed.nodes.values()}
        except (OSError, AssertionError):
            seen = set()
        if seen == {want}:
            return
        time.sleep(0.05)
    raise AssertionError(f"port {port}: {seen} != {{{want}}}")


def test_a_vip_or_port_claimed_twice_breaks_no_other_service(bed: MeshBed) -> None:
    """Two services with the same VIP and published port (the allocator should never allow it; a race
    in it did, during the three-managers lab): the lower service id holds both, and the nodes keep
    programming every other service (a map element added twice failed each node's transactions, and
    then every rebuild, so no later service was ever published)."""
    ing = bed.add_network("ingress", "10.0.0.0/24", 4096, ingress=True)
    a = bed.add_service("a", [ing], published=8080)
    b = bed.add_service("b", [ing], published=8080)
    bed.services[b]["vips"] = [dict(v) for v in bed.services[a]["vips"]]
    bed.push()
    task = {a: bed.add_task(a, "node1").id, b: bed.add_task(b, "node2").id}
    for t in task.values():
        bed.wait_listening(t)
    bed.push()
    holder, other = sorted(task)
    _until_served(bed, 8080, task[holder])
    c = bed.add_service("c", [ing], published=8081)
    bed.push()
    tc = bed.add_task(c, "node3").id
    bed.wait_listening(tc)
    bed.push()
    _until_served(bed, 8081, tc)
    # the holder leaves: the other service takes the port over, in the same transaction
    bed.remove_task(task[holder])
    del bed.services[holder]
    bed.push()
    _until_served(bed, 8080, task[other])
    _until_served(bed, 8081, tc)


# ----------------------------------------------------------------------------------- a real swarm


@pytest.fixture
def managers3(tmp_path: Path) -> Iterator[tuple[LabHandle, list[DockerNode]]]:
    """The three-managers lab's shape: three managers, no worker, formed by `labctl up`."""
    if shutil.which("docker") is None:
        pytest.skip("the docker client binary is not installed")
    home = lab_home(tmp_path)
    next(home)
    lab = LabHandle({"name": unique_lab("mesh"), "swarm": "form",
                     "nodes": [{"name": f"m{i}", "role": "manager"} for i in (1, 2, 3)]})
    try:
        record = lab.up()
        provider = lab.provider
        yield lab, [DockerNode(provider.docker_host(n.name), str(n.ip), n.name) for n in record.spec.nodes]
    finally:
        lab.destroy_and_check()
        next(home, None)


def _host_loop(addrs: list[str], port: int, stop: threading.Event, results: list[tuple[bool, str]]) -> None:
    """httploop's client, faster: the nodes in turn, new connections, its 2 s timeout."""
    i = 0
    while not stop.is_set():
        addr = addrs[i % len(addrs)]
        i += 1
        t = time.monotonic()
        try:
            conn = http.client.HTTPConnection(addr, port, timeout=2.0)
            conn.request("GET", "/")
            status = conn.getresponse().status
            conn.close()
            results.append((status == 200, f"{t:.2f} {addr}: {status}"))
        except Exception as e:
            results.append((False, f"{t:.2f} {addr}: {e!r}"))
        stop.wait(0.02)


def _status(addr: str, port: int) -> int:
    conn = http.client.HTTPConnection(addr, port, timeout=2.0)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_rolling_update_waits_for_a_busy_node(managers3: tuple[LabHandle, list[DockerNode]]) -> None:
    """Issue 7: a rolling update lost requests sent through a manager that applied the mesh late (its
    agent busy when the old task was dropped): the task was stopped after a fixed delay, and that node
    still balanced connections to it. Here one manager's agent is frozen for 1.2 s while the first slot
    is replaced; the task waits until every node has confirmed dropping it, so a host-side client
    going through all three nodes sees no failed request."""
    lab, nodes = managers3
    m1 = nodes[0]
    m1.docker("service", "create", "--detach", "--replicas", "3", "-p", "8080:80", "--name", "web", "httpd")
    addrs = [n.ip for n in nodes]

    def serving() -> bool:
        try:
            return all(_status(a, 8080) == 200 for a in addrs for _ in range(3))
        except OSError:
            return False

    eventually(lambda: "3/3" in m1.docker("service", "ls").stdout and serving(), 60, "web 3/3 served")
    rows = m1.docker("service", "ps", "web", "--filter", "desired-state=running", "--format",
                     "{{.Name}} {{.Node}}").stdout.split()
    first = dict(zip(rows[::2], rows[1::2], strict=True))["web.1"]  # slots are updated in order
    frozen = next(n.name for n in nodes[1:] if n.name != first)  # neither the leader nor slot 1's node
    agent = lab.provider.agent_pid(frozen)
    assert agent is not None
    stop = threading.Event()
    results: list[tuple[bool, str]] = []
    client = threading.Thread(target=_host_loop, args=(addrs, 8080, stop, results))
    client.start()
    t0 = 0.0
    try:
        time.sleep(0.5)
        os.kill(agent, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            m1.docker("service", "update", "--detach", "--update-parallelism", "1", "--update-delay", "1s",
                      "--image", "nginx:1.22", "web")
            time.sleep(max(0.0, 1.2 - (time.monotonic() - t0)))
        finally:
            os.kill(agent, signal.SIGCONT)

        def completed() -> bool:
            out = m1.docker("service", "inspect", "--format", "{{.UpdateStatus.State}}", "web", check=False)
            return out.stdout.strip() == "completed"

        eventually(completed, 90, "the update to complete")
    finally:
        stop.set()
        client.join()
    failures = [r for ok, r in results if not ok]
    assert len(results) > 100
    ps = m1.docker("service", "ps", "web", "--format", "{{.Name}} {{.Node}} {{.CurrentState}}").stdout
    why = f"{len(failures)}/{len(results)} failed ({frozen} frozen at {t0:.2f}): {failures[:5]}\n{ps}"
    assert failures == [], why
