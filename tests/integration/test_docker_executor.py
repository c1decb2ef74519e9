"""The Docker-engine executor against a real dockerd (Debian's docker.io), through the Executor protocol
and the real Worker: states, exit codes, stop grace, logs, adoption, secrets, env, labels, selection.

The engine is the test's own and touches nothing of the host: ``dockerd`` runs under ``unshare`` in new
pid, mount and network namespaces (loopback only, so nothing can leave; ``--bridge=none``,
``--iptables=false``: no docker0, no FORWARD policy, no br_netfilter), with its data root, exec root,
socket, pid file and daemon.json in a temp dir, a tmpfs over ``/run`` (containerd's shim sockets) and
its own cgroup parent. Stopping it kills the pid namespace, so no process can outlive the module; the
mount namespace takes every mount with it. Images come from ``docker import`` of a rootfs built here
from the host's busybox (no registry). The executor's secrets dir is a shared mount, so the per-task
tmpfs the executor mounts on the "node" propagates into the engine's mount namespace, as it would be
visible to dockerd on a VM where both share one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import secrets as pysecrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from agents.worker.agent import Worker, make_executor
from agents.worker.executor import base, secretfs
from agents.worker.executor.docker import (
    SPEC_LABEL,
    TASK_LABEL,
    DockerExecutor,
    choose_executor,
    engine_reachable,
)
from agents.worker.executor.logs import LogEntry
from tests.unit.worker.fakes import FakeSession, assign, make_task

pytestmark = pytest.mark.netns

T = TypeVar("T")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = ("dockerd", "containerd", "runc", "unshare", "docker-init", "mount")
LOOP = 'trap "exit 0" TERM; while :; do sleep 0.1; done'
"""A task that runs until asked to stop, and stops at once on SIGTERM."""


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to start a private dockerd"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs Debian's docker.io (missing: {', '.join(missing)}; `make testdeps` installs it)"
    if shutil.which("busybox") is None:
        return "needs busybox (the test image's rootfs)"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "needs the docker SDK"
    return None


@dataclass
class Engine:
    url: str
    root: str
    state_dir: str
    """The agent's state dir for the executor (a shared mount: see the module docstring)."""

    def executor(self) -> DockerExecutor:
        return DockerExecutor(self.url, self.state_dir)

    def api(self) -> Any:
        import docker

        return docker.APIClient(base_url=self.url, version="auto", timeout=30)

    def task_containers(self, task_id: str) -> list[dict[str, Any]]:
        api = self.api()
        try:
            return list(api.containers(all=True, filters={"label": f"{TASK_LABEL}={task_id}"}))
        finally:
            api.close()


def _rootfs_tar() -> bytes:
    """busybox with its libraries and an applet link per command, plus /etc/passwd: a tiny distro."""
    busybox = os.path.realpath(shutil.which("busybox") or "")
    ldd = subprocess.run(["ldd", busybox], capture_output=True, text=True).stdout
    libs = [w for line in ldd.splitlines() for w in line.split() if w.startswith("/")]
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "etc", "lib", "lib64", "lib/x86_64-linux-gnu", "proc", "sys", "dev", "run", "var"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        with open(busybox, "rb") as fh:
            add_file("bin/busybox", fh.read(), 0o755)
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        for lib in libs:
            parent = os.path.dirname(lib).lstrip("/")
            if parent not in ("lib", "lib64", "lib/x86_64-linux-gnu"):
                add_dir(parent)
            with open(os.path.realpath(lib), "rb") as fh:
                add_file(lib.lstrip("/"), fh.read(), 0o755)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def _init_pid(unshare_pid: int) -> int:
    """The host pid of the namespace's init (the child ``unshare --fork`` made)."""
    with contextlib.suppress(OSError):
        with open(f"/proc/{unshare_pid}/task/{unshare_pid}/children") as fh:
            kids = fh.read().split()
        if kids:
            return int(kids[0])
    return 0


