"""The embedded provider: each node is a network namespace on one Linux host. No VMs, no Docker engine.

A node is built like a small machine:

* "hardware": a network namespace `lc-<lab>_<node>` with `eth0` (a veth whose host end is on the lab
  bridge, like a Vagrant host-only adapter); the host has `.1` on the bridge and nodes have no default
  route, so lab traffic never leaves the machine;
* "power": a holder process (`sleep infinity`, the node's init) that owns the node's UTS namespace (its
  hostname) and mount namespace, in which `/var/lib/docker` is the node's disk
  (`$LABCTL_HOME/labs/<lab>/nodes/<node>/disk`) and `/run` is the node's own (`/run/labctl/<lab>/<node>`,
  cleared on halt like a tmpfs at power-off);
* a cgroup per node (`<cgroup2>/labctl/<lab>/<node>`) holds the holder, the agent, every `labctl exec`
  shell and every task, so `halt` powers the whole machine off at once (`cgroup.kill`);
* the agent (`labagent`) listens on `/run/docker.sock` inside the node, which the host sees as
  `/run/labctl/<lab>/<node>/docker.sock`.

Partitions are nftables rules in a `bridge` table per lab on the host (`labctl-<lab>`), dropping IPv4
between groups on the lab switch, as pulling cables would; the host stays reachable from every node.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from labctl import agentclient
from labctl.errors import LabError, UsageError
from labctl.providers import netlink, netns_sshd
from labctl.providers.base import NodeStatus, Progress, Provider, no_progress
from labctl.registry import lab_runtime_dir
from labctl.spec import NodeSpec

AGENT_READY_TIMEOUT = 30.0
HALT_TIMEOUT = 10.0
NODE_DISK_MOUNT = "/var/lib/docker"
HOLDER_CMDLINE = b"sleep\x00infinity\x00"
AGENT_MARKER = b"--node-name"  # in the agent's command line however it was started (script or -m)


def _short(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def bridge_name(lab: str) -> str:
    return f"lcbr-{_short(lab)}"


def veth_name(lab: str, node: str) -> str:
    return f"lcv{_short(lab + '/' + node)}"


def netns_name(lab: str, node: str) -> str:
    return f"lc-{lab}_{node}"


def nft_table(lab: str) -> str:
    return f"labctl-{lab}"


def cgroup2_root() -> Path | None:
    """The cgroup v2 mount (`/sys/fs/cgroup` on pure v2 hosts, `…/unified` on hybrid ones)."""
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                return Path(left.split(" ")[4])
    except OSError:
        return None
    return None


def agent_command() -> list[str]:
    """How to start the agent: the `labagent` next to this interpreter (the project's venv)."""
    candidate = Path(sys.executable).with_name("labagent")
    if candidate.exists():
        return [str(candidate)]
    return [sys.executable, "-m", "agents.daemon"]


HOLDER_SCRIPT = r"""
set -e
hostname "$1"
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null || true
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 2>/dev/null || true
mount --bind "$2" /var/lib/docker
mount --bind "$3" /run
exec sleep infinity
"""

# Joins the cgroup, then becomes the given program, so every process of a node is in its cgroup from birth.
CGROUP_EXEC = 'if [ -n "$0" ]; then echo $$ > "$0"; fi; exec "$@"'


class NetnsProvider(Provider):
    # ----- paths -----------------------------------------------------------------------------------------
    def node_disk(self, node: str) -> Path:
        return self.record.dir / "nodes" / node / "disk"

    def node_console(self, node: str) -> Path:
        return self.record.dir / "nodes" / node / "console.log"

    def node_run(self, node: str) -> Path:
        return lab_runtime_dir(self.spec.name) / node

    def socket_path(self, node: str) -> str:
        return str(self.node_run(node) / "docker.sock")

    def _pids_file(self, node: str) -> Path:
        return lab_runtime_dir(self.spec.name) / ".pids" / f"{node}.json"

    def _cgroup(self, node: str | None = None) -> Path | None:
        root = cgroup2_root()
        if root is None:
            return None
        base = root / "labctl" / self.spec.name
        return base / node if node else base

    def docker_host(self, node: str) -> str:
        self.spec.node(node)
        return f"unix://{self.socket_path(node)}"

    # ----- pids ------------------------------------------------------------------------------------------
    def _read_pids(self, node: str) -> dict[str, int]:
        try:
            data = json.loads(self._pids_file(node).read_text())
            return {k: int(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _write_pids(self, node: str, pids: dict[str, int]) -> None:
        f = self._pids_file(node)
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp")
        tmp.write_text(json.dumps(pids))
        os.replace(tmp, f)

    def _alive(self, pid: int | None, marker: bytes) -> bool:
        """True if `pid` runs and is ours (its command line holds `marker`), not a recycled pid."""
        if not pid:
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        state = stat.rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X") and marker in cmdline

    def holder_pid(self, node: str) -> int | None:
        pid = self._read_pids(node).get("holder")
        return pid if pid and self._alive(pid, HOLDER_CMDLINE) else None

    def agent_pid(self, node: str) -> int | None:
        pid = self._read_pids(node).get("agent")
        if pid is None and self.spec.agent_via == "ssh":  # started over SSH: its pid file is in the node's /run
            with contextlib.suppress(OSError, ValueError):
                pid = int((self.node_run(node) / "labagent.pid").read_text())
        return pid if pid and self._alive(pid, AGENT_MARKER) else None

    # ----- lifecycle -------------------------------------------------------------------------------------
    def create(self, progress: Progress = no_progress) -> None:
        spec = self.spec
        assert spec.subnet is not None
        try:
            netlink.check_subnet_free(spec.subnet)
            lab_runtime_dir(spec.name).mkdir(parents=True, exist_ok=True)
            cg = self._cgroup()
            if cg is not None:
                cg.mkdir(parents=True, exist_ok=True)
            if spec.agent_via == "ssh":
                netns_sshd.prepare(self)
            with netlink.Netlink() as nl:
                nl.create_bridge(bridge_name(spec.name), spec.host_address, spec.subnet.prefixlen,
                                 alias=f"labctl lab {spec.name}")
                progress(f"bridge {bridge_name(spec.name)} {spec.host_address}/{spec.subnet.prefixlen}")
                for node in spec.nodes:
                    assert node.ip is not None
                    nl.create_node_link(
                        netns_name(spec.name, node.name), veth_name(spec.name, node.name),
                        bridge_name(spec.name), node.ip, spec.subnet.prefixlen,
                        alias=f"labctl {spec.name}/{node.name}",
                    )
                    progress(f"node {node.name} {node.ip}")
            for node in spec.nodes:
                self._power_on(node)
            if spec.agent_via == "ssh":
                netns_sshd.push_agents(self, progress=progress)
            self._wait_agents([n.name for n in spec.nodes])
            progress("agents answer /_ping")
        except BaseException:
            self.destroy()
            raise

    def _power_on(self, node: NodeSpec) -> None:
        disk = self.node_disk(node.name)
        disk.mkdir(parents=True, exist_ok=True)
        run = self.node_run(node.name)
        run.mkdir(parents=True, exist_ok=True)
        Path(NODE_DISK_MOUNT).mkdir(parents=True, exist_ok=True)  # mount point on the host (stays empty there)
        console = self.node_console(node.name)
        cg = self._cgroup(node.name)
        procs = ""
        if cg is not None:
            cg.mkdir(parents=True, exist_ok=True)
            procs = str(cg / "cgroup.procs")
        ns = f"/run/netns/{netns_name(self.spec.name, node.name)}"
        holder = self._spawn(
            procs,
            ["nsenter", f"--net={ns}", "--", "unshare", "--uts", "--mount", "--propagation", "private",
             "--", "sh", "-c", HOLDER_SCRIPT, "holder", node.name, str(disk), str(run)],
            console,
        )
        # The holder is ready once it has become `sleep infinity`: its hostname and mounts are in place.
        deadline = time.monotonic() + 5
        while not self._alive(holder, HOLDER_CMDLINE):
            if not self._alive(holder, b""):
                raise LabError(f"node {node.name}: could not start (see {console})")
            if time.monotonic() > deadline:
                raise LabError(f"node {node.name}: did not start within 5 s (see {console})")
            time.sleep(0.002)
        self._write_pids(node.name, {"holder": holder})
        self._start_agent(node)

    def _start_agent(self, node: NodeSpec) -> None:
        holder = self.holder_pid(node.name)
        if holder is None:
            raise LabError(f"node {node.name} is halted; start it with 'labctl start {node.name}'")
        cg = self._cgroup(node.name)
        procs = str(cg / "cgroup.procs") if cg is not None else ""
        if self.spec.agent_via == "ssh":  # the node gets sshd; the agent comes with the push
            netns_sshd.start_sshd(self, node.name, holder, procs)
            return
        with contextlib.suppress(FileNotFoundError):
            Path(self.socket_path(node.name)).unlink()
        t = self.spec.timing
        agent = self._spawn(
            procs,
            ["nsenter", "-t", str(holder), "--net", "--uts", "--mount", "--", *agent_command(),
             "--node-name", node.name, "--state-dir", NODE_DISK_MOUNT, "--socket", "/run/docker.sock",
             "--addr", str(node.ip)],
            self.node_console(node.name),
            env_extra={
                "LABAGENT_HEARTBEAT_MS": str(t.heartbeat_ms),
                "LABAGENT_ELECTION_TICKS": str(t.election_ticks),
                "LABAGENT_NODE_HEARTBEAT_S": str(t.node_heartbeat_s),
            },
        )
        self._write_pids(node.name, {"holder": holder, "agent": agent})

    def _spawn(self, cgroup_procs: str, argv: list[str], log: Path, env_extra: dict[str, str] | None = None) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.pop("DOCKER_HOST", None)
        env.update(env_extra or {})
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["sh", "-c", CGROUP_EXEC, cgroup_procs, *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                close_fds=True, env=env, cwd="/",
            )
        return proc.pid

    def _wait_agents(self, nodes: list[str]) -> None:
        silent = agentclient.wait_ping([self.socket_path(n) for n in nodes], AGENT_READY_TIMEOUT)
        if silent:
            names = [n for n in nodes if self.socket_path(n) in silent]
            raise LabError(
                f"the agent on {', '.join(names)} did not answer within {AGENT_READY_TIMEOUT:.0f} s "
                f"(see {self.node_console(names[0])} and {self.node_disk(names[0])}/labagent.log)"
            )

    def start(self, node: str) -> None:
        spec = self.spec.node(node)
        if self.holder_pid(node) is None:
            self._kill_cgroup(node)
            with netlink.Netlink() as nl:
                nl.set_link_state(veth_name(self.spec.name, node), up=True)
            self._power_on(spec)
        elif self.agent_pid(node) is None:
            self._start_agent(spec)
        else:
            raise LabError(f"node {node} is already running")
        if self.spec.agent_via == "ssh":
            netns_sshd.push_agents(self, [node])
        self._wait_agents([node])

    def halt(self, node: str) -> None:
        self.spec.node(node)
        if self.holder_pid(node) is None and self.agent_pid(node) is None:
            raise LabError(f"node {node} is already halted")
        self._kill_cgroup(node)
        with netlink.Netlink() as nl:
            nl.set_link_state(veth_name(self.spec.name, node), up=False)
        self._clear_run(node)

    def kill(self, node: str) -> None:
        self.spec.node(node)
        pid = self.agent_pid(node)
        if pid is None:
            raise LabError(f"the agent on {node} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self._alive(pid, AGENT_MARKER) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _clear_run(self, node: str) -> None:
        run = self.node_run(node)
        if run.is_dir():
            for child in run.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        child.unlink()
        with contextlib.suppress(OSError):
            self._pids_file(node).unlink()

    def _kill_cgroup(self, node: str) -> None:
        """Power off: every process of the node dies at once, as at a power cut (no clean shutdown)."""
        cg = self._cgroup(node)
        if cg is not None and cg.is_dir():
            (cg / "cgroup.kill").write_text("1")
            deadline = time.monotonic() + HALT_TIMEOUT
            while time.monotonic() < deadline:
                if "populated 0" in (cg / "cgroup.events").read_text():
                    return
                time.sleep(0.01)
            raise LabError(f"node {node}: processes survived power-off after {HALT_TIMEOUT:.0f} s")
        # Without cgroup v2: kill what we know about.
        for pid in self._read_pids(node).values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    # ----- faults ----------------------------------------------------------------------------------------
    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        if len(groups) < 2:
            raise UsageError("a partition needs at least two groups, e.g. 'labctl partition manager1 manager2,manager3'")
        seen: dict[str, int] = {}
        addrs: list[list[str]] = []
        for i, group in enumerate(groups):
            ips = []
            for name in group:
                node = self.spec.node(name)
                if name in seen:
                    raise UsageError(f"node {name} is in two groups")
                seen[name] = i
                ips.append(str(node.ip))
            addrs.append(ips)
        rules = []
        for i in range(len(addrs)):
            for j in range(len(addrs)):
                if i != j:
                    rules.append(
                        f"ip saddr {{ {', '.join(addrs[i])} }} ip daddr {{ {', '.join(addrs[j])} }} drop"
                    )
        table = nft_table(self.spec.name)
        script = (
            f"table bridge {table}\ndelete table bridge {table}\n"
            f"table bridge {table} {{\n  chain forward {{\n"
            f"    type filter hook forward priority 0; policy accept;\n"
            + "".join(f"    {r}\n" for r in rules)
            + "  }\n}\n"
        )
        _nft(script)

    def heal(self) -> None:
        table = nft_table(self.spec.name)
        _nft(f"table bridge {table}\ndelete table bridge {table}\n")

    # ----- exec and status -------------------------------------------------------------------------------
    def exec_argv(self, node: str, argv: Sequence[str]) -> list[str]:
        self.spec.node(node)
        holder = self.holder_pid(node)
        if holder is None:
            raise LabError(f"node {node} is halted; start it with 'labctl start {node}'")
        cg = self._cgroup(node)
        procs = str(cg / "cgroup.procs") if cg is not None else ""
        command = list(argv) or [os.environ.get("SHELL", "/bin/bash")]
        return ["sh", "-c", CGROUP_EXEC, procs, "nsenter", "-t", str(holder), "--net", "--uts", "--mount",
                "--", "env", "DOCKER_HOST=unix:///run/docker.sock", f"PS1={node}$ ", *command]

    def status(self) -> list[NodeStatus]:
        rows: list[tuple[NodeSpec, str, str, str, bool]] = []
        for node in self.spec.nodes:
            swarm, node_id, manager = "-", "", False
            if self.holder_pid(node.name) is None:
                state = "halted"
            elif self.agent_pid(node.name) is None:
                state = "stopped"
            else:
                info = agentclient.info(self.socket_path(node.name), timeout=1.0)
                if info is None:
                    state = "starting"
                else:
                    state = "running"
                    sw = info.get("Swarm") or {}
                    swarm = str(sw.get("LocalNodeState") or "inactive")
                    node_id = str(sw.get("NodeID") or "")
                    manager = bool(sw.get("ControlAvailable"))
            rows.append((node, state, swarm, node_id, manager))
        leader = None
        for node, state, _swarm, _id, manager in rows:
            if manager and state == "running":
                leader = agentclient.leader_hostname(self.socket_path(node.name), timeout=1.0)
                if leader:
                    break
        return [
            NodeStatus(node.name, node.role, str(node.ip), state, swarm,
                       (node.name == leader) if swarm == "active" else None, node_id)
            for node, state, swarm, node_id, _m in rows
        ]

    # ----- teardown --------------------------------------------------------------------------------------
    def destroy(self, progress: Progress = no_progress) -> list[str]:
        problems: list[str] = []

        def attempt(what: str, fn: object) -> None:
            try:
                fn()  # type: ignore[operator]
            except Exception as e:  # teardown goes on: one stuck piece must not keep the rest alive
                problems.append(f"{what}: {e}")

        for node in self.spec.nodes:
            attempt(f"power off {node.name}", lambda n=node.name: self._kill_cgroup(n))
            cg = self._cgroup(node.name)
            if cg is not None:
                attempt(f"cgroup {node.name}", lambda c=cg: rmdir_cgroup_tree(c))
        cg = self._cgroup()
        if cg is not None:
            attempt("cgroup", lambda: cg.rmdir() if cg.exists() else None)
            attempt("cgroup", lambda: _rmdir_if_empty(cg.parent))
        progress("nodes powered off")
        with netlink.Netlink() as nl:
            for node in self.spec.nodes:
                attempt(f"link {node.name}", lambda n=node.name: nl.delete_link(veth_name(self.spec.name, n)))
                attempt(f"netns {node.name}", lambda n=node.name: nl.delete_netns(netns_name(self.spec.name, n)))
            attempt("bridge", lambda: nl.delete_link(bridge_name(self.spec.name)))
        progress("links and namespaces removed")
        attempt("nftables", self._drop_nft_table)
        attempt("runtime dir", lambda: shutil.rmtree(lab_runtime_dir(self.spec.name), ignore_errors=True))
        attempt("runtime root", lambda: _rmdir_if_empty(lab_runtime_dir(self.spec.name).parent))
        attempt("lab dir", lambda: shutil.rmtree(self.record.dir, ignore_errors=True))
        progress("state removed")
        return problems

    def _drop_nft_table(self) -> None:
        table = nft_table(self.spec.name)
        _nft(f"table bridge {table}\ndelete table bridge {table}\n")


def rmdir_cgroup_tree(path: Path) -> None:
    """Remove a cgroup and the ones below it (a node's tasks get their own), deepest first.

    Only empty cgroups can be removed, so this runs after `cgroup.kill` has emptied the tree."""
    if not path.is_dir():
        return
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        child.rmdir()
    path.rmdir()


def _rmdir_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _nft(script: str) -> None:
    try:
        res = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True, timeout=10)
    except FileNotFoundError:
        raise LabError("nftables is not installed (apt-get install nftables); see 'labctl doctor'") from None
    if res.returncode != 0:
        raise LabError(f"nft failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
