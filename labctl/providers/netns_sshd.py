"""An sshd inside each netns node, for `labctl up --via ssh`: the SSH push path, tested without VMs.

Each node runs `/usr/sbin/sshd -D -f /run/ssh/sshd_config` in its own namespaces and cgroup (so `halt`
stops it with everything else), listening on the node's lab IP:22 only. Its config, host key and
authorized key are written into the node's private `/run/ssh/` (like a VM's `/etc/ssh`) from the lab's
`$LABCTL_HOME/labs/<lab>/ssh/`; `/run/sshd` is the privilege-separation directory. The host's own sshd,
its config and keys are never touched. The host key is the lab's, so labctl trusts these nodes exactly
(written to the lab's known_hosts), with no first-use acceptance.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from labctl import push
from labctl.errors import LabError
from labctl.providers.base import Progress, no_progress
from labctl.sshlab import LabSSH, SSHTarget

if TYPE_CHECKING:
    from labctl.providers.netns import NetnsProvider

SSHD = "/usr/sbin/sshd"
SSHD_MARKER = b"/run/ssh/sshd_config"
SSHD_READY_TIMEOUT = 10.0

SSHD_CONFIG = """# labctl: sshd of node {node} (lab {lab}); generated
ListenAddress {ip}:22
HostKey /run/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /run/ssh/authorized_keys
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
UseDNS no
PrintMotd no
Subsystem sftp internal-sftp
"""


def lab_ssh(provider: NetnsProvider) -> LabSSH:
    return LabSSH(provider.record.dir, provider.spec.name)


def targets(provider: NetnsProvider, nodes: list[str] | None = None) -> list[SSHTarget]:
    ssh = lab_ssh(provider)
    names = nodes if nodes is not None else [n.name for n in provider.spec.nodes]
    return [SSHTarget(n, str(provider.spec.node(n).ip), 22, "root", ssh.client_key) for n in names]


def prepare(provider: NetnsProvider) -> None:
    """The lab's keys, known_hosts (exact host key) and ssh_config, before any sshd starts."""
    ssh = lab_ssh(provider)
    ssh.ensure_client_key()
    ssh.ensure_host_key()
    all_targets = targets(provider)
    ssh.trust(all_targets, ssh.public_key(ssh.host_key))
    ssh.write_config(all_targets)


def _write_node_files(provider: NetnsProvider, node: str) -> None:
    ssh = lab_ssh(provider)
    run = provider.node_run(node)
    etc = run / "ssh"
    etc.mkdir(mode=0o755, parents=True, exist_ok=True)
    (run / "sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir, as Debian's sshd expects
    ip = provider.spec.node(node).ip
    (etc / "sshd_config").write_text(SSHD_CONFIG.format(node=node, lab=provider.spec.name, ip=ip))
    shutil.copyfile(ssh.host_key, etc / "ssh_host_ed25519_key")
    (etc / "ssh_host_ed25519_key").chmod(0o600)
    (etc / "authorized_keys").write_text(ssh.public_key(ssh.client_key) + "\n")
    (etc / "authorized_keys").chmod(0o600)


def sshd_pid(provider: NetnsProvider, node: str) -> int | None:
    pid = provider._read_pids(node).get("sshd")
    return pid if pid and provider._alive(pid, SSHD_MARKER) else None


def start_sshd(provider: NetnsProvider, node: str, holder: int, procs: str) -> None:
    """Start the node's sshd (unless it runs) and wait until it accepts connections on IP:22."""
    if not Path(SSHD).exists():
        raise LabError("--via ssh needs OpenSSH's server (apt-get install openssh-server)")
    if sshd_pid(provider, node) is None:
        if not lab_ssh(provider).host_key.exists():
            prepare(provider)
        _write_node_files(provider, node)
        pid = provider._spawn(
            procs,
            ["nsenter", "-t", str(holder), "--net", "--uts", "--mount", "--", SSHD, "-D", "-e",
             "-f", "/run/ssh/sshd_config"],
            provider.node_console(node),
        )
        provider._write_pids(node, {**provider._read_pids(node), "sshd": pid})
    ip = str(provider.spec.node(node).ip)
    deadline = time.monotonic() + SSHD_READY_TIMEOUT
    while True:
        try:
            with socket.create_connection((ip, 22), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise LabError(f"sshd on {node} did not listen on {ip}:22 within {SSHD_READY_TIMEOUT:.0f} s "
                               f"(see {provider.node_console(node)})") from None
            time.sleep(0.01)


def push_agents(provider: NetnsProvider, nodes: list[str] | None = None,
                progress: Progress = no_progress) -> list[push.PushResult]:
    """The SSH push to these nodes (all by default); returns once each agent answers /_ping."""
    spec = provider.spec
    chosen = targets(provider, nodes)
    services = {t.node: push.agent_service(spec, t.node) for t in chosen}
    return push.push(chosen, lab_ssh(provider).known_hosts, services, progress, connect_retry=5.0)
