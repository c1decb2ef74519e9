"""The Docker-engine executor against a real dockerd (Debian's docker.io), through the Executor protocol
and the real Worker: states, exit codes, stop grace, logs, adoption, secrets, env, labels, selection, and
task networking (``--network none`` containers wired onto the node's bridges with their allocated address).

The engine is the test's own (`tests.privatedockerd`) and touches nothing of the host: ``dockerd`` runs
under ``unshare`` in new pid, mount and network namespaces (loopback only, so nothing can leave; ``--bridge=none``,
``--iptables=false``: no docker0, no FORWARD policy, no br_netfilter), with its data root, exec root,
socket, pid file and daemon.json in a temp dir, a tmpfs over ``/run`` (containerd's shim sockets) and
its own cgroup parent. Stopping it kills the pid namespace, so no process can outlive the module; the
mount namespace takes every mount with it. Images come from ``docker import`` of a rootfs built here
from the host's busybox (no registry). The executor's secrets dir is a shared mount, so the per-task
tmpfs the executor mounts on the "node" propagates into the engine's mount namespace, as it would be
visible to dockerd on a VM where both share one. The engine's network namespace plays the node's: the
executor makes its task bridges there, and a task's address answers from there. The engine reports pids
in its own pid namespace, so the executor finds the container's process the way it must when an engine
does not share the agent's (`dockernet.task_netns`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets as pysecrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from agents.worker.agent import Worker, make_executor
from agents.worker.executor import base, secretfs
from agents.worker.executor.base import LogQuery
from agents.worker.executor.docker import (
    NETWORK_LABEL,
    SPEC_LABEL,
    TASK_LABEL,
    DockerExecutor,
    choose_executor,
    engine_reachable,
)
from tests import privatedockerd
from tests.integration import workerkit
from tests.integration.workerkit import REPO, collect, pairs, shutdown
from tests.unit.worker.fakes import FakeSession, assign, make_task

pytestmark = pytest.mark.netns

T = TypeVar("T")
LOOP = 'trap "exit 0" TERM; while :; do sleep 0.1; done'
"""A task that runs until asked to stop, and stops at once on SIGTERM."""


@dataclass
class Engine:
    url: str
    root: str
    state_dir: str
    """The agent's state dir for the executor (a shared mount: see the module docstring)."""
    netns: str = ""
    """The engine's network namespace, which plays the node's: the executor puts its task bridges there."""

    def executor(self) -> DockerExecutor:
        return DockerExecutor(self.url, self.state_dir, node_netns=self.netns)

    def api(self) -> Any:
        import docker

        return docker.APIClient(base_url=self.url, version="auto", timeout=30)

    def task_containers(self, task_id: str) -> list[dict[str, Any]]:
        api = self.api()
        try:
            return list(api.containers(all=True, filters={"label": f"{TASK_LABEL}={task_id}"}))
        finally:
            api.close()


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    reason = privatedockerd.unavailable()
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
        log = os.path.join(root, "dockerd.log")
        proc = privatedockerd.spawn(dockerd, log)
        try:
            privatedockerd.wait_ready(url, proc, log)
        except AssertionError as e:
            pytest.fail(str(e))
        eng.netns = f"/proc/{privatedockerd.init_pid(proc.pid)}/ns/net"
        privatedockerd.import_busybox(url, "alpine")
        yield eng
    finally:
        if proc is not None:
            privatedockerd.stop(url, proc, root, leaked)
        for target in sorted(privatedockerd.mounts_under(root), key=len, reverse=True):
            if target != state:
                leaked.append(f"mount {target}")
            subprocess.run(["umount", "-l", target], check=False)
        privatedockerd.remove_cgroup_parent(name, leaked)
        shutil.rmtree(root, ignore_errors=True)
        assert not leaked, f"left behind: {leaked}"


def arun(fn: Callable[[], Awaitable[T]]) -> T:
    """`workerkit.arun` with more time: the engine is slower to create and stop containers."""
    return workerkit.arun(fn, timeout=40)


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


def test_a_tag_pinned_to_an_unknown_digest_runs_the_engines_copy_of_the_tag(engine: Engine) -> None:
    digest = "sha256:" + "ab" * 32  # what `docker service create` pins from the agent's catalog

    async def body() -> None:
        ex = engine.executor()
        c = await ex.create(make_task("pinned", image=f"busybox:latest@{digest}", args=["true"]), [])
        api = engine.api()
        try:
            info = api.inspect_container(c.id)
        finally:
            api.close()
        assert info["Config"]["Image"] == "busybox:latest" and c.image == f"busybox:latest@{digest}"
        await ex.remove(c)
        for image in (f"nosuch:1@{digest}", f"busybox@{digest}"):  # no such tag; no tag to fall back to
            with pytest.raises(base.TaskRejected, match=f"^No such image: {image}$"):
                await ex.create(make_task("nopin", image=image, args=["true"]), [])
        assert engine.task_containers("nopin") == []
        await ex.close()

    arun(body)


