"""Pushing the node agent over SSH: the same steps for VMs, existing machines and `labctl up --via ssh`.

On each node, everything lives under `/var/lib/docker/.labagent/` (AGENT_ROOT): the node's own disk,
because the agent *is* the node's Docker engine and `/var/lib/docker` is its state dir. In netns nodes that
is also the only persistent directory private to the node (the rest of the filesystem is the host's, shared
by all nodes), so one path works for VMs and namespaces alike:

    wheels/          the uploaded wheels (the project's, its dependencies', PyPA's `installer`)
    venv/            `python3 -m venv --without-pip`, filled by `installer` run from its wheel: no index,
                     no internet, no resolver (the set was resolved on the host); bytecode for the
                     project only (dependencies compile what the agent imports, on first start)
    agent.env        LABAGENT_* timing and LABAGENT_ARGS (node name, state dir, socket, address); with
                     `executor: docker` also LABAGENT_EXECUTOR=docker and LABAGENT_DOCKER_HOST (the node's
                     engine, `labctl.dockerengine`), whose answer the push checks before installing anything
    labagentctl      start/stop/restart/kill/status: systemd where it runs (unit `labagent.service`),
                     else a pid file in /run (netns nodes have no init; /run is node-private there)
    manifest.json    what is installed (wheel digests, Python, service digest), written last

Idempotence: the manifest is compared with the bundle; only changed wheels are uploaded, the venv is
rebuilt (with the dependencies) only for a new Python or a changed dependency set, the project wheel is
reinstalled (old files removed by its RECORD, as pip would) only when its digest changed, and the agent is restarted only if one of those or its service
definition changed (otherwise merely started if it is not running). The push returns once the agent
answers `/_ping` on the node's `/run/docker.sock`, asked through SSH.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from labctl import dockerengine, sshconn, wheelhouse
from labctl.errors import LabError
from labctl.spec import LabSpec
from labctl.sshlab import SSHTarget

AGENT_ROOT = "/var/lib/docker/.labagent"
PING_TIMEOUT = 30.0

PROBE = r"""
import json, os, platform, sys
try:
    m = json.load(open(sys.argv[1] + "/manifest.json"))
except Exception:
    m = None
venv_ok = os.path.exists(sys.argv[1] + "/venv/bin/python")
print(json.dumps({"python": "%d.%d" % sys.version_info[:2], "machine": platform.machine(), "manifest": m,
                  "venv": venv_ok, "systemd": os.path.isdir("/run/systemd/system")}))
