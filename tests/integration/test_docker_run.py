"""Standalone ``docker run`` with the real docker CLI against a one-node netns lab outside swarm mode.

The first classroom tutorial: ``docker run -d -p 8080:80 nginx``, curl the node, ``docker ps``,
``docker logs``, ``docker rm -f``; plus a short-lived ``alpine`` command, ``--name``/``-e``, ``docker stop``
and ``docker inspect``. The lab is destroyed (with a leak check) afterwards: standalone containers die with
the node. Skipped without the docker client or the privileges netns labs need.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.labfixtures import DockerNode as Node
from tests.labfixtures import LabHandle, eventually, lab_home, unique_lab

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker client binary is not installed"),
]


def http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return str(resp.read().decode(errors="replace"))
    except (OSError, urllib.error.URLError):
        return None


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    home = lab_home(tmp_path)
    next(home)
    lab = LabHandle({"name": unique_lab("run"), "swarm": "bare", "nodes": [{"name": "node1", "role": "manager"}]})
    try:
        record = lab.up()
        n = record.spec.nodes[0]
        yield Node(lab.provider.docker_host(n.name), str(n.ip), n.name)
    finally:
        lab.destroy_and_check()
        next(home, None)


def test_docker_run_publish_ps_logs_rm(node: Node) -> None:
    cid = node.docker("run", "-d", "-p", "8080:80", "nginx").stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{64}", cid), cid

    url = f"http://{node.ip}:8080/"
    eventually(lambda: "Welcome to nginx!" in (http_get(url) or ""), what="nginx's page")

    ps = node.docker("ps").stdout
    assert cid[:12] in ps and "0.0.0.0:8080->80/tcp" in ps and re.search(r"Up (Less than a second|\d+ seconds)", ps), ps
    eventually(lambda: '"GET / HTTP/1.1" 200' in node.docker("logs", cid[:12]).stdout, what="the access log")

    second = node.docker("run", "-d", "-p", "8080:80", "nginx", check=False)
    assert second.returncode != 0
    assert "Bind for 0.0.0.0:8080 failed: port is already allocated" in second.stderr, second.stderr

    assert node.docker("rm", "-f", cid[:12]).stdout.strip() == cid[:12]
    assert cid[:12] not in node.docker("ps", "-a").stdout
    eventually(lambda: http_get(url) is None, what="the port to close")

    # The port is free again: a new container takes it.
    third = node.docker("run", "-d", "--name", "web", "-p", "8080:80", "nginx").stdout.strip()
    eventually(lambda: "Welcome to nginx!" in (http_get(url) or ""), what="nginx on the freed port")
    node.docker("rm", "-f", "web")
    assert third[:12] not in node.docker("ps", "-a").stdout


def test_docker_run_command_name_env_stop_inspect(node: Node) -> None:
    node.docker("run", "-d", "--name", "hello", "alpine", "sh", "-c", "echo hi")
    eventually(lambda: node.docker("logs", "hello").stdout.strip() == "hi", what="hi in the logs")
    eventually(lambda: "Exited (0)" in node.docker("ps", "-a", "--filter", "name=hello").stdout, what="the exit")

    node.docker("run", "-d", "--name", "sleeper", "-e", "GREETING=hello there", "alpine",
                "sh", "-c", "echo $GREETING; exec sleep 300")
    eventually(lambda: node.docker("logs", "sleeper").stdout.strip() == "hello there", what="the env in the logs")
    info = json.loads(node.docker("inspect", "sleeper").stdout)[0]
    assert info["Name"] == "/sleeper" and info["State"]["Running"] is True
    assert "GREETING=hello there" in info["Config"]["Env"]
    assert info["NetworkSettings"]["IPAddress"].startswith("172.17.")

    taken = node.docker("run", "-d", "--name", "sleeper", "alpine", "true", check=False)
    assert taken.returncode != 0 and 'The container name "/sleeper" is already in use' in taken.stderr

    assert node.docker("stop", "-t", "1", "sleeper").stdout.strip() == "sleeper"
    state = json.loads(node.docker("inspect", "sleeper").stdout)[0]["State"]
    assert state["Status"] == "exited" and state["Running"] is False
    node.docker("rm", "sleeper", "hello")
    assert node.docker("ps", "-a", "-q").stdout.strip() == ""