def _mounts_under(path: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            target = line.split()[4]
            if target == path or target.startswith(path + "/"):
                out.append(target)
    return out


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    root = tempfile.mkdtemp(prefix="lcd-", dir="/tmp")
    name = os.path.basename(root)
    state = os.path.join(root, "state")
    sock = os.path.join(root, "docker.sock")
    url = f"unix://{sock}"
    eng = Engine(url, root, state)
    proc: subprocess.Popen[bytes] | None = None
    leaked: list[str] = []
    try:
        os.makedirs(state)
        with open(os.path.join(root, "daemon.json"), "w") as fh:  # never the host's /etc/docker/daemon.json
            json.dump({"deprecated-key-path": f"{root}/key.json"}, fh)  # 20.10 would write /etc/docker/key.json
        subprocess.run(["mount", "--bind", state, state], check=True)
        subprocess.run(["mount", "--make-shared", state], check=True)
        dockerd = [
            "dockerd", "--config-file", f"{root}/daemon.json", "--data-root", f"{root}/data",
            "--exec-root", f"{root}/exec", "-H", url, "--pidfile", f"{root}/docker.pid",
            "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-forward=false", "--ip-masq=false",
            "--userland-proxy=false", "--exec-opt", "native.cgroupdriver=cgroupfs", f"--cgroup-parent=/{name}",
            "--log-level=warn",
        ]
        script = 'ip link set lo up && mount -t tmpfs -o mode=0755 tmpfs /run && exec docker-init -- "$@"'
        with open(os.path.join(root, "dockerd.log"), "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                ["unshare", "--fork", "--kill-child", "--pid", "--mount-proc", "--mount", "--propagation", "slave", "--net", "--",
                 "sh", "-c", script, "sh", *dockerd],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 30
        while engine_reachable(url, timeout=2) is not None:
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(root, "dockerd.log"), errors="replace") as fh:
                    pytest.fail(f"dockerd did not start: {fh.read()[-2000:]}")
            time.sleep(0.05)
        api = eng.api()
        try:
            image = api.import_image_from_data(_rootfs_tar(), repository="busybox", tag="latest")
            assert "sha256:" in str(image), image
            api.tag("busybox:latest", "alpine", "latest")
        finally:
            api.close()
        yield eng
    finally:
        if proc is not None:
            _stop_engine(eng, proc, leaked)
        for target in sorted(_mounts_under(root), key=len, reverse=True):
            if target != state:
                leaked.append(f"mount {target}")
            subprocess.run(["umount", "-l", target], check=False)
        cg = "/sys/fs/cgroup"  # cgroup v2 (the parent sits at the root) or v1/hybrid (one per hierarchy)
        for parent in [os.path.join(cg, name), *(os.path.join(cg, h, name) for h in os.listdir(cg))]:
            if os.path.isdir(parent):
                for sub in os.listdir(parent):
                    if os.path.isdir(os.path.join(parent, sub)):
                        leaked.append(f"cgroup {parent}/{sub[:12]}")
                        with contextlib.suppress(OSError):
                            os.rmdir(os.path.join(parent, sub))
                with contextlib.suppress(OSError):
                    os.rmdir(parent)  # dockerd creates the parent and leaves it
                if os.path.isdir(parent):
                    leaked.append(f"cgroup {parent}")
        shutil.rmtree(root, ignore_errors=True)
        assert not leaked, f"left behind: {leaked}"


def _stop_engine(eng: Engine, proc: subprocess.Popen[bytes], leaked: list[str]) -> None:
    """Remove what the tests left (and say so), then stop dockerd; its pid namespace ends with it."""
    with contextlib.suppress(Exception):
        api = eng.api()
        for c in api.containers(all=True):
            leaked.append(f"container {c['Names']} {c['State']}")
            api.remove_container(c["Id"], force=True)
        api.close()
    init = _init_pid(proc.pid)
    if init:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signal.SIGTERM)  # docker-init passes it to dockerd, which stops containerd
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        leaked.append("dockerd ignored SIGTERM")
        if init:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)  # the pid namespace dies with its init
        proc.kill()  # --kill-child: unshare's death SIGKILLs the init too
        proc.wait(timeout=10)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as fh:
                if eng.root.encode() in fh.read():
                    leaked.append(f"process {pid}")