"""

PING = r"""
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[1])
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(1)
        s.connect("/run/docker.sock")
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: node\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        if data.split(b"\r\n", 1)[0].split()[1:2] == [b"200"] and data.endswith(b"OK"):
            print("OK")
            sys.exit(0)
    except (OSError, IndexError):
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.03)
"""

ENGINE_PROBE = r"""
import json, socket, sys
path = sys.argv[1]
try:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    s.sendall(b"GET /version HTTP/1.0\r\nHost: engine\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
except OSError as e:
    print("nothing listens there (%s)" % (e.strerror or e))
    sys.exit(1)
head, _, body = data.partition(b"\r\n\r\n")
status = head.split(b" ", 2)[1:2]
if status != [b"200"]:
    print("it answered %r instead of a version" % head.split(b"\r\n", 1)[0].decode("latin-1"))
    sys.exit(1)
try:
    v = json.loads(body)
except ValueError:
    print("its /version answer is not JSON")
    sys.exit(1)
names = [str(c.get("Name", "")).lower() for c in v.get("Components") or [] if isinstance(c, dict)]
if "labagent" in names:
    print("it is a labagent (this project's node agent), not a Docker engine")
    sys.exit(1)
print(v.get("Version", "?"))
"""

INSTALL = r"""
import csv, os, shutil, sys, sysconfig
from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile

paths = sysconfig.get_paths()
site = paths["purelib"]
scheme = {k: paths[k] for k in ("purelib", "platlib", "scripts", "data")}
scheme["headers"] = os.path.join(paths["data"], "include")


def norm(name):
    return name.lower().replace("_", "-").replace(".", "-")


def uninstall(project):
    for d in os.listdir(site):
        if d.endswith(".dist-info") and norm(d[: -len(".dist-info")].rsplit("-", 1)[0]) == project:
            with open(os.path.join(site, d, "RECORD"), newline="") as fh:
                for row in csv.reader(fh):
                    if row:
                        try:
                            os.remove(os.path.normpath(os.path.join(site, row[0])))
                        except OSError:
                            pass
            shutil.rmtree(os.path.join(site, d), ignore_errors=True)


compile_levels = (0,) if sys.argv[1] == "compile" else ()
dest = SchemeDictionaryDestination(scheme, interpreter=sys.executable, script_kind="posix",
                                   bytecode_optimization_levels=compile_levels)
for wheel in sys.argv[2:]:
    uninstall(norm(os.path.basename(wheel).split("-")[0]))
    with WheelFile.open(wheel) as source:
        install(source, dest, {"INSTALLER": b"labctl\n"})
"""

CTL = r"""#!/bin/sh
# labctl's agent control on this node (written by `labctl` push; do not edit).
R=__ROOT__
PIDFILE=/run/labagent.pid
has_systemd() { [ -d /run/systemd/system ]; }
running() {
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE")
  grep -q labagent "/proc/$pid/cmdline" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null
}
case "$1" in
  start)
    if has_systemd; then systemctl start labagent.service; exit; fi
    running && exit 0
    set -a; . "$R/agent.env"; set +a
    rm -f /run/docker.sock
    setsid "$R/venv/bin/labagent" $LABAGENT_ARGS >>"$R/console.log" 2>&1 </dev/null &
    echo $! > "$PIDFILE" ;;
  stop)
    if has_systemd; then systemctl stop labagent.service; exit; fi
    if running; then
      kill "$pid"; i=0
      while running && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
      running && kill -9 "$pid"
    fi
    rm -f "$PIDFILE" ;;
  restart) "$0" stop; "$0" start ;;
  kill)
    if has_systemd; then systemctl kill -s KILL labagent.service; exit; fi
    running && kill -9 "$pid" ;;
  status)
    if has_systemd; then systemctl is-active --quiet labagent.service; exit; fi
    running ;;
  *) echo "usage: $0 start|stop|restart|kill|status" >&2; exit 2 ;;
esac
"""

UNIT = """[Unit]
Description=labctl node agent (Docker Engine API on /run/docker.sock)
After=network-online.target
Wants=network-online.target

[Service]
EnvironmentFile=__ROOT__/agent.env
ExecStartPre=/bin/rm -f /run/docker.sock
ExecStart=__ROOT__/venv/bin/labagent $LABAGENT_ARGS
# `labctl kill` simulates a crash: the agent stays down until `labctl start`, as in netns labs.
Restart=no
KillMode=mixed

[Install]
WantedBy=multi-user.target
"""


@dataclass
class PushResult:
    node: str
    uploaded: list[str] = field(default_factory=list)
    new_venv: bool = False
    deps_installed: bool = False
    project_installed: bool = False
    restarted: bool = False
    started: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AgentService:
    """How the agent runs on one node: its command line and environment, and the Docker engine its tasks
    run on (``""``: the agent's own process executor)."""

    args: list[str]
    env: dict[str, str]
    docker_engine: str = ""

    def files(self) -> dict[str, str]:
        env = "".join(f"{k}={v}\n" for k, v in sorted(self.env.items()))
        env += f"LABAGENT_ARGS=\"{' '.join(self.args)}\"\n"  # quoted: read by sh and by systemd alike
        return {
            "agent.env": env,
            "labagentctl": CTL.replace("__ROOT__", AGENT_ROOT),
            "labagent.service": UNIT.replace("__ROOT__", AGENT_ROOT),
        }

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.files(), sort_keys=True).encode()).hexdigest()


def agent_service(spec: LabSpec, node: str) -> AgentService:
    n = spec.node(node)
    t = spec.timing
    service = AgentService(
        args=["--node-name", n.name, "--state-dir", "/var/lib/docker", "--socket", "/run/docker.sock",
              "--addr", str(n.ip)],
        env={"LABAGENT_HEARTBEAT_MS": str(t.heartbeat_ms), "LABAGENT_ELECTION_TICKS": str(t.election_ticks),
             "LABAGENT_NODE_HEARTBEAT_S": str(t.node_heartbeat_s)},
    )
    return with_docker_engine(service) if spec.executor == "docker" else service