def test_an_engine_that_is_not_up_yet(engine: Engine) -> None:
    """The agent may start before the node's engine answers: nothing fails for good."""
    later = os.path.join(engine.root, "later.sock")

    async def body() -> None:
        ex = DockerExecutor(f"unix://{later}", engine.state_dir, node_netns=engine.netns)  # asks the engine nothing
        with pytest.raises(base.TaskRejected, match=f"^the Docker engine at unix://{later} did not answer: "):
            await ex.create(make_task("early", args=["true"]), [])
        adopting = asyncio.ensure_future(ex.restore())  # waits: adoption comes before any start
        await asyncio.sleep(1.5)
        assert not adopting.done()
        os.symlink(engine.url.removeprefix("unix://"), later)  # the engine answers there now
        assert await asyncio.wait_for(adopting, 10) == []
        c = await ex.create(make_task("late", args=["true"]), [])
        await ex.remove(c)
        await ex.close()

    try:
        arun(body)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(later)


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
        assert pairs(await collect(ex.logs(c, LogQuery(tail=1)))) == [("stdout", b"out2\n")]
        assert pairs(await collect(ex.logs(c, LogQuery(stdout=False)))) == [("stderr", b"err1\n")]
        assert await collect(ex.logs(c, LogQuery(stdout=False, stderr=False))) == []
        since = (stamps[0] + stamps[1]) / 2
        assert pairs(await collect(ex.logs(c, LogQuery(since=since)))) == [("stderr", b"err1\n"), ("stdout", b"out2\n")]
        assert pairs(await collect(ex.logs(c, LogQuery(until=since)))) == [("stdout", b"out1\n")]
        await ex.remove(c)

        f = await ex.create(make_task("follow", args=["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"]), [])
        await ex.start(f)
        got = []
        async for e in ex.logs(f, LogQuery(follow=True)):  # ends when the container exits
            got.append(e.data)
        assert got == [b"tick 1\n", b"tick 2\n", b"tick 3\n"]
        await asyncio.wait_for(f.exited.wait(), 5)  # the stream ended because the task exited
        assert f.exit_code == 0
        g = await ex.create(make_task("quiet", args=["sh", "-c", LOOP]), [])
        await ex.start(g)
        follower = ex.logs(g, LogQuery(follow=True))
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


def test_env_labels_name_hostname_and_network_mode(engine: Engine) -> None:
    async def body() -> None:
        s = FakeSession()
        w = Worker(engine.state_dir, s, engine.executor())
        task = make_task("lbl", args=["sh", "-c", "echo A=$A; echo B=$B; hostname"], env=["A=1", "B=two words"],
                         grace_s=3)
        await w.apply(assign([task]))
        done = await s.wait("lbl", "complete", timeout=20)
        cid = done["container_id"]
        out = [e.data.decode().strip() for e in await collect(w.logs("lbl"))]
        assert out == ["A=1", "B=two words", cid[:12]]
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
        # No networks: a node-private address, recorded for adoption.
        assert json.loads(lab[NETWORK_LABEL]) == [["tasks0", "172.18.0.2/24", "172.18.0.1"]]
        assert info["HostConfig"]["NetworkMode"] == "none" and info["Config"]["StopTimeout"] == 3  # wired by us
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


# ----------------------------------------------------------------------------------------- network


