"""``docker exec``, attached ``docker run`` (``--rm``, ``-i``, ``-it``), ``docker start [-a]`` and ``docker
restart`` with the real docker CLI and SDK against netns labs, where containers run with the real process
executor in their own namespaces.

* a one-node bare lab: standalone containers (exit codes, stdin, a pty, logs across runs, the exec'd
  process inside the container's network, UTS, mount namespaces and cgroup; ``redis-cli`` reaching the
  redis container's own loopback; a killed and restarted agent keeps ids, consoles and runs);
* a formed two-node swarm: ``docker exec`` into a service task sees ``/run/secrets/<name>`` with the
  secret's content, a task of another service without the secret does not; the docker SDK's
  ``exec_run`` as the grader's ``secret.readable`` check calls it.

Interactive commands run on a pseudo-terminal (`tests.ptyrun`). The labs are destroyed with a leak check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import docker
import pytest

from tests.labfixtures import DockerNode as Node
from tests.labfixtures import LabHandle, eventually, lab_home, unique_lab
from tests.ptyrun import run_on_pty

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker client binary is not installed"),
]


def _env(node: Node) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_HOST"] = node.docker_host
    return env


def _stdin(node: Node, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], env=_env(node), input=text, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    home = lab_home(tmp_path_factory.mktemp("exa"))
    next(home)
    lab = LabHandle({"name": unique_lab("exa"), "swarm": "bare", "nodes": [{"name": "node1", "role": "manager"}]})
    try:
        lab.up()
        yield lab
    finally:
        lab.destroy_and_check()
        next(home, None)


@pytest.fixture(scope="module")
def node(bare: LabHandle) -> Node:
    n = bare.record.spec.nodes[0]
    return Node(bare.provider.docker_host(n.name), str(n.ip), n.name)


def test_attached_run_exit_codes_stdin_and_rm(node: Node) -> None:
    assert node.docker("run", "--rm", "alpine", "echo", "hi").stdout == "hi\n"
    four = node.docker("run", "--rm", "alpine", "sh", "-c", "echo out; echo err >&2; exit 4", check=False)
    assert (four.returncode, four.stdout, four.stderr) == (4, "out\n", "err\n")
    piped = _stdin(node, "one\ntwo\n", "run", "-i", "--rm", "alpine", "sh", "-c", "cat; echo done")
    assert (piped.returncode, piped.stdout) == (0, "one\ntwo\ndone\n"), piped.stderr
    missing = node.docker("run", "--rm", "alpine", "no-such-command", check=False)
    assert missing.returncode == 127 and "executable file not found" in missing.stderr
    assert node.docker("ps", "-aq").stdout == ""


def test_run_it_start_ai_exec_it(node: Node) -> None:
    res = run_on_pty(["docker", "run", "-it", "--name", "term", "alpine", "sh"], _env(node),
                     [(None, "stty size; hostname; echo $((6*7)); tty\n"), ("42", "exit 3\n")], rows=33, cols=101)
    assert not res.timed_out and res.code == 3, res.text
    cid = json.loads(node.docker("inspect", "term").stdout)[0]["Id"]
    assert "33 101" in res.text and cid[:12] in res.text and "/dev/pts/" in res.text, res.text
    again = run_on_pty(["docker", "start", "-ai", "term"], _env(node), [(None, "echo again-$((1+1))\n"), ("again-2", "exit 2\n")])
    assert not again.timed_out and again.code == 2, again.text
    node.docker("rm", "term")

    node.docker("run", "-d", "--name", "box", "alpine", "sleep", "300")
    res = run_on_pty(["docker", "exec", "-it", "box", "sh"], _env(node),
                     [(None, "stty size; echo in-$((2*3))\n"), ("in-6", "exit 5\n")], rows=40, cols=120)
    assert not res.timed_out and res.code == 5 and "40 120" in res.text, res.text
    node.docker("rm", "-f", "box")


def test_exec_is_inside_the_container(node: Node) -> None:
    cid = node.docker("run", "-d", "--name", "inside", "-e", "MARK=here", "alpine", "sleep", "300").stdout.strip()
    assert node.docker("exec", "inside", "hostname").stdout == f"{cid[:12]}\n"  # its UTS namespace
    ip = json.loads(node.docker("inspect", "inside").stdout)[0]["NetworkSettings"]["IPAddress"]
    assert ip.startswith("172.17.")
    assert f"inet {ip}/" in node.docker("exec", "inside", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert node.docker("exec", "inside", "ls", "-A", "/run").stdout == "secrets\n"  # its own /run
    assert node.docker("exec", "inside", "sh", "-c", "echo $MARK; pwd").stdout == "here\n/\n"
    cgroup = node.docker("exec", "inside", "cat", "/proc/self/cgroup").stdout
    assert re.search(rf"^0::/\S*/tasks/{cid}$", cgroup, re.M), cgroup
    assert node.docker("exec", "inside", "sh", "-c", "exit 3", check=False).returncode == 3
    assert _stdin(node, "via stdin\n", "exec", "-i", "inside", "cat").stdout == "via stdin\n"

    client = docker.DockerClient(base_url=node.docker_host, version="1.45", timeout=30)
    try:
        result = client.containers.get("inside").exec_run(["sh", "-c", "echo $HOSTNAME"])
        assert (result.exit_code, result.output) == (0, f"{cid[:12]}\n".encode())
    finally:
        client.close()

    node.docker("stop", "-t", "1", "inside")
    stopped = node.docker("exec", "inside", "true", check=False)
    assert stopped.returncode == 1 and f"Container {cid} is not running" in stopped.stderr
    node.docker("rm", "inside")


def test_start_restart_logs_and_redis_cli(node: Node) -> None:
    node.docker("run", "--name", "runs", "alpine", "sh", "-c", "echo run $HOSTNAME")
    cid = json.loads(node.docker("inspect", "runs").stdout)[0]["Id"]
    assert node.docker("start", "-a", "runs").stdout == f"run {cid[:12]}\n"
    assert node.docker("start", "runs").stdout == "runs\n"
    node.docker("wait", "runs")
    assert node.docker("logs", "runs").stdout == f"run {cid[:12]}\n" * 3  # every run's output
    assert json.loads(node.docker("inspect", "runs").stdout)[0]["Id"] == cid
    node.docker("rm", "runs")

    node.docker("run", "-d", "--name", "cache", "redis")
    eventually(lambda: node.docker("exec", "cache", "redis-cli", "ping", check=False).stdout == "PONG\n",
               what="redis-cli ping inside the container")
    pid = json.loads(node.docker("inspect", "cache").stdout)[0]["State"]["Pid"]
    assert node.docker("restart", "-t", "1", "cache").stdout == "cache\n"
    state = json.loads(node.docker("inspect", "cache").stdout)[0]["State"]
    assert state["Running"] is True and state["Pid"] != pid
    eventually(lambda: node.docker("exec", "cache", "redis-cli", "ping", check=False).stdout == "PONG\n",
               what="redis after the restart")
    node.docker("rm", "-f", "cache")


def test_a_restarted_agent_keeps_consoles_and_runs(bare: LabHandle, node: Node) -> None:
    node.docker("run", "-dit", "--name", "keep", "alpine", "sh")
    node.docker("run", "-d", "--name", "plainkeep", "alpine", "sleep", "300")
    node.docker("run", "--name", "donekeep", "alpine", "echo", "once more")
    node.docker("start", "-a", "donekeep")  # its second run: a new executor container, same id
    before = _ids(node)
    assert set(before) == {"keep", "plainkeep", "donekeep"}
    bare.provider.kill("node1")  # the agent dies; containers keep running, as after a dockerd crash
    bare.provider.start("node1")
    assert _ids(node) == before
    assert node.docker("exec", "plainkeep", "hostname").stdout == f"{before['plainkeep'][:12]}\n"
    res = run_on_pty(["docker", "attach", "keep"], _env(node), [(None, "\n"), ("#", "echo still-$((5*5))\n"),
                                                               ("still-25", "exit 6\n")])
    assert not res.timed_out and res.code == 6 and "still-25" in res.text, res.text
    assert node.docker("start", "-a", "donekeep").stdout == "once more\n"
    assert node.docker("logs", "donekeep").stdout == "once more\n" * 3
    node.docker("rm", "-f", "keep", "plainkeep", "donekeep")


def _ids(node: Node) -> dict[str, str]:
    out = node.docker("ps", "-a", "--no-trunc", "--format", "{{.Names}} {{.ID}}").stdout
    return dict(line.split() for line in out.splitlines() if line)


# ------------------------------------------------------------------------------------------- swarm


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    home = lab_home(tmp_path_factory.mktemp("exs"))
    next(home)
    lab = LabHandle({
        "name": unique_lab("exs"), "swarm": "bare",
        "nodes": [{"name": "manager1", "role": "manager"}, {"name": "worker1", "role": "worker"}],
    })
    try:
        record = lab.up()
        members = [Node(lab.provider.docker_host(n.name), str(n.ip), n.name) for n in record.spec.nodes]
        manager, worker = members
        manager.docker("swarm", "init", "--advertise-addr", manager.ip)
        token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        worker.docker("swarm", "join", "--token", token, f"{manager.ip}:2377")
        eventually(lambda: manager.docker("node", "ls", check=False).stdout.count("Ready") == 2, what="2 ready nodes")
        yield members
    finally:
        lab.destroy_and_check()
        next(home, None)


def _task_container(members: list[Node], service: str) -> tuple[Node, str]:
    found: list[tuple[Node, str]] = []

    def look() -> bool:
        found.clear()
        for m in members:
            for cid in m.docker("ps", "-q", "--no-trunc", "--filter", f"name={service}.", check=False).stdout.split():
                found.append((m, cid))
        return len(found) == 1

    eventually(look, timeout=60, what=f"{service}'s running task")
    return found[0]


def test_exec_into_service_tasks_sees_only_its_secrets(swarm: list[Node]) -> None:
    manager = swarm[0]
    made = _stdin(manager, "s3cr3t-value", "secret", "create", "dbpass", "-")
    assert made.returncode == 0, made.stderr
    manager.docker("service", "create", "-d", "--name", "withsecret", "--secret", "dbpass", "alpine", "sleep", "600")
    manager.docker("service", "create", "-d", "--name", "plain", "alpine", "sleep", "600")
    where, cid = _task_container(swarm, "withsecret")
    other, plain = _task_container(swarm, "plain")

    assert where.docker("exec", cid[:12], "cat", "/run/secrets/dbpass").stdout == "s3cr3t-value"
    assert where.docker("exec", cid[:12], "ls", "-A", "/run/secrets").stdout == "dbpass\n"
    assert where.docker("exec", cid[:12], "hostname").stdout == f"{cid[:12]}\n"
    assert other.docker("exec", plain[:12], "ls", "-A", "/run/secrets").stdout == ""
    denied = other.docker("exec", plain[:12], "cat", "/run/secrets/dbpass", check=False)
    assert denied.returncode == 1 and "No such file or directory" in denied.stderr

    client = docker.DockerClient(base_url=where.docker_host, version="1.45", timeout=30)
    try:
        result = client.containers.get(cid).exec_run(["cat", "/run/secrets/dbpass"])  # as taskexec.py does
        assert (result.exit_code, result.output) == (0, b"s3cr3t-value")
    finally:
        client.close()
    res = run_on_pty(["docker", "exec", "-it", cid[:12], "sh"], _env(where),
                     [(None, "cat /run/secrets/dbpass; echo; echo done-$((1+2))\n"), ("done-3", "exit\n")])
    assert not res.timed_out and res.code == 0 and "s3cr3t-value" in res.text, res.text
    manager.docker("service", "rm", "withsecret", "plain")