def with_docker_engine(service: AgentService, engine: str = dockerengine.ENGINE_HOST) -> AgentService:
    """The same agent running its tasks on the Docker engine at ``engine`` (forced, not auto-detected: a
    missing engine is the push's error, never a silent fall-back to the process executor)."""
    env = {**service.env, "LABAGENT_EXECUTOR": "docker", "LABAGENT_DOCKER_HOST": engine}
    return AgentService(service.args, env, engine)


def _sudo(target: SSHTarget, command: str) -> str:
    return command if target.user == "root" else f"sudo -n -- {command}"


def _py(script: str, *args: str) -> str:
    return "python3 -c " + shlex.quote(script) + "".join(" " + shlex.quote(a) for a in args)


def _install_script(bundle: wheelhouse.Bundle, result: PushResult, service: AgentService, systemd: bool,
                    unit_changed: bool, user: str) -> str:
    q = shlex.quote
    lines = ["set -eu", f"cd {q(AGENT_ROOT)}", "chown -R 0:0 wheels"]
    install = f"PYTHONPATH=wheels/{q(bundle.installer_wheel)} venv/bin/python -c {q(INSTALL)}"
    if result.new_venv:  # --without-pip: no ensurepip needed (Debian/Ubuntu split it into python3-venv)
        lines += ["rm -rf venv", "python3 -m venv --without-pip venv"]
        deps = [n for n in sorted(bundle.wheels) if n not in (bundle.project_wheel, bundle.installer_wheel)]
        lines.append(f"{install} lazy {' '.join('wheels/' + q(n) for n in deps)}")
    if result.project_installed:
        lines.append(f"{install} compile wheels/{q(bundle.project_wheel)}")
    keep = " ".join(q(n) for n in sorted(bundle.wheels))
    lines.append(f"for f in wheels/*.whl; do case \" {keep} \" in *\" ${{f#wheels/}} \"*) ;; *) rm -f \"$f\" ;; esac; done")
    for name, text in service.files().items():
        lines.append(f"cat > {q(name)}.tmp <<'LABCTL_EOF'\n{text}LABCTL_EOF\nmv {q(name)}.tmp {q(name)}")
    lines.append("chmod 0755 labagentctl")
    if user != "root":  # as after Docker's install: the login user reaches the socket (group docker)
        lines.append(f"getent group docker >/dev/null || groupadd docker; usermod -aG docker {q(user)}")
    if systemd:
        lines.append("install -m 0644 labagent.service /etc/systemd/system/labagent.service")
        if unit_changed:
            lines.append("systemctl daemon-reload")
        lines.append("systemctl enable --quiet labagent.service")
    return "\n".join(lines) + "\n"


