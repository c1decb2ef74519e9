"""A mesh lab made of namespaces, for the integration tests and ``bench/mesh.py``: fake nodes (netns on
a private bridge, each running `agents.mesh.nodeproc`), fake tasks (netns wired to a node's network
bridge, running the whoami image), and a mesh table the bed pushes to every node. Root only;
``close()`` removes every namespace, link and process it made."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from agents.mesh.rules import bridge_name

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sh(*argv: str, check: bool = True, input: str | None = None) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, input=input)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip()}")
    return res.stdout


@dataclass
class BedNode:
    name: str
    ns: str
    addr: str
    proc: subprocess.Popen[str]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class BedTask:
    id: str
    service: str
    node: str
    ns: str
    addrs: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    ready: bool = True


class MeshBed:
    def __init__(self, nodes: int = 3, mode: str | None = None) -> None:
        self.tag = "lm" + secrets.token_hex(2)
        self.octet = 100 + int(self.tag[2:], 16) % 100
        self.bridge = f"{self.tag}br"
        self.host_ip = f"192.168.{self.octet}.1"
        self.nodes: dict[str, BedNode] = {}
        self.tasks: dict[str, BedTask] = {}
        self.networks: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self._next_ip: dict[str, int] = {}
        self._veths: list[str] = []
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        try:
            for i in range(nodes):
                self._add_node(f"node{i + 1}", mode)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------ nodes
    def _add_node(self, name: str, mode: str | None) -> None:
        i = len(self.nodes) + 1
        ns, veth, addr = f"{self.tag}{name}", f"{self.tag}v{i}", f"192.168.{self.octet}.{10 + i}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._veths.append(veth)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        self.nsexec(ns, "ip", "addr", "add", f"{addr}/24", "dev", "eth0")
        self.nsexec(ns, "ip", "link", "set", "eth0", "up")
        self.nsexec(ns, "ip", "link", "set", "lo", "up")
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "agents.mesh.nodeproc", name, addr]
        if mode:
            argv.append(mode)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        node = BedNode(name, ns, addr, proc)
        self.nodes[name] = node
        node.info = self._read(node)

    def nsexec(self, ns: str, *argv: str, check: bool = True, input: str | None = None) -> str:
        return sh("ip", "netns", "exec", ns, *argv, check=check, input=input)

    @staticmethod
    def _read(node: BedNode) -> dict[str, Any]:
        assert node.proc.stdout is not None
        line = node.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"mesh agent on {node.name} exited ({node.proc.poll()})")
        return dict(json.loads(line))

    # ----------------------------------------------------------------------------------- table
    def add_network(self, name: str, subnet: str, vni: int, ingress: bool = False) -> str:
        nid = f"{name}{secrets.token_hex(6)}"[:25]
        self.networks[nid] = {"id": nid, "name": name, "vni": vni, "subnet": subnet, "ingress": ingress}
        self._next_ip[nid] = 2
        return nid

    def alloc(self, nid: str) -> str:
        net = ipaddress.ip_network(self.networks[nid]["subnet"])
        n = self._next_ip[nid]
        self._next_ip[nid] = n + 1
        return str(net.network_address + n)

    def add_service(self, name: str, networks: list[str], published: int = 0, target: int = 80) -> str:
        sid = f"s{secrets.token_hex(8)}"
        ports = [{"protocol": "tcp", "target": target, "published": published, "mode": "ingress"}] if published else []
        self.services[sid] = {"id": sid, "name": name, "vips": [{"network_id": n, "addr": self.alloc(n)} for n in networks],
                              "ports": ports, "networks": networks}
        return sid

    def message(self) -> dict[str, Any]:
        services = []
        for sid, s in self.services.items():
            tasks = [{"id": t.id, "node_id": t.node, "addrs": t.addrs, "ready": t.ready}
                     for t in self.tasks.values() if t.service == sid]
            services.append({**s, "tasks": tasks})
        return {"type": "mesh", "full": True, "services": services, "networks": list(self.networks.values()),
                "nodes": [{"id": n.name, "addr": n.addr, "ready": True} for n in self.nodes.values()]}

    def push(self, msg: dict[str, Any] | None = None) -> float:
        """Send the table to every node; returns the slowest node's apply time (s)."""
        data = json.dumps(msg or self.message()) + "\n"
        for n in self.nodes.values():
            assert n.proc.stdin is not None
            n.proc.stdin.write(data)
            n.proc.stdin.flush()
        worst = 0.0
        for n in self.nodes.values():
            ans = self._read(n)
            worst = max(worst, float(ans.get("apply_ms", 0)) / 1000)
        return worst

    # ------------------------------------------------------------------------------------ tasks
    def add_task(self, service: str, node: str, *, start: bool = True, ready: bool = True) -> BedTask:
        """A task netns on ``node`` with an address on each of the service's networks, running whoami."""
        tid = f"t{secrets.token_hex(8)}"
        ns = f"{self.tag}{tid[:8]}"
        nets = self.services[service]["networks"]
        addrs = {nid: self.alloc(nid) for nid in nets}
        sh("ip", "netns", "add", ns)
        task = BedTask(tid, service, node, ns, addrs, ready=ready)
        self.tasks[tid] = task
        node_ns = self.nodes[node].ns
        for i, nid in enumerate(nets):
            net = self.networks[nid]
            prefix = ipaddress.ip_network(net["subnet"]).prefixlen
            gw = str(ipaddress.ip_network(net["subnet"]).network_address + 1)
            host_end = f"v{tid[1:9]}{i}"
            self.nsexec(node_ns, "ip", "link", "add", host_end, "mtu", "1450", "type", "veth", "peer", "name",
                        f"eth{i}", "mtu", "1450", "netns", ns)
            self.nsexec(node_ns, "ip", "link", "set", host_end, "master", bridge_name(nid), "up")
            self.nsexec(ns, "ip", "addr", "add", f"{addrs[nid]}/{prefix}", "dev", f"eth{i}")
            self.nsexec(ns, "ip", "link", "set", f"eth{i}", "up")
            if i == 0:
                self.nsexec(ns, "ip", "route", "add", "default", "via", gw)
                os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
                with open(f"/etc/netns/{ns}/resolv.conf", "w") as fh:
                    fh.write(f"nameserver {gw}\noptions ndots:0\n")
        self.nsexec(ns, "ip", "link", "set", "lo", "up")
        if start:
            task.proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "agents.worker.images.run", "traefik/whoami",
                 "--name", tid], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return task

    def stop_task(self, tid: str) -> None:
        t = self.tasks[tid]
        if t.proc is not None and t.proc.poll() is None:
            t.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                t.proc.wait(5)
            if t.proc.poll() is None:
                t.proc.kill()
                t.proc.wait()

    def remove_task(self, tid: str) -> None:
        self.stop_task(tid)
        t = self.tasks.pop(tid)
        sh("ip", "netns", "del", t.ns, check=False)
        with contextlib.suppress(OSError):
            os.remove(f"/etc/netns/{t.ns}/resolv.conf")
            os.rmdir(f"/etc/netns/{t.ns}")

    def wait_listening(self, tid: str, timeout: float = 15.0) -> None:
        t = self.tasks[tid]
        addr = next(iter(t.addrs.values()))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.nsexec(t.ns, "ss", "-Hltn", "sport", "= :80", check=False)
            if out.strip():
                return
            time.sleep(0.05)
        raise RuntimeError(f"task {tid} ({addr}) never listened")

    # ---------------------------------------------------------------------------------- cleanup
    def close(self) -> None:
        for tid in list(self.tasks):
            with contextlib.suppress(Exception):
                self.remove_task(tid)
        for n in self.nodes.values():
            with contextlib.suppress(Exception):
                assert n.proc.stdin is not None
                n.proc.stdin.write('{"type":"stop"}\n')
                n.proc.stdin.flush()
                n.proc.wait(10)
            if n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait()
            sh("ip", "netns", "del", n.ns, check=False)
        for v in self._veths:
            sh("ip", "link", "del", v, check=False)
        sh("ip", "link", "del", self.bridge, check=False)

    def __enter__(self) -> MeshBed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
