"""`executor: docker` end to end without VMs. A netns node reached through its sshd (as `labctl up --via ssh`
builds it) plays an existing machine: it runs a real dockerd configured as the Vagrantfile configures one
(`labctl.dockerengine`: its own socket, data root under the node's disk, no bridge, no iptables), and a
second lab of provider `ssh` with `executor: docker` lists it as its machine.

The push refuses to switch the agent over while no engine answers, and changes nothing on the node then;
once the engine answers, `labctl up` of the ssh lab runs the agent with LABAGENT_EXECUTOR=docker and
LABAGENT_DOCKER_HOST and the docker SDK in its venv, a swarm service's task is a container of that engine,
wired onto the node's ingress bridge with the address the manager allocated and reached through the
routing mesh's published port, and on an overlay network a docker task reaches another service by name
(the mesh's DNS) and VIP; `labctl halt` kills the task containers and `labctl down` removes them.

dockerd runs inside the node's namespaces and cgroup, in pid and mount namespaces of its own
(`tests.privatedockerd`), with a cgroup parent and key file of its own (the only settings added to
`dockerengine.daemon_config()`, because a netns node shares the host's /etc and cgroup tree).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from labctl import dockerengine, push, registry, sshconn, wheelhouse
from labctl.errors import LabError
from labctl.providers import netns_sshd
from labctl.providers.netns import NetnsProvider
from labctl.providers.sshhost import SshProvider
from tests import privatedockerd
from tests.labfixtures import leftovers, unique_lab

pytestmark = pytest.mark.netns
LABCTL = str(Path(sys.executable).with_name("labctl"))
NODE = "manager1"
WEB = "mkdir -p /tmp/w && hostname > /tmp/w/index.html && exec httpd -f -p {port} -h /tmp/w"
"""busybox's httpd answering with the container's hostname (its short id)."""


@dataclass
class Lab:
    name: str
    env: dict[str, str]
    spec_file: Path
    engine: subprocess.Popen[bytes] | None = None
    tag: str = field(default_factory=lambda: f"lce-{uuid.uuid4().hex[:8]}")

    @property
    def ssh_lab(self) -> str:
        """The provider-ssh lab whose machine is this lab's node."""
        return f"{self.name}-ssh"

    def provider(self) -> NetnsProvider:
        return NetnsProvider(registry.load(self.name))

    def engine_url(self) -> str:
        """The node's engine socket as the host sees it (the node's /run is its private run dir)."""
        return f"unix://{self.provider().node_run(NODE)}{dockerengine.ENGINE_SOCKET.removeprefix('/run')}"

    def node(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.provider().exec_argv(NODE, list(argv)), capture_output=True, text=True,
                              timeout=timeout)

    def start_engine(self) -> None:
        p = self.provider()
        config = {
            **dockerengine.daemon_config(),
            "cgroup-parent": f"/{self.tag}",
            "exec-opts": ["native.cgroupdriver=cgroupfs"],
            "deprecated-key-path": f"/var/lib/docker/{self.tag}-key.json",  # 20.10 writes /etc/docker otherwise
            "log-level": "warn",
        }
        (p.node_disk(NODE) / f"{self.tag}.json").write_text(json.dumps(config))
        log = str(p.node_disk(NODE) / f"{self.tag}.log")
        self.engine = privatedockerd.spawn(["dockerd", "--config-file", f"/var/lib/docker/{self.tag}.json"], log,
                                           enter=p.exec_argv(NODE, ["env"]), own_net=False, run_tmpfs=False)
        privatedockerd.wait_ready(self.engine_url(), self.engine, log)

    def stop_engine(self, leaked: list[str]) -> None:
        if self.engine is not None:
            privatedockerd.stop(self.engine_url(), self.engine, self.tag, leaked, report_containers=False)
            self.engine = None
        privatedockerd.remove_cgroup_parent(self.tag, leaked)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    reason = privatedockerd.unavailable()
    if reason:
        pytest.skip(reason)
    name = unique_lab("pde")
    env = dict(os.environ, LABCTL_HOME=str(tmp_path / "home"))
    env.pop("DOCKER_HOST", None)
    monkeypatch.setenv("LABCTL_HOME", env["LABCTL_HOME"])
    spec_file = tmp_path / "lab.yaml"
    spec_file.write_text(f"name: {name}\nswarm: bare\nnodes:\n  - {{name: {NODE}, role: manager}}\n")
    handle = Lab(name, env, spec_file)
    leaked: list[str] = []
    try:
        yield handle
    finally:
        if handle.ssh_lab in registry.names():
            subprocess.run([LABCTL, "down", "--lab", handle.ssh_lab], env=env, capture_output=True, timeout=120)
        if name in registry.names():
            subprocess.run(handle.provider().exec_argv(NODE, [f"{push.AGENT_ROOT}/labagentctl", "stop"]),
                           capture_output=True, timeout=60)  # no agent left to replace removed tasks
        handle.stop_engine(leaked)
        subprocess.run([LABCTL, "down", "--lab", name], env=env, capture_output=True, timeout=120)
        assert leftovers(name, [NODE]) == [] and leaked == [], leaked
        assert handle.ssh_lab not in registry.names()