def push_node(target: SSHTarget, known_hosts: Path, service: AgentService,
              connect_retry: float = 0.0) -> PushResult:
    """Install or upgrade the agent on one node and leave it answering /_ping."""
    t0 = time.monotonic()
    result = PushResult(target.node)
    client = sshconn.connect(target, known_hosts, retry_for=connect_retry)
    try:
        probe = json.loads(sshconn.check(client, target.node, "probing the node",
                                         _sudo(target, _py(PROBE, AGENT_ROOT))))
        if service.docker_engine:
            check_engine(client, target, service.docker_engine)
        bundle = wheelhouse.build(probe["python"], probe["machine"], docker_sdk=bool(service.docker_engine))
        manifest: dict[str, Any] = probe["manifest"] or {}
        installed: dict[str, str] = manifest.get("wheels") or {}
        result.new_venv = (not probe["venv"] or manifest.get("python") != probe["python"]
                           or manifest.get("deps") != bundle.deps_digest)
        result.deps_installed = result.new_venv
        project_sha = bundle.digests[bundle.project_wheel]
        result.project_installed = result.deps_installed or manifest.get("project") != project_sha
        service_digest = service.digest()
        service_changed = manifest.get("service") != service_digest
        result.uploaded = [n for n in sorted(bundle.wheels) if installed.get(n) != bundle.digests[n]]
        changed = result.project_installed or service_changed
        if changed or result.uploaded:
            _upload(client, target, bundle, result.uploaded)
            script = _install_script(bundle, result, service, probe["systemd"], service_changed, target.user)
            sshconn.check(client, target.node, "installing the agent", _sudo(target, "sh -s"), script.encode())
        verb = "restart" if changed else "start"
        result.restarted = changed
        new_manifest = {"wheels": bundle.digests, "python": probe["python"], "deps": bundle.deps_digest,
                        "project": project_sha, "service": service_digest}
        finish = (
            f"{AGENT_ROOT}/labagentctl {verb} && "
            f"{AGENT_ROOT}/venv/bin/python -c {shlex.quote(PING)} {PING_TIMEOUT:.0f}"
        )
        if changed or result.uploaded:
            finish += f" && printf '%s' {shlex.quote(json.dumps(new_manifest))} > {AGENT_ROOT}/manifest.json"
        code, out, err = sshconn.run(client, _sudo(target, f"sh -c {shlex.quote(finish)}"), timeout=PING_TIMEOUT + 30)
        if code != 0:
            raise LabError(
                f"{target.node}: the agent did not answer /_ping within {PING_TIMEOUT:.0f} s after {verb} "
                f"(see {AGENT_ROOT}/console.log and /var/lib/docker/labagent.log on the node){_tail(err)}"
            )
        result.started = not changed and out.strip() == "OK"
    finally:
        client.close()
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def check_engine(client: paramiko.SSHClient, target: SSHTarget, engine: str) -> str:
    """The version of the Docker engine answering at ``engine`` on the node, else a LabError saying why and
    what the node needs; checked before anything is installed, so a failed push changes nothing."""
    if not engine.startswith("unix://"):
        raise LabError(f"{target.node}: the Docker engine's address {engine!r} is not a unix socket")
    code, out, err = sshconn.run(client, _sudo(target, _py(ENGINE_PROBE, engine.removeprefix("unix://"))), timeout=30)
    if code != 0:
        why = out.strip() or _tail(err).lstrip(": ") or f"exit {code}"
        raise LabError(
            f"{target.node}: executor: docker, but no Docker engine answers at {engine}: {why}. The node needs "
            f"dockerd running with {dockerengine.CONFIG_PATH} as labctl's Vagrantfile writes it (its own socket, "
            "--bridge=none, --iptables=false; see docs/architecture.md, 'Tasks on a real Docker engine')"
        )
    return out.strip()


def _tail(text: str) -> str:
    lines = text.strip().splitlines()
    return f": {lines[-1]}" if lines else ""


def _upload(client: paramiko.SSHClient, target: SSHTarget, bundle: wheelhouse.Bundle, names: list[str]) -> None:
    owner = "" if target.user == "root" else f" -o {shlex.quote(target.user)}"
    sshconn.check(client, target.node, "preparing the upload directory",
                  _sudo(target, f"install -d -m 0755{owner} {AGENT_ROOT} {AGENT_ROOT}/wheels"))
    if not names:
        return
    sftp = client.open_sftp()
    try:
        for name in names:
            remote = f"{AGENT_ROOT}/wheels/{name}"
            sftp.put(str(bundle.wheels[name]), remote + ".part", confirm=True)
            sftp.posix_rename(remote + ".part", remote)
    except OSError as e:
        raise LabError(f"{target.node}: uploading wheels failed: {e}") from None
    finally:
        sftp.close()


def push(targets: list[SSHTarget], known_hosts: Path, services: dict[str, AgentService],
         progress: Callable[[str], None] | None = None, connect_retry: float = 0.0) -> list[PushResult]:
    """Push to every node in parallel; the first failure is raised after all have finished."""
    if not targets:
        return []

    def one(t: SSHTarget) -> PushResult:
        r = push_node(t, known_hosts, services[t.node], connect_retry)
        if progress is not None:
            progress(f"agent on {t.node} answers /_ping ({'restarted' if r.restarted else 'unchanged'})")
        return r

    results: list[PushResult] = []
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        futures = [pool.submit(one, t) for t in targets]
        for f in futures:
            try:
                results.append(f.result())
            except LabError as e:
                errors.append(str(e))
    if errors:
        raise LabError("; ".join(errors))
    return results


def agent_command(target: SSHTarget, verb: str) -> str:
    """The remote command line for `labagentctl VERB` (kill, start, stop, status)."""
    return _sudo(target, f"{AGENT_ROOT}/labagentctl {verb}")