def arun(fn: Callable[[], Awaitable[T]], timeout: float = 40) -> T:
    async def main() -> T:
        async with asyncio.timeout(timeout):
            return await fn()

    return asyncio.run(main())


async def shutdown(worker: Worker) -> None:
    await worker.shutdown_tasks()
    await worker.stop()


async def collect(it: Any) -> list[LogEntry]:
    return [e async for e in it]


def pairs(entries: list[LogEntry]) -> list[tuple[str, bytes]]:
    return [(e.stream, e.data) for e in entries]


# --------------------------------------------------------------------------------------- lifecycle


def test_worker_lifecycle_exit_codes_and_rejections(engine: Engine) -> None:
    async def body() -> None:
        s = FakeSession()
        w = Worker(engine.state_dir, s, engine.executor())
        await w.start()
        await w.apply(assign([
            make_task("ok", args=["sh", "-c", "echo hi"]),
            make_task("bad", args=["sh", "-c", "echo oops >&2; exit 3"]),
            make_task("nope", image="nosuch/image"),
            make_task("noexec", args=["nosuchcmd"]),
        ], full=True))
        ok = await s.wait("ok", "complete", timeout=20)
        bad = await s.wait("bad", "failed", timeout=20)
        nope = await s.wait("nope", "rejected", timeout=20)
        noexec = await s.wait("noexec", "failed", timeout=20)
        assert s.states("ok") == ["accepted", "preparing", "ready", "starting", "running", "complete"]
        assert ok["exit_code"] == 0 and ok["message"] == "finished" and len(ok["container_id"]) == 64
        assert bad["exit_code"] == 3 and bad["err"] == "task: non-zero exit (3)"
        assert nope["err"] == "No such image: nosuch/image:latest"  # the engine's own text
        assert s.states("nope") == ["accepted", "preparing", "rejected"]
        assert noexec["err"].startswith("starting container failed: ") and "executable file not found" in noexec["err"]
        assert noexec["exit_code"] == 127
        assert pairs(await collect(w.logs("ok"))) == [("stdout", b"hi\n")]
        assert pairs(await collect(w.logs("bad"))) == [("stderr", b"oops\n")]
        ps = w.containers(all=True)
        assert {p["Names"][0] for p in ps} >= {"/web.1.ok", "/web.1.bad"}
        await shutdown(w)
        for tid in ("ok", "bad", "nope", "noexec"):
            assert engine.task_containers(tid) == []

    arun(body)


def test_signals_sigkill_and_stop_grace(engine: Engine) -> None:
    async def body() -> None:
        ex = engine.executor()
        ignore_term = 'trap "" TERM; while :; do sleep 0.1; done'
        stubborn = await ex.create(make_task("stubborn", args=["sh", "-c", ignore_term]), [])
        polite = await ex.create(make_task("polite", args=["sh", "-c", LOOP]), [])
        victim = await ex.create(make_task("victim", args=["sleep", "300"]), [])
        for c in (stubborn, polite, victim):
            assert c.state == "created" and c.hostname == c.id[:12]
            await ex.start(c)
            assert c.running and c.pid > 0 and c.started_at > 0
        await asyncio.sleep(0.3)  # the shells have set their traps
        t0 = time.monotonic()
        await base.stop(ex, polite, grace_s=10)
        assert polite.exit_code == 0 and time.monotonic() - t0 < 5
        t0 = time.monotonic()
        await base.stop(ex, stubborn, grace_s=1.0)  # ignores SIGTERM: SIGKILL after the grace period
        took = time.monotonic() - t0
        assert stubborn.exit_code == 137 and 1.0 <= took < 6, took
        await ex.signal(victim, signal.SIGKILL)
        await asyncio.wait_for(victim.exited.wait(), 10)
        assert victim.exit_code == 137 and victim.state == "exited" and victim.finished_at >= victim.started_at
        with pytest.raises(ProcessLookupError):
            await ex.signal(victim, signal.SIGTERM)
        for c in (stubborn, polite, victim):
            await ex.remove(c)
            assert engine.task_containers(c.task.id) == []
        await ex.close()

    arun(body)