def _agent_environ(p: NetnsProvider) -> set[str]:
    pid = p.agent_pid(NODE)
    assert pid is not None
    return set(Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0"))


def _get(ip: str, port: int) -> str:
    conn = http.client.HTTPConnection(ip, port, timeout=3)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200, resp.status
        return resp.read().decode().strip()
    finally:
        conn.close()


def _task_containers(lab: Lab) -> list[dict[str, Any]]:
    api = privatedockerd.api(lab.engine_url())
    try:
        return list(api.containers(all=True, filters={"label": dockerengine.TASK_LABEL}))
    finally:
        api.close()


def test_an_ssh_lab_with_executor_docker_runs_its_tasks_on_the_machines_engine(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = subprocess.run([LABCTL, "up", "-f", str(lab.spec_file), "--via", "ssh"], env=lab.env, capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    p = lab.provider()
    target = netns_sshd.targets(p, [NODE])[0]
    known_hosts = netns_sshd.lab_ssh(p).known_hosts
    service = push.with_docker_engine(push.agent_service(p.spec, NODE))

    # No engine on the node yet: one clear error, and the node keeps its agent exactly as it was.
    before = p.agent_pid(NODE)
    with pytest.raises(LabError) as err:
        push.push([target], known_hosts, {NODE: service})
    assert str(err.value).startswith(
        f"{NODE}: executor: docker, but no Docker engine answers at unix:///run/docker-engine/docker.sock: "
        "nothing listens there (No such file or directory). The node needs dockerd running with "
        "/etc/labctl/docker-engine.json")
    assert p.agent_pid(NODE) == before
    assert not any(e.startswith("LABAGENT_EXECUTOR=") for e in _agent_environ(p))
    assert "LABAGENT_EXECUTOR" not in (p.node_disk(NODE) / ".labagent/agent.env").read_text()
    client = sshconn.connect(target, known_hosts)
    try:  # the agent's own socket speaks the same API, but it is no engine
        with pytest.raises(LabError, match=r"answers at unix:///run/docker\.sock: it is a labagent \(this project's"):
            push.check_engine(client, target, "unix:///run/docker.sock")
    finally:
        client.close()

    # The machine's engine answers: `labctl up` of an ssh lab with executor: docker switches the agent over.
    lab.start_engine()
    privatedockerd.import_busybox(lab.engine_url())
    ip = str(p.spec.node(NODE).ip)
    ssh_spec = tmp_path / "ssh-lab.yaml"
    ssh_spec.write_text(json.dumps({
        "name": lab.ssh_lab, "provider": "ssh", "executor": "docker", "swarm": "bare",
        "nodes": [{"name": NODE, "role": "manager",
                   "ssh": {"address": ip, "user": "root", "key": str(netns_sshd.lab_ssh(p).client_key)}}],
    }))
    up = subprocess.run([LABCTL, "up", "-f", str(ssh_spec)], env=lab.env, capture_output=True, text=True, timeout=240)
    assert up.returncode == 0, up.stdout + up.stderr
    assert p.agent_pid(NODE) != before
    environ = _agent_environ(p)
    assert {"LABAGENT_EXECUTOR=docker", "LABAGENT_DOCKER_HOST=unix:///run/docker-engine/docker.sock"} <= environ
    assert list((p.node_disk(NODE) / ".labagent/venv/lib").glob("python3*/site-packages/docker/__init__.py"))
    ssh_lab = SshProvider(registry.load(lab.ssh_lab))
    built = wheelhouse.project_wheel()  # pinned: sources edited meanwhile would rightly upgrade the node
    monkeypatch.setattr(wheelhouse, "project_wheel", lambda: built)
    ssh_lab.push_agents()
    [again] = ssh_lab.push_agents()
    assert not again.uploaded and not again.restarted

    # A swarm service: its task is a container of the node's engine, reached through the routing mesh.
    init = lab.node("docker", "swarm", "init", "--advertise-addr", ip)
    assert init.returncode == 0, init.stderr
    made = lab.node("docker", "service", "create", "--detach", "--name", "web", "--publish", "8080:8080",
                    "busybox", "sh", "-c", WEB.format(port=8080))
    assert made.returncode == 0, made.stderr
    answer, deadline = "", time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            answer = _get(ip, 8080)
            break
        except (OSError, AssertionError, http.client.HTTPException):
            time.sleep(0.3)
    assert answer, lab.node("docker", "service", "ps", "--no-trunc", "web").stdout
    api = privatedockerd.api(lab.engine_url())
    try:
        [row] = api.containers(filters={"label": "com.docker.swarm.service.name=web"})
        assert row["Id"][:12] == answer  # the published port reached the engine's container
        info = api.inspect_container(row["Id"])
        assert info["HostConfig"]["NetworkMode"] == "none"
        task_id = info["Config"]["Labels"]["com.docker.swarm.task.id"]
        run = api.exec_create(row["Id"], ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
        inside = api.exec_start(run["Id"]).decode()
    finally:
        api.close()
    shown = lab.node("docker", "inspect", "--type", "task", "--format", "{{json .NetworksAttachments}}", task_id)
    assert shown.returncode == 0, shown.stderr
    [ingress] = json.loads(shown.stdout)  # a published port, no other network: the ingress network only
    assert f"inet {ingress['Addresses'][0]} " in inside, (ingress, inside)  # the address the manager allocated

    # On an overlay network, a docker task finds another service by name (the mesh's DNS on the network's
    # gateway) and reaches it through its VIP. (Another port than web's: the mesh sends connections to a VIP
    # on a port some service publishes to the published service, since VIPs are local addresses of the node.)
    for argv in (["network", "create", "--driver", "overlay", "appnet"],
                 ["service", "create", "--detach", "--name", "api", "--network", "appnet", "busybox", "sh", "-c",
                  WEB.format(port=8081)],
                 ["service", "create", "--detach", "--name", "probe", "--network", "appnet", "busybox", "sh", "-c",
                  "until wget -q -O - http://api:8081/; do sleep 0.2; done; exec sleep 3600"]):
        made = lab.node("docker", *argv)
        assert made.returncode == 0, made.stderr
    heard, deadline, answer = "", time.monotonic() + 60, "(no api task yet)"
    api = privatedockerd.api(lab.engine_url())
    try:
        while answer not in heard and time.monotonic() < deadline:
            time.sleep(0.3)
            for c in api.containers(filters={"label": "com.docker.swarm.service.name=api"}):
                answer = c["Id"][:12]
            for c in api.containers(filters={"label": "com.docker.swarm.service.name=probe"}):
                heard = api.logs(c["Id"]).decode()
        if answer not in heard:  # say what the task saw
            for c in api.containers(filters={"label": "com.docker.swarm.service.name=probe"}):
                script = "cat /etc/resolv.conf; nslookup api; ip -o -4 addr; ip route"
                run = api.exec_create(c["Id"], ["sh", "-c", script])
                heard += api.exec_start(run["Id"]).decode()
    finally:
        api.close()
    assert answer in heard, heard
    log = (p.node_disk(NODE) / "labagent.log").read_text()
    assert "task executor: docker (LABAGENT_EXECUTOR=docker)" in log

    # halt ends the tasks with the agent (they live in dockerd's cgroup, not the agent's); down removes them.
    halted = subprocess.run([LABCTL, "halt", "--lab", lab.ssh_lab, NODE], env=lab.env, capture_output=True,
                            text=True, timeout=120)
    assert halted.returncode == 0, halted.stdout + halted.stderr
    assert p.agent_pid(NODE) is None
    assert sorted(c["State"] for c in _task_containers(lab)) == ["exited"] * 3  # web, api, probe
    down = subprocess.run([LABCTL, "down", "--lab", lab.ssh_lab], env=lab.env, capture_output=True, text=True,
                          timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _task_containers(lab) == []
    assert not (p.node_disk(NODE) / ".labagent").exists()
