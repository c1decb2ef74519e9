"""The process executor and worker on real namespaces: lifecycle, isolation, secrets, stop, adoption.

Each test gets a throwaway node-like network namespace (the node side of the task bridge lives there),
a cgroup parent and a state directory; the fixture removes all of them and asserts nothing leaked.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from agents.state.objects import TaskState
from agents.worker.agent import Worker
from agents.worker.executor import cgroups
from agents.worker.executor.process import ProcessExecutor
from tests.unit.worker.fakes import FakeSession, assign, make_task

pytestmark = pytest.mark.netns

T = TypeVar("T")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Node:
    name: str
    netns: str
    state_dir: str
    cgroup: str | None

    def executor(self, **kw: Any) -> ProcessExecutor:
        return ProcessExecutor(self.state_dir, node_netns=self.netns, cgroup_parent=self.cgroup, **kw)

    def run(self, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        """Run a command in the node's network namespace."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True,
                              timeout=timeout)

    def http_get(self, addr: str, path: str = "/") -> str:
        code = (
            "import urllib.request,sys;"
            f"print(urllib.request.urlopen('http://{addr}{path}', timeout=5).read().decode())"
        )
        for _ in range(50):
            r = self.run(sys.executable, "-I", "-S", "-c", code)
            if r.returncode == 0:
                return r.stdout
            time.sleep(0.05)
        raise AssertionError(f"GET http://{addr}{path} failed: {r.stderr}")


@pytest.fixture
def node() -> Iterator[Node]:
    name = f"lct-w{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    state_dir = tempfile.mkdtemp(prefix="lct-worker-")
    mount, own = cgroups.cgroup2_mount(), cgroups.own_cgroup()
    cg = os.path.join(mount, own.lstrip("/"), name) if mount and own is not None else None
    n = Node(name, f"/run/netns/{name}", state_dir, cg)
    try:
        yield n
    finally:
        leaked = []
        if cg and os.path.isdir(cg):
            for sub in os.listdir(cg):
                path = os.path.join(cg, sub)
                if os.path.isdir(path):
                    leaked.append(f"cgroup {sub[:12]} procs={cgroups.TaskCgroups.procs(path)}")
                    cgroups.TaskCgroups.remove(path)
            os.rmdir(cg)
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not leaked, f"left behind: {leaked}"


