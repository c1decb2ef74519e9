"""Provider `ssh`: existing machines (lab PCs, cloud VMs) listed in the spec with address, user and key.

labctl does not own these machines: `up` pushes the agent, `down` stops it and removes what the push
installed (`/var/lib/docker/.labagent`, the `labagent` unit), leaving the rest of the machine alone.
`halt` stops the agent service (a machine someone else owns is not powered off) and `start` pushes again.
With `executor: docker` the tasks are containers of the machine's own dockerd, which labctl does not install
(`labctl.dockerengine` says how it must run): `halt` kills them, `down` removes them.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
from pathlib import Path

from labctl import dockerengine, push
from labctl.errors import LabError
from labctl.providers.base import Progress, no_progress
from labctl.providers.remote import RemoteProvider
from labctl.registry import lab_runtime_dir
from labctl.sshlab import SSHTarget

UNINSTALL = (
    f"{push.AGENT_ROOT}/labagentctl stop; "
    "if [ -d /run/systemd/system ]; then systemctl disable --quiet labagent.service; "
    "rm -f /etc/systemd/system/labagent.service; systemctl daemon-reload; fi; "
    f"rm -rf {push.AGENT_ROOT}"
)


def uninstall_command(executor: str) -> str:
    """What `down` runs on each machine; with `executor: docker` the agent's task containers go first (they
    live in the machine's dockerd, not in the agent's cgroup)."""
    if executor != "docker":
        return UNINSTALL
    return f"{push.AGENT_ROOT}/labagentctl stop; {dockerengine.tasks_command('remove')}; {UNINSTALL}"


class SshProvider(RemoteProvider):
    def targets(self) -> list[SSHTarget]:
        out = []
        for n in self.spec.nodes:
            assert n.ssh is not None  # the spec requires it for provider ssh
            key = Path(n.ssh.key).expanduser() if n.ssh.key else self.ssh.client_key
            out.append(SSHTarget(n.name, n.ssh.address, n.ssh.port, n.ssh.user, key))
        return out

    def create(self, progress: Progress = no_progress) -> None:
        try:
            self.ssh.ensure_client_key()
            for t in self.targets():
                if not t.key.exists():
                    raise LabError(f"{t.node}: key {t.key} does not exist")
            self.ssh.write_config(self.targets())
            self.push_agents(progress=progress)
            self.wait_agents([n.name for n in self.spec.nodes])
            progress("agents answer /_ping through SSH")
        except BaseException:
            self.destroy()
            raise

    def start(self, node: str) -> None:
        self.push_agents([node])
        self.wait_agents([node])

    def halt(self, node: str) -> None:
        """Stop the agent; its tasks end with it (process tasks are in its cgroup, docker tasks are killed)."""
        self.stop_tunnel(node)
        self.remote(node, push.agent_command(self.target(node), "stop"), "stopping the agent")
        if self.spec.executor == "docker":
            t = self.target(node)
            cmd = dockerengine.tasks_command("kill")
            self.remote(node, cmd if t.user == "root" else f"sudo -n sh -c {shlex.quote(cmd)}", "stopping the tasks")

    def destroy(self, progress: Progress = no_progress) -> list[str]:
        problems: list[str] = []
        self.stop_all_tunnels()
        for t in self.targets():
            try:
                uninstall = uninstall_command(self.spec.executor)
                cmd = uninstall if t.user == "root" else f"sudo -n sh -c {shlex.quote(uninstall)}"
                self.remote(t.node, cmd, "removing the agent", timeout=30)
            except LabError as e:
                problems.append(str(e))
        progress("agents removed")
        shutil.rmtree(lab_runtime_dir(self.spec.name), ignore_errors=True)
        with contextlib.suppress(OSError):
            lab_runtime_dir(self.spec.name).parent.rmdir()
        shutil.rmtree(self.record.dir, ignore_errors=True)
        progress("state removed")
        return problems