def test_worker_kill_and_remove_of_a_running_task(engine: Engine) -> None:
    async def body() -> None:
        s = FakeSession()
        w = Worker(engine.state_dir, s, engine.executor())
        await w.apply(assign([make_task("k", args=["sh", "-c", LOOP]), make_task("r", args=["sh", "-c", LOOP])]))
        await s.wait("k", "running", timeout=20)
        await s.wait("r", "running", timeout=20)
        await w.kill("web.1.k", 9)
        assert (await s.wait("k", "failed", timeout=10))["err"] == "task: non-zero exit (137)"
        await w.remove_container("r", force=True)
        assert (await s.wait("r", "failed", timeout=10))["exit_code"] == 137
        assert engine.task_containers("r") == []
        await shutdown(w)

    arun(body)


# -------------------------------------------------------------------------------------------- logs


def test_logs_order_streams_tail_since_follow(engine: Engine) -> None:
    async def body() -> None:
        ex = engine.executor()
        c = await ex.create(make_task("log", args=["sh", "-c", "echo out1; sleep 0.2; echo err1 >&2; sleep 0.2; echo out2"]), [])
        t0 = time.time()
        await ex.start(c)
        await asyncio.wait_for(c.exited.wait(), 10)
        entries = await collect(ex.logs(c))
        assert pairs(entries) == [("stdout", b"out1\n"), ("stderr", b"err1\n"), ("stdout", b"out2\n")]
        from agents.worker.executor.docker import _epoch

        stamps = [_epoch(e.time) for e in entries]
        assert all(e.time.endswith("Z") and len(e.time) == 30 for e in entries), entries  # RFC 3339, ns
        assert t0 - 1 < stamps[0] <= stamps[1] <= stamps[2] < time.time() + 1
        assert pairs(await collect(ex.logs(c, tail=1))) == [("stdout", b"out2\n")]
        assert pairs(await collect(ex.logs(c, stdout=False))) == [("stderr", b"err1\n")]
        assert await collect(ex.logs(c, stdout=False, stderr=False)) == []
        since = (stamps[0] + stamps[1]) / 2
        assert pairs(await collect(ex.logs(c, since=since))) == [("stderr", b"err1\n"), ("stdout", b"out2\n")]
        assert pairs(await collect(ex.logs(c, until=since))) == [("stdout", b"out1\n")]
        await ex.remove(c)

        f = await ex.create(make_task("follow", args=["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"]), [])
        await ex.start(f)
        got = []
        async for e in ex.logs(f, follow=True):  # ends when the container exits
            got.append(e.data)
        assert got == [b"tick 1\n", b"tick 2\n", b"tick 3\n"]
        await asyncio.wait_for(f.exited.wait(), 5)  # the stream ended because the task exited
        assert f.exit_code == 0
        g = await ex.create(make_task("quiet", args=["sh", "-c", LOOP]), [])
        await ex.start(g)
        follower = ex.logs(g, follow=True)
        reader = asyncio.ensure_future(follower.__anext__())
        await asyncio.sleep(0.3)
        reader.cancel()  # a client that goes away stops following (no thread left blocked)
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await follower.aclose()  # type: ignore[attr-defined]
        for x in (f, g):
            await ex.remove(x)
        await ex.close()

    arun(body)


# ---------------------------------------------------------------------------------------- adoption