def arun(fn: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
    async def main() -> T:
        async with asyncio.timeout(timeout):
            return await fn()

    return asyncio.run(main())


async def shutdown(worker: Worker) -> None:
    await worker.shutdown_tasks()
    await worker.stop()


def inside(pid: int, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command in a task's namespaces (like ``docker exec``)."""
    return subprocess.run(["nsenter", "-t", str(pid), "-n", "-m", "-u", *argv], capture_output=True, text=True,
                          timeout=10)


# --------------------------------------------------------------------------------------- lifecycle


def test_lifecycle_complete_and_failed_exit_codes(node: Node) -> None:
    async def body() -> None:
        s = FakeSession()
        w = Worker(node.state_dir, s, node.executor())
        await w.start()
        await w.apply(assign([
            make_task("ok", args=["sh", "-c", "echo hi"]),
            make_task("bad", args=["sh", "-c", "echo oops >&2; exit 3"]),
        ], full=True))
        ok = await s.wait("ok", "complete")
        bad = await s.wait("bad", "failed")
        assert s.states("ok") == ["accepted", "preparing", "ready", "starting", "running", "complete"]
        assert ok["exit_code"] == 0 and ok["message"] == "finished" and len(ok["container_id"]) == 64
        assert bad["exit_code"] == 3 and bad["err"] == "task: non-zero exit (3)"
        entries = [e async for e in w.logs("bad")]
        assert [(e.stream, e.data) for e in entries] == [("stderr", b"oops\n")]
        ps = w.containers(all=True)
        assert {p["Names"][0] for p in ps} == {"/web.1.ok", "/web.1.bad"}
        assert all(p["State"] == "exited" and p["Status"].startswith("Exited (") for p in ps)
        await shutdown(w)

    arun(body)


def test_unknown_image_is_rejected_with_dockers_text(node: Node) -> None:
    async def body() -> None:
        s = FakeSession()
        w = Worker(node.state_dir, s, node.executor())
        await w.apply(assign([make_task("t1", image="nosuch/image")]))
        u = await s.wait("t1", "rejected")
        assert u["err"] == "No such image: nosuch/image:latest"
        await w.apply(assign([make_task("t2", args=["no-such-binary-xyz"])]))
        u = await s.wait("t2", "failed")
        assert "executable file not found in $PATH" in u["err"]
        await shutdown(w)

    arun(body)


def test_kill_gives_137_and_stop_grace(node: Node) -> None:
    async def body() -> None:
        s = FakeSession()
        w = Worker(node.state_dir, s, node.executor())
        stubborn = ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"]
        polite = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"]
        await w.apply(assign([
            make_task("victim", args=["sleep", "1000"]),
            make_task("stubborn", args=stubborn, grace_s=0.5),
            make_task("polite", args=polite, grace_s=5),
        ]))
        for tid in ("victim", "stubborn", "polite"):
            await s.wait(tid, "running")
        # docker rm -f: the task fails with 137 and its container is gone.
        await w.remove_container("web.1.victim", force=True)
        u = await s.wait("victim", "failed")
        assert (u["exit_code"], u["err"]) == (137, "task: non-zero exit (137)")
        assert "victim" not in {c["Labels"]["com.docker.swarm.task.id"] for c in w.containers(all=True)}
        # Desired SHUTDOWN: SIGTERM, SIGKILL after the grace period.
        t0 = time.monotonic()
        await w.apply(assign([make_task("stubborn", args=stubborn, grace_s=0.5, desired=TaskState.SHUTDOWN),
                              make_task("polite", args=polite, grace_s=5, desired=TaskState.SHUTDOWN)]))
        u = await s.wait("polite", "shutdown")
        assert u["exit_code"] == 0 and time.monotonic() - t0 < 2
        u = await s.wait("stubborn", "shutdown")
        assert u["exit_code"] == 137 and 0.45 < time.monotonic() - t0 < 3
        await shutdown(w)

    arun(body)


def test_restart_on_failure_runs_the_replacement(node: Node) -> None:
    """The orchestrator replaces a failed task with a new one (faked here): the node runs it."""

    async def body() -> None:
        s = FakeSession()
        w = Worker(node.state_dir, s, node.executor())
        flaky = ["sh", "-c", "exit 1"]
        await w.apply(assign([make_task("try1", args=flaky)], full=True))
        await s.wait("try1", "failed")
        failed = make_task("try1", args=flaky, desired=TaskState.SHUTDOWN, status=TaskState.FAILED)
        await w.apply(assign([failed, make_task("try2", args=["sleep", "100"], slot=1)], full=True))
        await s.wait("try2", "running")
        assert [c["Names"][0] for c in w.containers()] == ["/web.1.try2"]
        assert s.states("try1").count("failed") == 1  # the failed one is not started again
        await shutdown(w)

    arun(body)


# --------------------------------------------------------------------------------------- isolation


def test_two_nginx_on_one_node_both_listen_on_80(node: Node) -> None:
    async def body() -> None:
        s = FakeSession()
        w = Worker(node.state_dir, s, node.executor())
        await w.apply(assign([make_task("n1", image="nginx"), make_task("n2", image="nginx", slot=2)]))
        a = await s.wait("n1", "running")
        b = await s.wait("n2", "running")
        ips = {c["Labels"]["com.docker.swarm.task.id"]: c["NetworkSettings"]["Networks"] for c in w.containers()}
        ip1 = next(iter(ips["n1"].values()))["IPAddress"]
        ip2 = next(iter(ips["n2"].values()))["IPAddress"]
        assert ip1 != ip2
        for ip in (ip1, ip2):
            assert "Welcome to nginx!" in await asyncio.to_thread(node.http_get, ip)
        for u in (a, b):
            r = inside(u["pid"], "hostname")
            assert r.stdout.strip() == u["container_id"][:12]
            r = inside(u["pid"], "ip", "-o", "-4", "addr", "show", "eth0")
            assert r.returncode == 0 and ("172.18.0." in r.stdout)
        await shutdown(w)

    arun(body)


def test_allocated_addresses_are_used(node: Node) -> None:
    async def body() -> None:
        s = FakeSession()
        w = Worker(node.state_dir, s, node.executor())
        await w.apply(assign([make_task("n1", image="nginx", addresses=[("netabc", "10.0.7.5/24")])]))
        await s.wait("n1", "running")
        assert "Welcome to nginx!" in await asyncio.to_thread(node.http_get, "10.0.7.5")
        await shutdown(w)

    arun(body)


def test_secrets_only_in_tasks_that_reference_them_and_never_on_disk(node: Node) -> None:
    value = "s3cret-" + secrets.token_hex(8)

    async def body() -> None:
        s = FakeSession()
        w = Worker(node.state_dir, s, node.executor())
        await w.apply(assign(
            [make_task("with", args=["sleep", "100"], secrets=[("sid1", "db_password")]),
             make_task("without", args=["sleep", "100"], slot=2)],
            secrets={"sid1": value.encode()},
        ))
        a = await s.wait("with", "running")
        b = await s.wait("without", "running")
        r = inside(a["pid"], "cat", "/run/secrets/db_password")
        assert r.stdout == value
        r = inside(a["pid"], "stat", "-c", "%a %U", "/run/secrets/db_password")
        assert r.stdout.split() == ["444", "root"]
        r = inside(a["pid"], "sh", "-c", "grep ' /run/secrets ' /proc/mounts")
        assert r.stdout.startswith("tmpfs /run/secrets tmpfs ro,")
        assert inside(b["pid"], "ls", "-A", "/run/secrets").stdout == ""
        assert not os.path.exists("/run/secrets/db_password")  # not on the node either
        hits = subprocess.run(["grep", "-rl", value, node.state_dir], capture_output=True, text=True)
        assert hits.stdout == "", f"secret written to disk: {hits.stdout}"
        await shutdown(w)

    arun(body)


def test_env_user_and_logs_bounded(node: Node) -> None:
    async def body() -> None:
        s = FakeSession()
        w = Worker(node.state_dir, s, node.executor(log_max_size=4096, log_max_files=2))
        await w.apply(assign([
            make_task("env", args=["sh", "-c", "echo $GREETING $HOSTNAME; id -u"], env=["GREETING=hello"]),
            make_task("chatty", args=["sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done"],
                      slot=2),
        ]))
        u = await s.wait("env", "complete")
        out = [e.data.decode() async for e in w.logs("env")]
        assert out == [f"hello {u['container_id'][:12]}\n", "0\n"]
        u = await s.wait("chatty", "complete")
        cdir = os.path.join(node.state_dir, "containers", u["container_id"])
        total = sum(os.path.getsize(os.path.join(cdir, f)) for f in os.listdir(cdir) if "json.log" in f)
        assert total <= 2 * 4096
        tail = [e.data async for e in w.logs("chatty", tail=2)]
        assert tail == [b"line-1998\n", b"line-1999\n"]
        await shutdown(w)

    arun(body)


def test_follow_logs_until_exit(node: Node) -> None:
    async def body() -> None:
        s = FakeSession()
        w = Worker(node.state_dir, s, node.executor())
        await w.apply(assign([make_task("f", args=["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.1; done"])]))
        await s.wait("f", "running")
        got = [e.data async for e in w.logs("f", follow=True)]
        assert got == [b"1\n", b"2\n", b"3\n"]
        await shutdown(w)

    arun(body)


# ------------------------------------------------------------------------------------- re-adoption

_FIRST_AGENT = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.path.insert(0, {repo!r})
    from agents.worker.agent import Worker
    from agents.worker.executor.process import ProcessExecutor
    from tests.unit.worker.fakes import FakeSession, assign, make_task

    async def main():
        s = FakeSession()
        w = Worker({state!r}, s, ProcessExecutor({state!r}, node_netns={netns!r}, cgroup_parent={cg!r}))
        await w.apply(assign([make_task("a1", args=["sleep", "1000"]),
                              make_task("a2", image="nginx", slot=2),
                              make_task("a3", args=["sh", "-c", "sleep 0.3; exit 4"], slot=3)], full=True))
        for t in ("a1", "a2", "a3"):
            await s.wait(t, "running")
        print(json.dumps({{t: s.latest[t]["pid"] for t in ("a1", "a2", "a3")}}), flush=True)
        await asyncio.sleep(1000)

    asyncio.run(main())
    """
)


def test_readoption_after_agent_crash(node: Node) -> None:
    import json

    script = _FIRST_AGENT.format(repo=REPO, state=node.state_dir, netns=node.netns, cg=node.cgroup)
    first = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        pids = json.loads(first.stdout.readline())
    finally:
        first.kill()  # the agent crashes; its tasks must not notice
        first.wait()
    time.sleep(0.5)  # a3 exits while no agent runs

    async def body() -> None:
        s = FakeSession()
        w = Worker(node.state_dir, s, node.executor())
        await w.start()
        a1 = await s.wait("a1", "running")
        assert a1["pid"] == pids["a1"]
        a3 = await s.wait("a3", "failed")
        assert a3["exit_code"] == 4 and a3["err"] == "task: non-zero exit (4)"
        # The manager's full set (the tasks still running): nothing is started again.
        await w.apply(assign([make_task("a1", args=["sleep", "1000"], status=TaskState.RUNNING),
                              make_task("a2", image="nginx", slot=2, status=TaskState.RUNNING)], full=True))
        await asyncio.sleep(0.3)
        assert s.states("a1") == ["running"] and s.states("a2") == ["running"]
        assert len(w.containers()) == 2
        nets = next(
            c["NetworkSettings"]["Networks"] for c in w.containers() if c["Names"] == ["/web.2.a2"])
        assert "Welcome to nginx!" in await asyncio.to_thread(node.http_get, next(iter(nets.values()))["IPAddress"])
        # An adopted task's exit is noticed (pidfd; the supervisor is not our child) with its code.
        os.kill(pids["a1"], signal.SIGKILL)
        u = await s.wait("a1", "failed")
        assert u["exit_code"] == 137
        await shutdown(w)

    arun(body)
