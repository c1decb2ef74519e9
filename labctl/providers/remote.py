"""What the vagrant and ssh providers share: machines labctl reaches only over SSH.

* the agent is pushed over SSH (labctl/push.py) and controlled with `labagentctl` on the node
  (`kill` = SIGKILL, as a crash; `start` = push again, which only starts what is not running);
* partitions are nftables rules on the nodes themselves (table `inet labctl_partition`, input and output
  dropping the other groups' addresses), since there is no lab switch on the host to filter;
* the host reaches each agent through a unix-socket forward by OpenSSH: `ssh -N -L
  /run/labctl/<lab>/<node>/docker.sock:/run/docker.sock` (a "tunnel", one `ssh` process per node, its pid
  in `/run/labctl/<lab>/.pids/`). `docker_host(node)` is `unix://` that socket, so the docker CLI, the
  docker SDK (swarm formation) and `labctl status` need no SSH settings of their own; a dead tunnel is
  re-established on the next call. Users who prefer it can also use `DOCKER_HOST=ssh://user@ip`
  (the docker CLI on the node runs `docker system dial-stdio`), given the lab's ssh config.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labctl import agentclient, push, sshconn
from labctl.errors import LabError, UsageError
from labctl.providers.base import NodeStatus, Progress, Provider, no_progress
from labctl.registry import lab_runtime_dir
from labctl.sshlab import LabSSH, SSHTarget

TUNNEL_READY_TIMEOUT = 15.0
_TUNNELS_LOCK = threading.Lock()
TUNNEL_MARKER = b"/run/docker.sock"
PARTITION_TABLE = "labctl_partition"


def ssh_argv(provider: Provider, node: str, remote: Sequence[str] = (), tty: bool = True) -> list[str]:
    """`ssh` with the lab's config for NODE (any provider whose nodes run sshd)."""
    provider.spec.node(node)
    if provider.spec.agent_via != "ssh":
        raise UsageError(f"the nodes of lab {provider.spec.name!r} run no sshd; use 'labctl exec {node}' "
                         "(or bring the lab up with 'labctl up --via ssh')")
    config = LabSSH(provider.record.dir, provider.spec.name).config
    if not config.exists():
        raise LabError(f"lab {provider.spec.name!r} has no ssh config yet ({config})")
    argv = ["ssh", "-F", str(config)]
    if tty:
        argv.append("-t")
    argv.append(node)
    if remote:
        argv += ["--", shlex.join(list(remote))]
    return argv


