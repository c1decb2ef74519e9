"""The real ``labagent`` process driven by the unmodified ``docker`` CLI and the docker SDK.

Skipped only when the docker client binary is absent (`make deps` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

DOCKER = shutil.which("docker")
needs_docker = pytest.mark.skipif(DOCKER is None, reason="the docker client binary is not installed")


def labagent_command() -> list[str]:
    script = Path(sys.executable).with_name("labagent")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from agents.daemon import main; sys.exit(main())"]


def ping(sock: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(str(sock))
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
    finally:
        s.close()


@dataclass
class Agent:
    proc: subprocess.Popen[str]
    root: Path
    sock: Path
    state: Path
    started_in: float = 0.0

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def spawn(root: Path, *extra: str, node_name: str = "manager1") -> Agent:
    sock, state = root / "docker.sock", root / "state"
    proc = subprocess.Popen(
        [*labagent_command(), "--socket", str(sock), "--state-dir", str(state), "--node-name", node_name, *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Agent(proc, root, sock, state)


def wait_ready(agent: Agent, timeout: float = 15.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if agent.proc.poll() is not None:
            _, err = agent.proc.communicate()
            pytest.fail(f"labagent exited with {agent.proc.returncode}: {err.strip()}")
        if agent.sock.exists() and ping(agent.sock):
            agent.started_in = time.monotonic() - t0
            return
        time.sleep(0.01)
    pytest.fail(f"labagent did not answer /_ping within {timeout}s")


@pytest.fixture
def root() -> Iterator[Path]:
    # Short path: unix socket paths are limited to 107 bytes, pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="la-it-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def agent(root: Path) -> Iterator[Agent]:
    a = spawn(root)
    try:
        wait_ready(a)
        yield a
    finally:
        a.stop()


def docker_env(agent: Agent, with_host: bool = True) -> dict[str, str]:
    """The CLI with a private config dir and nothing inherited that could point it elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["HOME"] = str(agent.root)
    env["DOCKER_CONFIG"] = str(agent.root / "docker-config")
    if with_host:
        env["DOCKER_HOST"] = agent.host
    return env


def run_docker(agent: Agent, *args: str, with_host: bool = True) -> subprocess.CompletedProcess[str]:
    assert DOCKER is not None
    return subprocess.run(
        [DOCKER, *args], env=docker_env(agent, with_host), capture_output=True, text=True, timeout=60
    )


def server_section(stdout: str) -> str:
    return stdout.split("\nServer:", 1)[1]


def assert_clean_stderr(stderr: str) -> None:
    # Only client-side plugin warnings (from the local CLI install) may appear; nothing from the server.
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "Plugin" not in ln]
    assert lines == [], stderr


@needs_docker
def test_docker_version(agent: Agent) -> None:
    r = run_docker(agent, "version")
    assert r.returncode == 0, r.stderr
    server = server_section(r.stdout)
    assert server.startswith(" labctl swarm agent\n")
    assert re.search(r"^ Engine:\n  Version:\s+26\.1\.0$", server, re.M)
    assert re.search(r"^  API version:\s+1\.45 \(minimum version 1\.24\)$", server, re.M)
    assert re.search(r"^ labagent:\n  Version:\s+0\.1\.0$", server, re.M)
    assert re.search(r"^ API version:\s+1\.45\b", r.stdout, re.M)  # the client negotiated down to us
    assert_clean_stderr(r.stderr)


@needs_docker
def test_docker_info(agent: Agent) -> None:
    r = run_docker(agent, "info")
    assert r.returncode == 0, r.stderr
    server = server_section(r.stdout)
    for line in (
        " Server Version: 26.1.0",
        " Swarm: inactive",
        " Name: manager1",
        f" Docker Root Dir: {agent.state}",
        " OSType: linux",
        f" Kernel Version: {os.uname().release}",
    ):
        assert f"\n{line}\n" in server, line
    assert "ERROR" not in r.stdout + r.stderr
    assert_clean_stderr(r.stderr)


@needs_docker
def test_docker_dash_h(agent: Agent) -> None:
    r = run_docker(agent, "-H", agent.host, "version", "--format", "{{.Server.APIVersion}}", with_host=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1.45"
    r = run_docker(agent, "-H", agent.host, "info", "--format", "{{.Swarm.LocalNodeState}} {{.Name}}", with_host=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "inactive manager1"


def test_docker_sdk(agent: Agent) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=agent.host, timeout=10)
    try:
        assert client.ping() is True
        v = client.version()
        assert v["ApiVersion"] == "1.45" and v["Version"] == "26.1.0"
        info = client.info()
        assert info["Name"] == "manager1"
        assert info["Swarm"]["LocalNodeState"] == "inactive"
        assert info["DockerRootDir"] == str(agent.state)
        assert client.api.api_version == "1.45"
    finally:
        client.close()


def test_sigterm_exits_0_and_removes_socket(agent: Agent) -> None:
    agent.proc.send_signal(signal.SIGTERM)
    out, err = agent.proc.communicate(timeout=10)
    assert agent.proc.returncode == 0
    assert not agent.sock.exists()
    assert out == "" and err == ""  # nothing noisy on the terminal
    log = (agent.state / "labagent.log").read_text()
    assert "received SIGTERM" in log and "stopped" in log


def test_sigint_exits_0(agent: Agent) -> None:
    agent.proc.send_signal(signal.SIGINT)
    assert agent.proc.wait(10) == 0
    assert not agent.sock.exists()


def test_restart_keeps_engine_id_and_replaces_stale_socket(root: Path) -> None:
    first = spawn(root)
    try:
        wait_ready(first)
        engine_id = (first.state / "engine-id").read_text().strip()
        first.proc.kill()  # a crash: the socket file stays behind
        first.proc.wait(10)
        assert first.sock.exists()
    finally:
        first.stop()
    second = spawn(root)
    try:
        wait_ready(second)
        assert (second.state / "engine-id").read_text().strip() == engine_id
    finally:
        second.stop()


def test_second_agent_on_a_live_socket_refuses(agent: Agent) -> None:
    other = spawn(agent.root, node_name="intruder")
    try:
        assert other.proc.wait(15) == 1
        err = other.proc.stderr.read() if other.proc.stderr else ""
        assert err.strip() == f"labagent: error: another daemon is already listening on {agent.sock}"
    finally:
        other.stop()
    assert ping(agent.sock)


def test_bad_flag_exits_2_with_one_line(root: Path) -> None:
    r = subprocess.run([*labagent_command(), "--addr", "nope"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "invalid --addr 'nope'" in r.stderr
    assert r.stdout == ""


def test_five_agents_answer_ping_quickly(root: Path) -> None:
    """The lab bring-up budget: 5 agents spawned at once on this machine answer /_ping promptly.

    The bound is loose (machines running other work are slower); bench/agent_startup.py gives the figure.
    """
    agents = [spawn(root / f"n{i}", node_name=f"n{i}") for i in range(5)]
    try:
        t0 = time.monotonic()
        for a in agents:
            wait_ready(a, timeout=30)
        elapsed = time.monotonic() - t0
        assert elapsed < 10.0, f"5 agents took {elapsed:.2f}s to answer /_ping"
    finally:
        for a in agents:
            a.stop()