def _in_node(engine: Engine, *argv: str) -> str:
    """A command in the node's network namespace (the engine's, where the task bridges are)."""
    res = subprocess.run(["nsenter", f"--net={engine.netns}", *argv], capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, f"{argv}: {res.stderr}"
    return res.stdout


def _in_task(engine: Engine, cid: str, script: str) -> str:
    api = engine.api()
    try:
        run = api.exec_create(cid, ["sh", "-c", script])
        return str(api.exec_start(run["Id"]).decode()).strip()
    finally:
        api.close()


WEB = "mkdir -p /tmp/w && hostname > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w"
"""busybox's httpd answering with the container's hostname (its short id)."""


def test_tasks_get_their_allocated_address_on_the_nodes_bridges(engine: Engine) -> None:
    async def body() -> None:
        ex = engine.executor()
        ex.net.resolv_conf = lambda gateways: f"nameserver {gateways[0]}\noptions ndots:0\n"  # the mesh's hook
        a = await ex.create(make_task("ova", args=["sh", "-c", WEB], addresses=[("ovnet1", "10.0.9.5/24")]), [])
        b = await ex.create(make_task("ovb", args=["sh", "-c", WEB], addresses=[("ovnet1", "10.0.9.6/24")]), [])
        f1 = await ex.create(make_task("fb1", args=["sh", "-c", LOOP]), [])
        f2 = await ex.create(make_task("fb2", args=["sh", "-c", LOOP]), [])
        assert [c.addresses for c in (a, b, f1, f2)] == [["10.0.9.5/24"], ["10.0.9.6/24"], ["172.18.0.2/24"],
                                                         ["172.18.0.3/24"]]
        for c in (a, b, f1, f2):
            await ex.start(c)  # returns once the container is wired
        # The task's IP answers from the node's namespace, and it is this container that answers.
        for c, ip in ((a, "10.0.9.5"), (b, "10.0.9.6")):
            got = ""
            for _ in range(50):
                try:
                    got = _in_node(engine, "curl", "-sS", "-m", "3", f"http://{ip}:8080/")
                    break
                except AssertionError as e:
                    got = str(e)
                    await asyncio.sleep(0.1)  # httpd not listening yet
            assert got.strip() == c.id[:12]
        # Inside: the allocated address on eth0, the node as default gateway, the overlay MTU, the mesh's DNS.
        assert "inet 10.0.9.5/24" in _in_task(engine, a.id, "ip -o -4 addr show dev eth0")
        route = _in_task(engine, a.id, "ip route show default").split()
        assert route[:5] == ["default", "via", "10.0.9.1", "dev", "eth0"]
        assert _in_task(engine, a.id, "cat /sys/class/net/eth0/mtu") == "1450"
        assert _in_task(engine, a.id, "cat /etc/resolv.conf") == "nameserver 10.0.9.1\noptions ndots:0"
        assert _in_task(engine, a.id, "wget -q -O - http://10.0.9.6:8080/") == b.id[:12]  # task to task
        assert "inet 172.18.0.2/24" in _in_task(engine, f1.id, "ip -o -4 addr show dev eth0")
        assert "nameserver 172.18.0.1" not in _in_task(engine, f1.id, "cat /etc/resolv.conf")  # no overlay: no mesh DNS
        # The node ends are ports of the network's bridge, which holds the gateway address.
        ports = _in_node(engine, "ip", "-o", "link", "show", "master", "tnovnet1")
        assert f"v{a.id[:12]}0@" in ports and f"v{b.id[:12]}0@" in ports
        assert "inet 10.0.9.1/24" in _in_node(engine, "ip", "-o", "-4", "addr", "show", "dev", "tnovnet1")
        await ex.close()

        # A restarted agent knows the adopted tasks' addresses: the next node-private one is free.
        ex2 = engine.executor()
        restored = {c.task.id: c for c in await ex2.restore()}
        assert {t: c.addresses for t, c in restored.items()} == {
            "ova": ["10.0.9.5/24"], "ovb": ["10.0.9.6/24"], "fb1": ["172.18.0.2/24"], "fb2": ["172.18.0.3/24"]}
        f3 = await ex2.create(make_task("fb3", args=["sh", "-c", LOOP]), [])
        assert f3.addresses == ["172.18.0.4/24"]
        for c in [*restored.values(), f3]:
            await ex2.remove(c)
        # Gone with the containers: their interfaces and the mesh resolv.conf files.
        assert " v" not in _in_node(engine, "ip", "-o", "link", "show", "type", "veth") + " "
        assert os.listdir(ex2.resolv_dir) == []
        await ex2.close()

    arun(body)


def test_a_task_whose_network_cannot_be_wired_is_killed_and_fails(engine: Engine) -> None:
    async def body() -> None:
        ex = DockerExecutor(engine.url, engine.state_dir, node_netns=engine.netns,
                            fallback_subnet="172.31.0.0/24", fallback_bridge="lo")  # loopback takes no ports
        c = await ex.create(make_task("nowire", args=["sh", "-c", LOOP]), [])
        with pytest.raises(base.StartFailed, match=r"network setup failed: add veth v\w+: Operation not supported"):
            await ex.start(c)
        assert c.state == "exited" and c.exit_code == 137  # it never ran without its network
        assert engine.task_containers("nowire")[0]["State"] == "exited"
        await ex.remove(c)
        await ex.close()
        _in_node(engine, "ip", "addr", "del", "172.31.0.1/24", "dev", "lo")

    arun(body)