def test_a_new_executor_adopts_running_containers_instead_of_duplicating(engine: Engine) -> None:
    async def body() -> None:
        task = make_task("adopt", args=["sh", "-c", LOOP])
        s1 = FakeSession()
        w1 = Worker(engine.state_dir, s1, engine.executor())
        await w1.apply(assign([task], full=True))
        first = await s1.wait("adopt", "running", timeout=20)
        ex1 = engine.executor()  # a container the agent created but died before starting
        await ex1.create(make_task("half", args=["sh", "-c", LOOP]), [])
        await ex1.close()
        await w1.stop()  # the agent goes away; the engine keeps the task running
        [row] = engine.task_containers("adopt")
        assert row["State"] == "running" and row["Id"] == first["container_id"]

        s2 = FakeSession()
        w2 = Worker(engine.state_dir, s2, engine.executor())
        await w2.start()
        again = await s2.wait("adopt", "running", timeout=10)
        assert again["container_id"] == first["container_id"] and again["message"] == "started"
        assert w2.find("adopt").adopted and w2.find("adopt").running
        assert engine.task_containers("half") == []  # never started: removed, the worker starts it afresh
        await w2.apply(assign([task], full=True))  # the manager re-sends the same assignment
        await asyncio.sleep(0.5)
        assert [r["Id"] for r in engine.task_containers("adopt")] == [first["container_id"]]
        assert s2.states("adopt") == ["running"]
        await w2.kill("adopt", 15)  # the adopted container is watched: its exit is reported
        done = await s2.wait("adopt", "complete", timeout=10)
        assert done["exit_code"] == 0
        await w2.stop()

        ex3 = engine.executor()
        restored = await ex3.restore()  # an exited container comes back as exited
        [c] = [c for c in restored if c.task.id == "adopt"]
        assert c.state == "exited" and c.exit_code == 0 and c.exited.is_set() and c.finished_at > 0
        for r in restored:
            await ex3.remove(r)
        assert engine.task_containers("adopt") == []
        await ex3.close()

    arun(body)


# ----------------------------------------------------------------------------------------- secrets


def _files_containing(root: str, needle: bytes) -> list[str]:
    """Regular files under ``root`` on its own filesystem (not the tmpfs mounts) that contain ``needle``."""
    dev = os.lstat(root).st_dev
    hits = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if os.lstat(os.path.join(d, x)).st_dev == dev]
        for f in files:
            p = os.path.join(d, f)
            with contextlib.suppress(OSError):
                st = os.lstat(p)
                if st.st_dev != dev or not os.path.isfile(p) or os.path.islink(p):
                    continue
                with open(p, "rb") as fh:
                    if needle in fh.read():
                        hits.append(p)
    return hits


def test_secrets_are_readable_in_the_container_and_never_on_disk(engine: Engine) -> None:
    token = pysecrets.token_hex(16).encode()
    script = ("sha256sum /run/secrets/db_pw; (echo x > /run/secrets/db_pw) 2>/dev/null && echo writable || "
              "echo read-only; stat -c '%a %u' /run/secrets/db_pw; " + LOOP)

    async def body() -> None:
        s = FakeSession()
        ex = engine.executor()
        w = Worker(engine.state_dir, s, ex)
        await w.apply(assign([make_task("sec", args=["sh", "-c", script], secrets=[("s1", "db_pw")])],
                             secrets={"s1": token}))
        await s.wait("sec", "running", timeout=20)
        lines: list[bytes] = []
        for _ in range(100):
            lines = [e.data for e in await collect(w.logs("sec"))]
            if len(lines) >= 3:
                break
            await asyncio.sleep(0.05)
        digest = hashlib.sha256(token).hexdigest().encode()  # the log is on disk: never print the secret
        assert lines == [digest + b"  /run/secrets/db_pw\n", b"read-only\n", b"444 0\n"]
        where = os.path.join(ex.secrets_dir, "sec")
        assert secretfs.is_tmpfs(where)  # in memory on the node...
        assert _files_containing(engine.root, token) == []  # ...and in no file of the engine or the agent
        await shutdown(w)
        assert not secretfs.is_tmpfs(where) and not os.path.exists(where)

    arun(body)


def test_missing_secret_rejects_and_bad_secret_name_is_refused(engine: Engine) -> None:
    async def body() -> None:
        s = FakeSession()
        w = Worker(engine.state_dir, s, engine.executor())
        await w.apply(assign([make_task("nosec", args=["true"], secrets=[("absent", "x")])]))
        assert (await s.wait("nosec", "rejected", timeout=10))["err"] == "secret x not found"
        ex = engine.executor()
        with pytest.raises(base.TaskRejected, match="invalid secret file name"):
            await ex.create(make_task("evil", args=["true"]), [base.SecretFile("../../etc/evil", b"x")])
        assert not os.path.exists(os.path.join(ex.secrets_dir, "evil"))
        assert engine.task_containers("evil") == []
        await ex.close()
        await shutdown(w)

    arun(body)


