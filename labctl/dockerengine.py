"""The real Docker engine a node runs for `executor: docker`: where it listens and how it is configured.

One definition, used by the Vagrantfile (which provisions it), the push (which points the agent at it and
checks it answers) and the docs (what an `ssh` machine's owner sets up):

* **Its own socket**, `unix:///run/docker-engine/docker.sock`: `/run/docker.sock` is the agent's (the
  agent *is* the node's Docker API, the one students' `docker` talks to), so the stock `docker.socket`
  and `docker.service` stay masked and dockerd runs as `labctl-docker-engine.service`.
* **Its own disk and runtime dirs**, `/var/lib/docker/engine` and `/run/docker-engine`: `/var/lib/docker`
  is the agent's state dir, and dockerd's own layout there (`containers/`, `swarm/`) would mix with the
  agent's; one level down nothing collides, and the node's Docker state stays on the node's disk.
* **No bridge, no iptables, no IP forwarding or masquerading, no userland proxy**: tasks are created with
  `--network none` and wired by the agent onto its own bridges; the routing mesh (published ports, VIPs)
  is the agent's nftables table. dockerd's iptables rules would set the FORWARD policy to DROP (breaking
  routed VIP and overlay traffic), add its NAT chains beside ours and load `br_netfilter`, which sends
  bridged task traffic through iptables; none of it is needed for `--network none` containers.
* **live-restore**: a restarted engine keeps task containers (and their wiring) running, as a restarted
  agent does.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

ENGINE_SOCKET = "/run/docker-engine/docker.sock"
ENGINE_HOST = f"unix://{ENGINE_SOCKET}"
DATA_ROOT = "/var/lib/docker/engine"
EXEC_ROOT = "/run/docker-engine"
CONFIG_PATH = "/etc/labctl/docker-engine.json"
UNIT_NAME = "labctl-docker-engine.service"
STOCK_UNITS = ("docker.service", "docker.socket", "containerd.service")
"""Masked on every VM: docker.socket would take /run/docker.sock; dockerd starts its own containerd."""
TASK_LABEL = "com.labctl.task"
"""The label the agent's docker executor puts on every task container (`agents.worker.executor.docker.SPEC_LABEL`)."""
SECRETS_DIR = "/var/lib/docker/docker-executor/secrets"
"""Where that executor mounts each task's secrets tmpfs on the node."""

TASKS_SCRIPT = r"""
import http.client, json, socket, sys, urllib.parse
path, label, verb = sys.argv[1:4]


class Engine(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(path)


def call(method, url):
    conn = Engine("engine")
    try:
        conn.request(method, url)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


try:
    status, body = call("GET", "/containers/json?all=1&filters=" + urllib.parse.quote(json.dumps({"label": [label]})))
except OSError:
    sys.exit(0)  # no engine answers: nothing of the agent's runs on it
for c in json.loads(body) if status == 200 else []:
    if verb == "remove":
        call("DELETE", "/containers/%s?force=1" % c["Id"])
    elif c.get("State") == "running":
        call("POST", "/containers/%s/kill" % c["Id"])
"""


def tasks_command(verb: str, engine: str = ENGINE_HOST) -> str:
    """A node command that kills (``kill``: the node is halted) or removes (``remove``: the lab is gone) the
    task containers the agent left on the engine; they live in dockerd's cgroup, so stopping the agent
    does not end them. Needs only the node's python3; a node without an engine is left alone."""
    if verb not in ("kill", "remove"):
        raise ValueError(f"unknown verb {verb!r}")
    command = "python3 -c " + shlex.join([TASKS_SCRIPT, engine.removeprefix("unix://"), TASK_LABEL, verb])
    if verb == "remove":  # and the per-task secrets tmpfs the executor would have unmounted
        command += (f"; for d in {SECRETS_DIR}/*; do [ -d \"$d\" ] || continue; umount -l \"$d\" 2>/dev/null; "
                    "rmdir \"$d\"; done; true")
    return command


def daemon_config() -> dict[str, Any]:
    """dockerd's configuration file (every setting in the file, none on the command line)."""
    return {
        "hosts": [ENGINE_HOST],
        "data-root": DATA_ROOT,
        "exec-root": EXEC_ROOT,
        "pidfile": f"{EXEC_ROOT}/docker.pid",
        "bridge": "none",
        "iptables": False,
        "ip6tables": False,
        "ip-forward": False,
        "ip-masq": False,
        "userland-proxy": False,
        "live-restore": True,
    }


def daemon_json() -> str:
    return json.dumps(daemon_config(), indent=2) + "\n"


UNIT = f"""[Unit]
Description=Docker engine for labctl's task executor (own socket: /run/docker.sock is the labagent's)
After=network-online.target
Wants=network-online.target
Before=labagent.service

[Service]
Type=notify
ExecStart=/usr/bin/env dockerd --config-file {CONFIG_PATH}
ExecReload=/bin/kill -s HUP $MAINPID
Delegate=yes
KillMode=process
LimitNOFILE=infinity
LimitNPROC=infinity
TasksMax=infinity
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""