class RemoteProvider(Provider):
    """Nodes are machines with sshd; subclasses say where they are (`targets`) and how to power them."""

    # ----- where the nodes are ---------------------------------------------------------------------------
    @property
    def ssh(self) -> LabSSH:
        return LabSSH(self.record.dir, self.spec.name)

    @abstractmethod
    def targets(self) -> list[SSHTarget]:
        """Every node's SSH endpoint (from disk: providers keep nothing in memory)."""

    def target(self, node: str) -> SSHTarget:
        self.spec.node(node)
        for t in self.targets():
            if t.node == node:
                return t
        raise LabError(f"no SSH endpoint recorded for {node}; bring the lab up again")

    def socket_path(self, node: str) -> str:
        return str(lab_runtime_dir(self.spec.name) / node / "docker.sock")

    # ----- the agent -------------------------------------------------------------------------------------
    def push_agents(self, nodes: list[str] | None = None, progress: Progress = no_progress,
                    connect_retry: float = 0.0) -> list[push.PushResult]:
        chosen = [t for t in self.targets() if nodes is None or t.node in nodes]
        self.ssh.write_config(self.targets())
        services = {t.node: push.agent_service(self.spec, t.node) for t in chosen}
        return push.push(chosen, self.ssh.known_hosts, services, progress, connect_retry)

    def remote(self, node: str, command: str, what: str, timeout: float = 60.0) -> str:
        client = sshconn.connect(self.target(node), self.ssh.known_hosts)
        try:
            return sshconn.check(client, node, what, command, timeout=timeout)
        finally:
            client.close()

    def kill(self, node: str) -> None:
        self.remote(node, push.agent_command(self.target(node), "kill"), "killing the agent")

    # ----- tunnels ---------------------------------------------------------------------------------------
    def _pids_file(self) -> Path:
        return lab_runtime_dir(self.spec.name) / ".pids" / "tunnels.json"

    def _tunnels(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self._pids_file().read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _update_tunnels(self, change: Callable[[dict[str, int]], object]) -> None:
        """Read-modify-write of the tunnel pids, safe across threads (status checks nodes in parallel)
        and processes (a unique temp file per writer, under an flock)."""
        f = self._pids_file()
        f.parent.mkdir(parents=True, exist_ok=True)
        with _TUNNELS_LOCK, open(f.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            pids = self._tunnels()
            change(pids)
            tmp = f.with_name(f".{f.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(json.dumps(pids))
            os.replace(tmp, f)

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            return TUNNEL_MARKER in Path(f"/proc/{pid}/cmdline").read_bytes() and \
                Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    def ensure_tunnel(self, node: str) -> str:
        """The local socket forwarded to NODE's /run/docker.sock, started if it is not running."""
        sock = self.socket_path(node)
        pid = self._tunnels().get(node)
        if pid and self._alive(pid) and os.path.exists(sock):
            return sock
        self.stop_tunnel(node)
        Path(sock).parent.mkdir(parents=True, exist_ok=True)
        log = self.record.dir / "nodes" / node / "tunnel.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = ["ssh", "-F", str(self.ssh.config), "-N", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                "-o", "StreamLocalBindUnlink=yes", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-L", f"{sock}:/run/docker.sock", node]
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True, close_fds=True)
        self._update_tunnels(lambda pids: pids.__setitem__(node, proc.pid))
        deadline = time.monotonic() + TUNNEL_READY_TIMEOUT
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop_tunnel(node)
                raise LabError(f"the SSH tunnel to {node}'s agent did not come up (see {log})")
            time.sleep(0.01)
        return sock

    def stop_tunnel(self, node: str) -> None:
        pid = self._tunnels().get(node)
        if pid and self._alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 2
            while self._alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        with contextlib.suppress(OSError):
            os.waitpid(pid, os.WNOHANG) if pid else None
        self._update_tunnels(lambda pids: pids.pop(node, None))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path(node))

    def docker_host(self, node: str) -> str:
        self.spec.node(node)
        return f"unix://{self.ensure_tunnel(node)}"

    # ----- faults ----------------------------------------------------------------------------------------
    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        if len(groups) < 2:
            raise UsageError("a partition needs at least two groups, e.g. 'labctl partition manager1 manager2,manager3'")
        seen: set[str] = set()
        for group in groups:
            for name in group:
                self.spec.node(name)
                if name in seen:
                    raise UsageError(f"node {name} is in two groups")
                seen.add(name)
        jobs = []
        for i, group in enumerate(groups):
            others = [str(self.spec.node(n).ip) for j, g in enumerate(groups) if j != i for n in g]
            addrs = ", ".join(others)
            script = (
                f"table inet {PARTITION_TABLE}\ndelete table inet {PARTITION_TABLE}\n"
                f"table inet {PARTITION_TABLE} {{\n"
                f"  chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {addrs} }} drop; }}\n"
                f"  chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {addrs} }} drop; }}\n"
                "}\n"
            )
            jobs += [(n, script) for n in group]
        self._on_nodes(jobs, "partitioning")

    def heal(self) -> None:
        script = f"table inet {PARTITION_TABLE}\ndelete table inet {PARTITION_TABLE}\n"
        self._on_nodes([(n.name, script) for n in self.spec.nodes], "healing")

    def _on_nodes(self, jobs: list[tuple[str, str]], what: str) -> None:
        def one(job: tuple[str, str]) -> None:
            node, script = job
            command = f"printf %s {shlex.quote(script)} | " + _root(self.target(node), "nft -f -")
            self.remote(node, command, what)

        with ThreadPoolExecutor(max_workers=max(1, min(16, len(jobs)))) as pool:
            list(pool.map(one, jobs))

    # ----- exec and status -------------------------------------------------------------------------------
    def exec_argv(self, node: str, argv: Sequence[str]) -> list[str]:
        if not argv:
            return ssh_argv(self, node)
        return ssh_argv(self, node, ["env", "DOCKER_HOST=unix:///run/docker.sock", *argv], tty=False)

    def node_states(self) -> dict[str, str]:
        """Per node: "running" (the machine is up) or "halted"; subclasses ask their hypervisor."""
        return {n.name: "running" for n in self.spec.nodes}

    def status(self) -> list[NodeStatus]:
        machines = self.node_states()

        def one(name: str) -> NodeStatus:
            node = self.spec.node(name)
            swarm, leader, node_id, state = "-", None, "", machines.get(name, "halted")
            if state == "running":
                info = None
                with contextlib.suppress(LabError):
                    info = agentclient.info(self.ensure_tunnel(name), timeout=2.0)
                if info is None:
                    state = "stopped"
                else:
                    sw = info.get("Swarm") or {}
                    swarm = str(sw.get("LocalNodeState") or "inactive")
                    node_id = str(sw.get("NodeID") or "")
                    cluster = sw.get("Cluster") if sw.get("ControlAvailable") else None
                    leader = bool(cluster.get("Leader")) if isinstance(cluster, dict) and "Leader" in cluster else None
            return NodeStatus(name, node.role, str(node.ip), state, swarm, leader, node_id)

        with ThreadPoolExecutor(max_workers=min(16, len(self.spec.nodes))) as pool:
            return list(pool.map(one, [n.name for n in self.spec.nodes]))

    def wait_agents(self, nodes: list[str]) -> None:
        """After a push the agents answer on the nodes; check they also answer through the tunnels."""
        socks = [self.ensure_tunnel(n) for n in nodes]
        silent = agentclient.wait_ping(socks, 15.0)
        if silent:
            raise LabError(f"no answer through the SSH tunnel from {', '.join(silent)}")

    def stop_all_tunnels(self) -> None:
        for node in list(self._tunnels()):
            self.stop_tunnel(node)


def _root(target: SSHTarget, command: str) -> str:
    return command if target.user == "root" else f"sudo -n -- {command}"