# ------------------------------------------------------------------------------- env, labels, names


def test_env_labels_name_hostname_and_network(engine: Engine) -> None:
    async def body() -> None:
        s = FakeSession()
        w = Worker(engine.state_dir, s, engine.executor())
        task = make_task("lbl", args=["sh", "-c", "echo A=$A; echo B=$B; hostname; ls /sys/class/net"],
                         env=["A=1", "B=two words"], grace_s=3)
        await w.apply(assign([task]))
        done = await s.wait("lbl", "complete", timeout=20)
        cid = done["container_id"]
        out = [e.data.decode().strip() for e in await collect(w.logs("lbl"))]
        assert out == ["A=1", "B=two words", cid[:12], "lo"]  # --network none on a bridge-less engine
        api = engine.api()
        try:
            info = api.inspect_container(cid)
        finally:
            api.close()
        lab = info["Config"]["Labels"]
        assert info["Name"] == "/web.1.lbl"
        assert {k: v for k, v in lab.items() if k.startswith("com.docker.swarm.")} == {
            "com.docker.swarm.node.id": "node1",
            "com.docker.swarm.service.id": "svc1",
            "com.docker.swarm.service.name": "web",
            "com.docker.swarm.task": "",
            "com.docker.swarm.task.id": "lbl",
            "com.docker.swarm.task.name": "web.1.lbl",
        }
        assert json.loads(lab[SPEC_LABEL])["id"] == "lbl"
        assert info["HostConfig"]["NetworkMode"] == "none" and info["Config"]["StopTimeout"] == 3
        assert "A=1" in info["Config"]["Env"]
        await shutdown(w)

    arun(body)


# ---------------------------------------------------------------------------------------- selection


def test_executor_selection_follows_the_engine(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_executor({}).kind == "process"
    assert "LABAGENT_DOCKER_HOST" in choose_executor({}).reason
    picked = choose_executor({"LABAGENT_DOCKER_HOST": engine.url})
    assert (picked.kind, picked.engine) == ("docker", engine.url)
    gone = choose_executor({"LABAGENT_DOCKER_HOST": f"unix://{engine.root}/nothing.sock"})
    assert gone.kind == "process" and "no such socket" in gone.reason
    assert choose_executor({"LABAGENT_EXECUTOR": "process", "LABAGENT_DOCKER_HOST": engine.url}).kind == "process"
    forced = choose_executor({"LABAGENT_EXECUTOR": "docker"})
    assert (forced.kind, forced.engine) == ("docker", "unix:///var/run/docker.sock")
    with pytest.raises(ValueError, match="invalid LABAGENT_EXECUTOR 'podman'"):
        choose_executor({"LABAGENT_EXECUTOR": "podman"})

    # A labagent is not an engine, though it speaks the same API.
    sock = os.path.join(engine.root, "agent.sock")
    agent = subprocess.Popen(
        [sys.executable, "-c", "import sys; from agents.daemon import main; sys.exit(main())", "--node-name", "sel",
         "--state-dir", os.path.join(engine.root, "agent"), "--socket", sock],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        why = engine_reachable(f"unix://{sock}")
        assert why is not None and "is a labagent" in why
        assert choose_executor({"LABAGENT_DOCKER_HOST": f"unix://{sock}"}).kind == "process"
    finally:
        agent.terminate()
        agent.wait(timeout=10)

    monkeypatch.setenv("LABAGENT_DOCKER_HOST", engine.url)
    monkeypatch.delenv("LABAGENT_EXECUTOR", raising=False)

    async def body() -> None:
        ex = make_executor(engine.state_dir)
        assert isinstance(ex, DockerExecutor) and ex.base_url == engine.url
        assert ex.secrets_dir.startswith(engine.state_dir)
        await ex.close()

    arun(body)
