"""Provider `vagrant`: each node is a VM (VirtualBox by default) made from the lab's rendered Vagrantfile.

The Vagrantfile lives in `$LABCTL_HOME/labs/<lab>/vagrant/` (Vagrant's own `.vagrant/` state beside it;
its output goes to `vagrant.log`). `up` runs one `vagrant up` for all machines, which Vagrant runs in
parallel where its provider allows it (libvirt does; VirtualBox boots one at a time). Each machine's SSH
endpoint is then read with `vagrant ssh-config NAME`, always per name (python-vagrant merges the hosts of
a multi-machine answer into one), recorded in `ssh/targets.json`, and the agent is pushed over SSH.
halt/start are `vagrant halt/up NAME`; kill and partitions work over SSH on the VM.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
from pathlib import Path
from typing import Any

from labctl import vagrantfile
from labctl.errors import LabError
from labctl.providers.base import Progress, no_progress
from labctl.providers.remote import RemoteProvider
from labctl.registry import lab_runtime_dir
from labctl.sshlab import SSHTarget

RUNNING = "running"


class VagrantProvider(RemoteProvider):
    @property
    def root(self) -> Path:
        return self.record.dir / "vagrant"

    def vagrant(self) -> Any:
        try:
            vagrant: Any = importlib.import_module("vagrant")
        except ImportError:
            raise LabError("provider vagrant needs python-vagrant (pip install python-vagrant)") from None
        if vagrant.get_vagrant_executable() is None:
            raise LabError("provider vagrant needs Vagrant and VirtualBox (apt-get install vagrant virtualbox)")
        self.root.mkdir(parents=True, exist_ok=True)
        log = vagrant.make_file_cm(str(self.root / "vagrant.log"))
        return vagrant.Vagrant(root=str(self.root), out_cm=log, err_cm=log)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import subprocess

        try:
            return fn(*args, **kwargs)
        except subprocess.CalledProcessError as e:
            raise LabError(f"vagrant {what} failed (exit {e.returncode}); see {self.root / 'vagrant.log'}") from None

    # ----- SSH endpoints ---------------------------------------------------------------------------------
    def _targets_file(self) -> Path:
        return self.ssh.dir / "targets.json"

    def targets(self) -> list[SSHTarget]:
        try:
            raw = json.loads(self._targets_file().read_text())
        except (OSError, ValueError):
            raise LabError(f"lab {self.spec.name!r} has no recorded VMs yet; bring it up with 'labctl up'") from None
        return [SSHTarget(r["node"], r["host"], int(r["port"]), r["user"], Path(r["key"])) for r in raw]

    def read_ssh_configs(self, v: Any, nodes: list[str]) -> list[SSHTarget]:
        """`vagrant ssh-config NAME` for each machine, merged into the recorded targets."""
        fresh = {}
        for name in nodes:
            conf = self._call(f"ssh-config {name}", v.conf, vm_name=name)
            try:
                fresh[name] = SSHTarget(name, conf["HostName"], int(conf.get("Port", 22)), conf["User"],
                                        Path(conf["IdentityFile"]))
            except (KeyError, ValueError):
                raise LabError(f"vagrant ssh-config {name}: unexpected answer {conf}") from None
        known = {}
        with contextlib.suppress(LabError):
            known = {t.node: t for t in self.targets()}
        known.update(fresh)
        ordered = [known[n.name] for n in self.spec.nodes if n.name in known]
        self.ssh.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._targets_file().write_text(json.dumps([{**t.__dict__, "key": str(t.key)} for t in ordered], indent=2))
        self.ssh.write_config(ordered)
        return ordered

    # ----- lifecycle -------------------------------------------------------------------------------------
    def write_vagrantfile(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "Vagrantfile"
        path.write_text(vagrantfile.render(self.spec))
        return path

    def create(self, progress: Progress = no_progress) -> None:
        try:
            self.write_vagrantfile()
            v = self.vagrant()
            progress("Vagrantfile rendered")
            self._call("up", v.up, provider=self.spec.vagrant_settings.provider)
            progress("VMs up")
            self.ssh.forget_all_hosts()  # new VMs, new host keys: accepted on first use below
            self.read_ssh_configs(v, [n.name for n in self.spec.nodes])
            self.push_agents(progress=progress, connect_retry=30.0)
            self.wait_agents([n.name for n in self.spec.nodes])
            progress("agents answer /_ping through SSH")
        except BaseException:
            self.destroy()
            raise

    def node_states(self) -> dict[str, str]:
        try:
            statuses = self._call("status", self.vagrant().status)
        except LabError:
            return {n.name: "halted" for n in self.spec.nodes}
        return {s.name: ("running" if s.state == RUNNING else "halted") for s in statuses}

    def start(self, node: str) -> None:
        self.spec.node(node)
        v = self.vagrant()
        if self.node_states().get(node) != "running":
            self._call(f"up {node}", v.up, vm_name=node, provider=self.spec.vagrant_settings.provider)
            self.read_ssh_configs(v, [node])  # the forwarded SSH port can change across boots
        self.push_agents([node], connect_retry=30.0)
        self.wait_agents([node])

    def halt(self, node: str) -> None:
        self.spec.node(node)
        self.stop_tunnel(node)
        self._call(f"halt {node}", self.vagrant().halt, vm_name=node)

    def destroy(self, progress: Progress = no_progress) -> list[str]:
        problems: list[str] = []
        self.stop_all_tunnels()
        if (self.root / "Vagrantfile").exists():
            try:
                self._call("destroy", self.vagrant().destroy)
            except LabError as e:
                problems.append(str(e))
        progress("VMs destroyed")
        shutil.rmtree(lab_runtime_dir(self.spec.name), ignore_errors=True)
        with contextlib.suppress(OSError):
            lab_runtime_dir(self.spec.name).parent.rmdir()
        if not problems:
            shutil.rmtree(self.record.dir, ignore_errors=True)
        progress("state removed")
        return problems
