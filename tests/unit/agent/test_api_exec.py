"""``docker exec`` against a swarm task's container on an in-process node (`swarmharness`): the wire
protocol byte for byte (101 head, multiplexed frames, half-close as stdin EOF, a pty with resize), the
error answers (Docker's texts, never a 5xx), and the real docker CLI and SDK.

The stand-in executor runs tasks as plain processes in the test's namespaces, so the exec'd process
enters those same namespaces here; entering a task's own namespaces is tested on netns labs
(tests/integration/test_docker_exec_attach.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.ptyrun import run_on_pty

from .agentserver import http_request
from .hijackclient import open_hijacked, read_all, read_frames, read_until, stream_text
from .swarmharness import InProcessNode, loopback_subnet

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def node() -> Iterator[InProcessNode]:
    root = Path(tempfile.mkdtemp(prefix="la-exe-"))  # short: unix socket paths are limited
    n = InProcessNode(root / "m1", "manager1", loopback_subnet() + ".1")
    try:
        n.init()
        yield n
    finally:
        n.stop()
        shutil.rmtree(root, ignore_errors=True)


def _post(node: InProcessNode, path: str, body: object = None) -> tuple[int, object]:
    r = http_request(node.sock, "POST", path, None if body is None else json.dumps(body).encode(),
                     {"Content-Type": "application/json"})
    return r.status, (json.loads(r.body) if r.body.strip() else None)


def _get(node: InProcessNode, path: str) -> tuple[int, object]:
    r = http_request(node.sock, "GET", path)
    return r.status, json.loads(r.body)


@pytest.fixture(scope="module")
def task_cid(node: InProcessNode) -> str:
    status, _ = _post(node, "/services/create", {
        "Name": "sleeper", "TaskTemplate": {"ContainerSpec": {"Image": "alpine", "Command": ["sleep", "1000"],
                                                              "Env": ["GREETING=hello"]}},
    })
    assert status == 201
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, rows = _get(node, "/containers/json")
        assert isinstance(rows, list)
        if rows:
            return str(rows[0]["Id"])
        time.sleep(0.2)
    raise AssertionError("the service's task never ran")


def _create_exec(node: InProcessNode, cid: str, **config: object) -> str:
    status, body = _post(node, f"/containers/{cid}/exec", {"AttachStdout": True, "AttachStderr": True, **config})
    assert status == 201, body
    assert isinstance(body, dict)
    return str(body["Id"])


def test_exec_stream_is_docker_s_multiplexed_hijack(node: InProcessNode, task_cid: str) -> None:
    eid = _create_exec(node, task_cid, AttachStdin=True, Cmd=["sh", "-c", "cat; echo err >&2; echo $GREETING; exit 3"])
    status, info = _get(node, f"/exec/{eid}/json")
    assert status == 200 and isinstance(info, dict)
    assert info["Running"] is False and info["ExitCode"] is None and info["ContainerID"] == task_cid
    head, s, rest = open_hijacked(node.sock, f"/v1.45/exec/{eid}/start", {"Detach": False, "Tty": False})
    try:
        assert head.startswith("HTTP/1.1 101 UPGRADED"), head
        assert "Content-Type: application/vnd.docker.multiplexed-stream" in head
        assert "Upgrade: tcp" in head and "Connection: Upgrade" in head
        s.sendall(b"line one\nline two\n")
        s.shutdown(socket.SHUT_WR)  # the CLI's CloseWrite at stdin's end: output must keep flowing
        frames = read_frames(read_all(s, rest))
    finally:
        s.close()
    assert stream_text(frames, 1) == b"line one\nline two\nhello\n"
    assert stream_text(frames, 2) == b"err\n"
    status, info = _get(node, f"/exec/{eid}/json")
    assert isinstance(info, dict)
    assert info["Running"] is False and info["ExitCode"] == 3 and info["Pid"] > 0
    assert info["ProcessConfig"] == {"tty": False, "entrypoint": "sh", "privileged": False, "user": "",
                                     "arguments": ["-c", "cat; echo err >&2; echo $GREETING; exit 3"]}
    assert info["OpenStdin"] is True and info["OpenStdout"] is True
    status, body = _post(node, f"/exec/{eid}/start", {})
    assert status == 409 and body == {"message": f"Error: Exec command {eid} has already run"}


def test_exec_without_upgrade_headers_answers_200_raw(node: InProcessNode, task_cid: str) -> None:
    eid = _create_exec(node, task_cid, Cmd=["echo", "plain"])
    head, s, rest = open_hijacked(node.sock, f"/exec/{eid}/start", {}, upgrade=False)
    try:
        assert head.startswith("HTTP/1.1 200 OK"), head
        assert "Transfer-Encoding" not in head and "Content-Length" not in head
        assert read_frames(read_all(s, rest)) == [(1, b"plain\n")]
    finally:
        s.close()


def test_exec_tty_is_a_pty_with_resize(node: InProcessNode, task_cid: str) -> None:
    eid = _create_exec(node, task_cid, AttachStdin=True, Tty=True, Cmd=["sh"], Env=["PS1=$ "])
    head, s, rest = open_hijacked(node.sock, f"/exec/{eid}/start", {"Tty": True, "ConsoleSize": [10, 40]})
    try:
        assert "Content-Type: application/vnd.docker.raw-stream" in head
        s.sendall(b"stty size; echo term=$TERM; tty\n")
        out = read_until(s, b"/dev/pts", rest)
        assert b"10 40" in out and b"term=xterm" in out, out
        assert _post(node, f"/exec/{eid}/resize?h=20&w=100")[0] == 200
        s.sendall(b"stty size\n")
        assert b"20 100" in read_until(s, b"20 100")
        s.sendall(b"exit 4\n")
        read_all(s)
    finally:
        s.close()
    info = _get(node, f"/exec/{eid}/json")[1]
    assert isinstance(info, dict) and info["ExitCode"] == 4 and info["Running"] is False
    assert info["ProcessConfig"]["tty"] is True


def test_exec_errors_are_docker_s(node: InProcessNode, task_cid: str) -> None:
    assert _post(node, "/containers/nope/exec", {"Cmd": ["true"]}) == (404, {"message": "No such container: nope"})
    for body, text in [
        ({}, "No exec command specified"),
        ({"Cmd": []}, "No exec command specified"),
        ({"Cmd": 5}, "invalid JSON: Cmd must be an array, got integer"),
        ({"Cmd": ["a", 1]}, "invalid JSON: Cmd[1] must be a string, got integer"),
        ({"Cmd": ["true"], "Tty": "yes"}, "invalid JSON: Tty must be a boolean, got string"),
        ({"Cmd": ["true"], "Env": {"A": "b"}}, "invalid JSON: Env must be an array, got object"),
        ({"Cmd": ["true"], "ConsoleSize": [1]}, "invalid JSON: ConsoleSize must have exactly 2 items ([height, width])"),
        ({"Cmd": ["true"], "WorkingDir": "relative"}, "the working directory 'relative' is invalid, it needs to be an absolute path"),
    ]:
        assert _post(node, f"/containers/{task_cid}/exec", body) == (400, {"message": text}), body
    for method, path in [("GET", "/exec/nope/json"), ("POST", "/exec/nope/start"), ("POST", "/exec/nope/resize?h=1&w=1")]:
        r = http_request(node.sock, method, path, b"{}" if method == "POST" else None, {"Content-Type": "application/json"})
        assert (r.status, json.loads(r.body)) == (404, {"message": "No such exec instance: nope"}), path
    eid = _create_exec(node, task_cid, Cmd=["true"])
    assert _post(node, f"/exec/{eid}/resize?h=x&w=1")[0] == 400
    assert _post(node, f"/exec/{eid}/start", {"Detach": "no"})[0] == 400

    missing = _create_exec(node, task_cid, Cmd=["no-such-command"])
    _head, s, rest = open_hijacked(node.sock, f"/exec/{missing}/start", {})
    try:
        frames = read_frames(read_all(s, rest))
    finally:
        s.close()
    assert b'exec: "no-such-command": executable file not found in $PATH' in stream_text(frames, 1)
    assert _get(node, f"/exec/{missing}/json")[1]["ExitCode"] == 127  # type: ignore[index]
    detached = _create_exec(node, task_cid, Cmd=["no-such-command"])
    status, body = _post(node, f"/exec/{detached}/start", {"Detach": True})
    assert status == 400 and "executable file not found" in body["message"]  # type: ignore[index]


def test_detached_exec_runs_in_the_background(node: InProcessNode, task_cid: str) -> None:
    eid = _create_exec(node, task_cid, Cmd=["sh", "-c", "sleep 0.3; exit 6"])
    status, body = _post(node, f"/exec/{eid}/start", {"Detach": True})
    assert (status, body) == (200, None)
    status, info = _get(node, f"/exec/{eid}/json")
    assert isinstance(info, dict) and info["Running"] is True and info["Pid"] > 0
    deadline = time.monotonic() + 10
    while _get(node, f"/exec/{eid}/json")[1]["Running"]:  # type: ignore[index]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert _get(node, f"/exec/{eid}/json")[1]["ExitCode"] == 6  # type: ignore[index]


def test_docker_cli_exec(node: InProcessNode, task_cid: str) -> None:
    short = task_cid[:12]
    out = node.docker("exec", "-e", "EXTRA=1", "-w", "/tmp", short, "sh", "-c", "echo $GREETING $EXTRA; pwd")
    assert out.stdout == "hello 1\n/tmp\n"
    failed = node.docker("exec", short, "sh", "-c", "echo oops >&2; exit 3", check=False)
    assert failed.returncode == 3 and failed.stderr == "oops\n"
    piped = subprocess_input(node, ["exec", "-i", short, "cat"], "typed\n")
    assert piped == "typed\n"
    missing = node.docker("exec", short, "no-such-command", check=False)
    assert missing.returncode == 127 and "executable file not found" in missing.stdout + missing.stderr
    assert node.docker("exec", "-d", short, "sleep", "0.1").stdout == ""
    assert "No such container: nope" in node.docker("exec", "nope", "true", check=False).stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(HOME=str(node.root), DOCKER_CONFIG=str(node.root / "cfg"), DOCKER_HOST=node.base_url)
    res = run_on_pty(["docker", "exec", "-it", short, "sh"], env,
                     [(None, "PS1='> '; stty size; echo $((6*7)); tty\n"), ("42", "exit 5\n")], rows=30, cols=90)
    assert not res.timed_out and res.code == 5, res.text
    assert "30 90" in res.text and "/dev/pts/" in res.text


def subprocess_input(node: InProcessNode, args: list[str], text: str) -> str:
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(HOME=str(node.root), DOCKER_CONFIG=str(node.root / "cfg"), DOCKER_HOST=node.base_url)
    p = subprocess.run(["docker", *args], env=env, input=text, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_docker_sdk_exec_run(node: InProcessNode, task_cid: str) -> None:
    client = docker.DockerClient(base_url=node.base_url, version="1.45", timeout=30)
    try:
        c = client.containers.get(task_cid)
        result = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 2"])
        assert result.exit_code == 2 and b"out\n" in result.output and b"err\n" in result.output
        demux = c.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True)
        assert demux.exit_code == 0 and demux.output == (b"out\n", b"err\n")
        tty = c.exec_run(["tty"], tty=True)
        assert tty.exit_code == 0 and tty.output.startswith(b"/dev/pts/")
        env = c.exec_run(["sh", "-c", "echo $A"], environment={"A": "from-sdk"})
        assert env.output == b"from-sdk\n"
    finally:
        client.close()


def test_docker_executor_containers_get_a_clear_refusal(node: InProcessNode, task_cid: str) -> None:
    node.executor.name = "docker"  # type: ignore[attr-defined]  # as the real engine's executor is named
    try:
        status, body = _post(node, f"/containers/{task_cid}/exec", {"Cmd": ["true"]})
    finally:
        del node.executor.name  # type: ignore[attr-defined]
    assert status == 501 and isinstance(body, dict)
    assert body["message"].startswith("docker exec is not supported for containers of the docker executor")
