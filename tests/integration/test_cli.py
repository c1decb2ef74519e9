"""The `labctl` command as a teacher types it: real processes, real namespaces, the real docker CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.labfixtures import leftovers, unique_lab

LABCTL = str(Path(sys.executable).with_name("labctl"))


class Cli:
    def __init__(self, home: Path) -> None:
        self.env = dict(os.environ, LABCTL_HOME=str(home))
        self.env.pop("DOCKER_HOST", None)

    def __call__(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([LABCTL, *args], capture_output=True, text=True, env=env or self.env, timeout=120)
        if check and res.returncode != 0:
            raise AssertionError(f"labctl {' '.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}")
        return res


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "home")


def _no_traceback(res: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in res.stdout + res.stderr


def test_bad_spec_exits_2_with_one_line_and_creates_nothing(cli: Cli, tmp_path: Path) -> None:
    name = unique_lab("bad")
    spec = tmp_path / "lab.yaml"
    spec.write_text(f"name: {name}\nnodes:\n  - {{name: m1, role: manager}}\n  - {{name: w1, role: boss}}\n")
    res = cli("up", "-f", str(spec), check=False)
    assert res.returncode == 2
    _no_traceback(res)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nodes[1].role" in lines[0]
    assert leftovers(name, ["m1", "w1"]) == []


def test_usage_errors_exit_2(cli: Cli) -> None:
    for args in (["bogus"], ["exec"], ["halt"], ["status", "--jsn"], ["down", "a", "--lab", "b"]):
        res = cli(*args, check=False)
        assert res.returncode == 2, args
        _no_traceback(res)


def test_verbs_without_a_lab(cli: Cli) -> None:
    res = cli("status", check=False)
    assert res.returncode == 1 and "no lab exists" in res.stderr
    assert cli("down").stdout.strip() == "no lab exists; nothing to do"
    res = cli("env", "manager1", "--lab", "nope", check=False)
    assert res.returncode == 1 and "no lab named 'nope'" in res.stderr
    for args in (["status", "nope"], ["down", "nope"]):  # the lab as a positional argument, like --lab
        res = cli(*args, check=False)
        assert res.returncode == 1 and "no lab named 'nope'" in res.stderr, args


@pytest.fixture
def lab_spec(tmp_path: Path, cli: Cli) -> Iterator[tuple[str, Path]]:
    name = unique_lab("cli")
    spec = tmp_path / "lab.yaml"
    spec.write_text(f"name: {name}\nmanagers: 1\nworkers: 1\n")
    try:
        yield name, spec
    finally:
        cli("down", "--lab", name, check=False)
        assert leftovers(name, ["manager1", "worker1"]) == []


@pytest.mark.netns
def test_cli_lifecycle_with_the_real_docker_cli(cli: Cli, lab_spec: tuple[str, Path]) -> None:
    name, spec = lab_spec
    res = cli("up", "-f", str(spec))
    assert f"lab {name} is up" in res.stdout
    assert "already up" in cli("up", "-f", str(spec)).stdout

    doc = json.loads(cli("status", "--json").stdout)
    assert doc["lab"] == name
    assert [(n["name"], n["role"], n["state"], n["swarm"]) for n in doc["nodes"]] == [
        ("manager1", "manager", "running", "active"), ("worker1", "worker", "running", "active"),
    ]
    assert [n["leader"] for n in doc["nodes"]] == [True, False]
    assert {"name", "role", "ip", "state", "swarm"} <= set(doc["nodes"][0])
    table = cli("status", name).stdout
    assert "manager1" in table and "running" in table

    # `eval $(labctl env NODE)` points the standard docker CLI at the node.
    export = cli("env", "worker1").stdout.splitlines()[0]
    assert export.startswith("export DOCKER_HOST=unix://") and export.endswith("/worker1/docker.sock")
    docker_env = dict(cli.env, DOCKER_HOST=export.split("=", 1)[1])
    if shutil.which("docker"):
        version = subprocess.run(["docker", "version"], capture_output=True, text=True, env=docker_env, timeout=30)
        assert version.returncode == 0, version.stderr
        assert "API version:      1.45" in version.stdout
        info = cli("exec", "manager1", "--", "docker", "info")
        assert "Name: manager1" in info.stdout
        assert "Swarm: active" in info.stdout and "Is Manager: true" in info.stdout
        assert "Docker Root Dir: /var/lib/docker" in info.stdout
        nodes = cli("exec", "manager1", "--", "docker", "node", "ls").stdout
        assert "manager1" in nodes and "Leader" in nodes and "worker1" in nodes
        refused = cli("exec", "worker1", "--", "docker", "node", "ls", check=False)
        assert refused.returncode == 1 and "This node is not a swarm manager" in refused.stderr

    assert cli("exec", "worker1", "--", "hostname").stdout.strip() == "worker1"
    assert cli("exec", "worker1", "--", "sh", "-c", "exit 7", check=False).returncode == 7

    assert "worker1 halted" in cli("halt", "worker1").stdout
    assert json.loads(cli("status", "--json").stdout)["nodes"][1]["state"] == "halted"
    res = cli("exec", "worker1", "--", "true", check=False)
    assert res.returncode == 1 and "halted" in res.stderr
    cli("start", "worker1")
    cli("kill", "manager1")
    assert json.loads(cli("status", "--json").stdout)["nodes"][0]["state"] == "stopped"
    cli("start", "manager1")
    deadline = __import__("time").monotonic() + 30
    while [n["swarm"] for n in json.loads(cli("status", "--json").stdout)["nodes"]] != ["active", "active"]:
        assert __import__("time").monotonic() < deadline, "the restarted manager did not resume its swarm"
        __import__("time").sleep(0.2)

    assert "partitioned" in cli("partition", "manager1", "worker1").stdout
    res = cli("partition", "manager1", check=False)
    assert res.returncode == 2 and "two groups" in res.stderr
    res = cli("halt", "nosuch", check=False)
    assert res.returncode == 2 and "no node 'nosuch'" in res.stderr
    cli("heal")
    assert f"lab {name} removed" in cli("down").stdout


def test_doctor_reports_each_prerequisite(cli: Cli) -> None:
    res = cli("doctor", check=False)
    _no_traceback(res)
    for word in ("root", "nft", "nsenter", "network namespaces", "cgroup v2"):
        assert word in res.stdout
    assert res.returncode in (0, 1)
