"""Attached ``docker run``, ``docker start [-a]``, ``docker restart``, ``--rm`` and ``wait`` conditions, and
``docker exec`` into standalone containers, on an in-process agent with the real docker CLI and SDK.

Containers run as plain host processes (`hostexec.HostProcessExecutor`), behind the real console program
(`agents.worker.console`) where Docker would attach; the same flows on a netns lab's real executor are in
tests/integration/test_docker_exec_attach.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from agents.worker.standalone import StandaloneContainers
from tests.ptyrun import run_on_pty

from .agentserver import ServerThread, http_request, make_ctx
from .hijackclient import open_hijacked, read_all, read_frames, stream_text
from .hostexec import HostProcessExecutor

pytestmark = pytest.mark.timeout(180)


class Agent:
    def __init__(self, root: Path) -> None:
        self.root = root
        ctx = make_ctx(root)
        self.executor = HostProcessExecutor()
        self.owner = StandaloneContainers(str(ctx.config.state_dir), self.executor)
        ctx.standalone = self.owner  # type: ignore[attr-defined]
        self.server = ServerThread(ctx).start()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env.update(HOME=str(root), DOCKER_CONFIG=str(root / "cfg"), DOCKER_HOST=f"unix://{self.server.sock}")

    def docker(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["docker", *args], env=self.env, input=input, capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {p.returncode}\n{p.stdout}{p.stderr}")
        return p

    def api(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        r = http_request(self.server.sock, method, path, None if body is None else json.dumps(body).encode(),
                         {"Content-Type": "application/json"})
        return r.status, (json.loads(r.body) if r.body.strip() else None)

    def stop(self) -> None:
        self.server.ctx.standalone = None  # type: ignore[attr-defined]
        self.server.stop()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = Agent(tmp_path_factory.mktemp("att"))
    try:
        a.docker("pull", "alpine")
        yield a
    finally:
        for cid in a.docker("ps", "-aq", check=False).stdout.split():
            a.docker("rm", "-f", cid, check=False)
        a.stop()


def test_attached_run_exit_codes_stdin_and_rm(agent: Agent) -> None:
    hi = agent.docker("run", "--rm", "alpine", "echo", "hi")
    assert hi.stdout == "hi\n"
    four = agent.docker("run", "--name", "four", "alpine", "sh", "-c", "echo out; echo err >&2; exit 4", check=False)
    assert (four.returncode, four.stdout, four.stderr) == (4, "out\n", "err\n")
    assert "Exited (4)" in agent.docker("ps", "-a", "--filter", "name=four").stdout
    piped = agent.docker("run", "-i", "--rm", "alpine", "sh", "-c", "cat; echo done", input="one\ntwo\n")
    assert piped.stdout == "one\ntwo\ndone\n"
    missing = agent.docker("run", "--rm", "alpine", "no-such-command", check=False)
    assert missing.returncode == 127 and "executable file not found" in missing.stderr
    agent.docker("rm", "four")
    assert agent.docker("ps", "-aq").stdout == ""  # --rm removed the others (also the failed one)


def test_run_it_start_ai_and_exec_it_on_a_pty(agent: Agent) -> None:
    res = run_on_pty(["docker", "run", "-it", "--name", "term", "alpine", "sh"], agent.env,
                     [(None, "stty size; echo $((6*7)); tty\n"), ("42", "exit 3\n")], rows=33, cols=101)
    assert not res.timed_out and res.code == 3, res.text
    assert "33 101" in res.text and "/dev/pts/" in res.text
    info = json.loads(agent.docker("inspect", "term").stdout)[0]
    assert info["Config"]["Tty"] is True and info["Config"]["OpenStdin"] is True
    again = run_on_pty(["docker", "start", "-ai", "term"], agent.env,
                       [(None, "echo again-$((1+1))\n"), ("again-2", "exit 2\n")])
    assert not again.timed_out and again.code == 2, again.text
    assert json.loads(agent.docker("inspect", "term").stdout)[0]["Id"] == info["Id"]
    agent.docker("rm", "term")

    agent.docker("run", "-d", "--name", "bg", "alpine", "sleep", "60")
    res = run_on_pty(["docker", "exec", "-it", "bg", "sh"], agent.env,
                     [(None, "echo in-$((2*3))\n"), ("in-6", "exit 5\n")])
    assert not res.timed_out and res.code == 5, res.text
    agent.docker("rm", "-f", "bg")


def test_start_restart_keep_the_container(agent: Agent) -> None:
    agent.docker("run", "--name", "once", "alpine", "sh", "-c", "echo run $HOSTNAME")
    cid = json.loads(agent.docker("inspect", "once").stdout)[0]["Id"]
    assert agent.docker("start", "-a", "once").stdout == f"run {cid[:12]}\n"
    assert agent.docker("start", "once").stdout == "once\n"
    agent.docker("wait", "once")
    assert json.loads(agent.docker("inspect", "once").stdout)[0]["Id"] == cid
    agent.docker("rm", "once")

    agent.docker("run", "-d", "--name", "svc", "alpine", "sleep", "60")
    first = json.loads(agent.docker("inspect", "svc").stdout)[0]["State"]["Pid"]
    assert agent.docker("restart", "-t", "1", "svc").stdout == "svc\n"
    state = json.loads(agent.docker("inspect", "svc").stdout)[0]["State"]
    assert state["Running"] is True and state["Pid"] != first
    agent.docker("stop", "-t", "1", "svc")
    assert agent.docker("start", "svc").stdout == "svc\n"
    assert json.loads(agent.docker("inspect", "svc").stdout)[0]["State"]["Running"] is True
    agent.docker("rm", "-f", "svc")


def test_wait_next_exit_across_a_restart_and_removed(agent: Agent) -> None:
    agent.docker("run", "--name", "waiter", "alpine", "sh", "-c", "exit 3", check=False)
    result: dict[str, object] = {}

    def wait(condition: str) -> None:
        result[condition] = agent.api("POST", f"/containers/waiter/wait?condition={condition}")

    assert agent.api("POST", "/containers/waiter/wait?condition=not-running") == (200, {"StatusCode": 3, "Error": None})
    waiter = threading.Thread(target=wait, args=("next-exit",))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # exited: next-exit is the next run's exit
    assert agent.api("POST", "/containers/waiter/start")[0] == 204
    waiter.join(20)
    assert result["next-exit"] == (200, {"StatusCode": 3, "Error": None})
    remover = threading.Thread(target=wait, args=("removed",))
    remover.start()
    remover.join(0.3)
    assert remover.is_alive()
    agent.docker("rm", "waiter")
    remover.join(20)
    assert result["removed"] == (200, {"StatusCode": 3, "Error": None})


def test_attach_wire_protocol(agent: Agent) -> None:
    status, body = agent.api("POST", "/containers/create?name=cat", {
        "Image": "alpine", "Cmd": ["sh", "-c", "cat; echo bye >&2"], "OpenStdin": True, "StdinOnce": True,
        "AttachStdin": True, "AttachStdout": True, "AttachStderr": True,
    })
    assert status == 201, body
    head, s, rest = open_hijacked(agent.server.sock, "/v1.45/containers/cat/attach?stream=1&stdin=1&stdout=1&stderr=1")
    try:
        assert head.startswith("HTTP/1.1 101 UPGRADED") and "multiplexed-stream" in head, head
        assert agent.api("POST", "/containers/cat/start")[0] == 204
        s.sendall(b"through stdin\n")
        s.shutdown(1)  # stdin's EOF; StdinOnce closes the program's stdin
        frames = read_frames(read_all(s, rest))
    finally:
        s.close()
    assert stream_text(frames, 1) == b"through stdin\n" and stream_text(frames, 2) == b"bye\n"
    assert agent.api("POST", "/containers/cat/wait")[1] == {"StatusCode": 0, "Error": None}
    # logs=1 replays, stream=0 ends at once; a not-running container's attach waits for nothing then.
    head, s, rest = open_hijacked(agent.server.sock, "/containers/cat/attach?logs=1&stdout=1&stderr=1")
    try:
        frames = read_frames(read_all(s, rest))
    finally:
        s.close()
    assert stream_text(frames, 1).startswith(b"through stdin\n")  # (the stand-in logs stderr as stdout)
    assert agent.api("POST", "/containers/nope/attach?stream=1") == (404, {"message": "No such container: nope"})
    agent.docker("rm", "cat")


def test_exec_into_standalone_and_its_end(agent: Agent) -> None:
    agent.docker("run", "-d", "--name", "host", "-e", "MARK=standalone", "alpine", "sleep", "60")
    assert agent.docker("exec", "host", "sh", "-c", "echo $MARK").stdout == "standalone\n"
    status, body = agent.api("POST", "/containers/host/exec", {"Cmd": ["sleep", "60"]})
    assert status == 201 and isinstance(body, dict)
    eid = body["Id"]
    assert agent.api("POST", f"/exec/{eid}/start", {"Detach": True})[0] == 200
    pid = agent.api("GET", f"/exec/{eid}/json")[1]["Pid"]  # type: ignore[index]
    agent.docker("stop", "-t", "1", "host")  # an exec's processes end with their container
    info = agent.api("GET", f"/exec/{eid}/json")[1]
    for _ in range(100):
        info = agent.api("GET", f"/exec/{eid}/json")[1]
        if not info["Running"]:  # type: ignore[index]
            break
        threading.Event().wait(0.05)
    assert info["Running"] is False and info["ExitCode"] == 137, info  # type: ignore[index]
    assert not agent.executor.pid_alive(pid)
    cid = json.loads(agent.docker("inspect", "host").stdout)[0]["Id"]
    stopped = agent.docker("exec", "host", "true", check=False)
    assert stopped.returncode != 0 and f"Container {cid} is not running" in stopped.stderr
    assert agent.api("POST", "/containers/host/exec", {"Cmd": ["true"]}) == (
        409, {"message": f"Container {cid} is not running"})
    agent.docker("rm", "host")


def test_docker_sdk_run_and_exec(agent: Agent) -> None:
    client = docker.DockerClient(base_url=agent.env["DOCKER_HOST"], version="1.45", timeout=30)
    try:
        assert client.containers.run("alpine", ["sh", "-c", "echo from-sdk"], remove=True) == b"from-sdk\n"
        c = client.containers.run("alpine", ["sleep", "60"], detach=True, name="sdk")
        assert c.exec_run(["sh", "-c", "echo $HOSTNAME"]).output == f"{c.id[:12]}\n".encode()
        c.remove(force=True)
    finally:
        client.close()
