"""The process executor and worker on real namespaces: lifecycle, isolation, secrets, stop, adoption.

Each test gets a throwaway node-like network namespace (the node side of the task bridge lives there),
a cgroup parent and a state directory; the fixture removes all of them and asserts nothing leaked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agents.state.objects import TaskState
from agents.worker.agent import Worker
from agents.worker.executor import cgroups
from agents.worker.executor.base import LogQuery
from agents.worker.executor.process import ProcessExecutor
from tests.integration.workerkit import REPO, arun, collect, pairs, shutdown
from tests.unit.worker.fakes import FakeSession, assign, make_task

pytestmark = pytest.mark.netns


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
        leaked = [f"process {pid}: {cmd}" for pid, cmd in _wait_gone(state_dir)]
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


def node_processes(state_dir: str) -> dict[int, str]:
    """The launcher and shims of one state directory (they carry its socket path in their command line)."""
    needle = os.path.join(state_dir, "worker", "launcher.sock").encode()
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read()
            except OSError:
                continue
            if needle in cmd.split(b"\0"):
                found[int(entry)] = cmd.replace(b"\0", b" ").decode(errors="replace")[-80:]
    return found


def _wait_gone(state_dir: str, timeout: float = 3.0) -> list[tuple[int, str]]:
    """Give the launcher a moment to notice it is idle; kill and return whatever is still there."""
    deadline = time.monotonic() + timeout
    while (left := node_processes(state_dir)) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return sorted(left.items())


def ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


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
        assert pairs(await collect(w.logs("bad"))) == [("stderr", b"oops\n")]
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


def test_network_failure_fails_the_task_and_heals(node: Node) -> None:
    """A bridge deleted behind the agent's back: the task fails with the kernel's reason and leaves
    nothing; the next task gets the bridge back."""

    async def body() -> None:
        s = FakeSession()
        w = Worker(node.state_dir, s, node.executor())
        await w.apply(assign([make_task("t1", args=["sleep", "100"])]))
        await s.wait("t1", "running")
        assert node.run("ip", "link", "del", "tasks0").returncode == 0
        await w.apply(assign([make_task("t2", args=["sleep", "100"], slot=2)]))
        u = await s.wait("t2", "failed")
        assert u["err"] == "network setup failed: find tasks0: No such device" and u["exit_code"] == 128
        await w.apply(assign([make_task("t3", args=["sleep", "100"], slot=3)]))
        u = await s.wait("t3", "running")
        assert inside(u["pid"], "ip", "-o", "-4", "addr", "show", "eth0").returncode == 0
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
        tail = [e.data async for e in w.logs("chatty", LogQuery(tail=2))]
        assert tail == [b"line-1998\n", b"line-1999\n"]
        await shutdown(w)

    arun(body)


def test_follow_logs_until_exit(node: Node) -> None:
    async def body() -> None:
        s = FakeSession()
        w = Worker(node.state_dir, s, node.executor())
        await w.apply(assign([make_task("f", args=["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.1; done"])]))
        await s.wait("f", "running")
        got = [e.data async for e in w.logs("f", LogQuery(follow=True))]
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
        pids = {{t: s.latest[t]["pid"] for t in ("a1", "a2", "a3")}}
        print(json.dumps({{**pids, "launcher": w.executor.launcher.pid}}), flush=True)
        await asyncio.sleep(1000)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("launcher_dies", [False, True], ids=["launcher-lives", "launcher-killed"])
def test_readoption_after_agent_crash(node: Node, launcher_dies: bool) -> None:
    """The agent (and maybe its launcher) is SIGKILLed with tasks running: the next agent adopts them,
    learns the exit code of one that ended meanwhile, and starts new tasks (on a new launcher if needed)."""
    import json

    script = _FIRST_AGENT.format(repo=REPO, state=node.state_dir, netns=node.netns, cg=node.cgroup)
    first = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        pids = json.loads(first.stdout.readline())
    finally:
        first.kill()  # the agent crashes; its tasks must not notice
        first.wait()
    if launcher_dies:
        os.kill(pids["launcher"], signal.SIGKILL)
    time.sleep(0.5)  # a3 exits while no agent runs

    async def body() -> None:
        s = FakeSession()
        ex = node.executor()
        w = Worker(node.state_dir, s, ex)
        await w.start()
        a1 = await s.wait("a1", "running")
        assert a1["pid"] == pids["a1"]
        # The manager's full set (it still believes all three run): nothing is started again, and the
        # task that exited while no agent ran ends with its own exit code.
        await w.apply(assign([make_task("a1", args=["sleep", "1000"], status=TaskState.RUNNING),
                              make_task("a2", image="nginx", slot=2, status=TaskState.RUNNING),
                              make_task("a3", args=["sh", "-c", "sleep 0.3; exit 4"], slot=3,
                                        status=TaskState.RUNNING)], full=True))
        a3 = await s.wait("a3", "failed")
        assert a3["exit_code"] == 4 and a3["err"] == "task: non-zero exit (4)"
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
        # New work goes to the surviving launcher, or to a fresh one.
        await w.apply(assign([make_task("a4", args=["sleep", "100"], slot=4)]))
        await s.wait("a4", "running")
        assert (ex.launcher.pid == pids["launcher"]) is not launcher_dies
        assert ppid(ex._recs[w.find("a4").id].shim_pid) == ex.launcher.pid
        await shutdown(w)

    arun(body)


def test_one_launcher_forks_every_shim_and_outlives_an_agent_restart(node: Node) -> None:
    async def body() -> None:
        s = FakeSession()
        ex = node.executor()
        w = Worker(node.state_dir, s, ex)
        await w.apply(assign([make_task("t1", args=["sleep", "100"]), make_task("t2", image="nginx", slot=2)]))
        a, b = await s.wait("t1", "running"), await s.wait("t2", "running")
        launcher = ex.launcher.pid
        shims = {tid: ex._recs[w.find(tid).id].shim_pid for tid in ("t1", "t2")}
        assert launcher > 0 and {ppid(p) for p in shims.values()} == {launcher}
        assert ppid(a["pid"]) == shims["t1"] and ppid(b["pid"]) == shims["t2"]  # programs: the shims' children
        with open(f"/proc/{b['pid']}/comm") as fh:
            assert fh.read().strip() == "nginx"  # a catalog program runs in its forked child, named after itself
        # An agent restart: the launcher keeps its shims, and the next agent connects to it.
        await w.stop()
        assert os.path.exists(f"/proc/{launcher}")
        s2 = FakeSession()
        ex2 = node.executor()
        w2 = Worker(node.state_dir, s2, ex2)
        await w2.start()
        await w2.apply(assign([make_task("t3", args=["sleep", "100"], slot=3)]))
        await s2.wait("t3", "running")
        assert ex2.launcher.pid == launcher
        assert ppid(ex2._recs[w2.find("t3").id].shim_pid) == launcher
        await shutdown(w2)

    arun(body)
    assert _wait_gone(node.state_dir) == []  # idle and unowned: the launcher exits by itself


def test_burst_of_starts_beyond_the_launchers_queue(node: Node) -> None:
    """More starts than the launcher's socket buffer holds while it is busy (stopped, here; the buffer
    made small): senders wait their turn, and every task starts once it catches up."""

    async def body() -> None:
        s = FakeSession()
        ex = node.executor(max_parallel_starts=40)
        w = Worker(node.state_dir, s, ex)
        await w.apply(assign([make_task("first", args=["sleep", "100"])]))
        await s.wait("first", "running")
        assert ex.launcher._sock is not None
        ex.launcher._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # ~10 messages, not ~280
        os.kill(ex.launcher.pid, signal.SIGSTOP)
        try:
            await w.apply(assign([make_task(f"b{i}", args=["sleep", "100"], slot=i + 2) for i in range(30)]))
            await asyncio.sleep(0.5)
            assert not any(s.states(f"b{i}").count("running") for i in range(30))
        finally:
            os.kill(ex.launcher.pid, signal.SIGCONT)
        for i in range(30):
            await s.wait(f"b{i}", "running", timeout=20)
        shims = {ex._recs[w.find(f"b{i}").id].shim_pid for i in range(30)}
        assert len(shims) == 30 and {ppid(p) for p in shims} == {ex.launcher.pid}
        await shutdown(w)

    arun(body, timeout=60)


def test_launcher_killed_with_starts_in_flight(node: Node) -> None:
    """Spawn requests the launcher never read die with it (their pipes close): the executor notices the
    silence, starts a new launcher and the tasks run; tasks the old one started keep running."""

    async def body() -> None:
        s = FakeSession()
        ex = node.executor()
        w = Worker(node.state_dir, s, ex)
        await w.apply(assign([make_task("before", args=["sleep", "100"])]))
        before = await s.wait("before", "running")
        old = ex.launcher.pid
        os.kill(old, signal.SIGSTOP)
        await w.apply(assign([make_task(f"k{i}", args=["sleep", "100"], slot=i + 2) for i in range(3)]))
        await asyncio.sleep(0.3)
        os.kill(old, signal.SIGKILL)
        for i in range(3):
            await s.wait(f"k{i}", "running")
        assert ex.launcher.pid not in (0, old)
        assert records_alive(before["pid"])
        assert s.states("before") == ["accepted", "preparing", "ready", "starting", "running"]
        await shutdown(w)

    arun(body)


def records_alive(pid: int) -> bool:
    from agents.worker.executor import records

    return records.alive(pid, records.proc_start_time(pid))


def test_launcher_running_other_code_retires(node: Node) -> None:
    """An agent with different code (here: another interpreter path) never uses the old launcher: that
    one stops listening, keeps serving its own agent, and exits once idle."""
    other_python = os.path.join(node.state_dir, "python-other")
    os.symlink(sys.executable, other_python)

    async def body() -> None:
        s = FakeSession()
        ex = node.executor()
        w = Worker(node.state_dir, s, ex)
        await w.apply(assign([make_task("old", args=["sleep", "100"])]))
        await s.wait("old", "running")
        first = ex.launcher.pid
        s2 = FakeSession()
        ex2 = node.executor(python=other_python)
        w2 = Worker(node.state_dir, s2, ex2)
        await w2.apply(assign([make_task("new", args=["sleep", "100"], slot=2)]))
        await s2.wait("new", "running")
        assert ex2.launcher.pid not in (0, first)
        await w.apply(assign([make_task("old2", args=["sleep", "100"], slot=3)]))  # still served by its own
        await s.wait("old2", "running")
        assert ex.launcher.pid == first and ppid(ex._recs[w.find("old2").id].shim_pid) == first
        await shutdown(w)
        await shutdown(w2)

    arun(body)


def test_mesh_resolv_conf_and_overlay_mtu(node: Node) -> None:
    async def body() -> None:
        s = FakeSession()
        ex = node.executor()
        ex.net.resolv_conf = lambda gateways: f"nameserver {gateways[0]}\noptions ndots:0\n"  # the mesh's hook
        w = Worker(node.state_dir, s, ex)
        await w.apply(assign([make_task("o", args=["sleep", "100"], addresses=[("netxyz", "10.0.9.5/24")]),
                              make_task("f", args=["sleep", "100"], slot=2)]))
        o, f = await s.wait("o", "running"), await s.wait("f", "running")
        assert inside(o["pid"], "cat", "/etc/resolv.conf").stdout == "nameserver 10.0.9.1\noptions ndots:0\n"
        assert "nameserver 10.0.9.1" not in inside(f["pid"], "cat", "/etc/resolv.conf").stdout  # no overlay
        link = inside(o["pid"], "ip", "-o", "link", "show", "eth0").stdout
        assert " mtu 1450 " in link
        route = inside(o["pid"], "ip", "route", "show", "default").stdout
        assert route.startswith("default via 10.0.9.1 dev eth0")
        assert inside(o["pid"], "ip", "-o", "link", "show", "lo").stdout.count("UP") >= 1
        host_end = node.run("ip", "-o", "link", "show", f"v{o['container_id'][:12]}0").stdout
        assert "master tn" in host_end and " mtu 1450 " in host_end
        await shutdown(w)

    arun(body)


# ----------------------------------------------------------------------------------------- rtnetlink


def test_rtnetlink_requests_and_errors(node: Node) -> None:
    """The netlink client the shims wire tasks with, checked against iproute2's view."""
    import errno

    from agents.worker.executor.rtnetlink import NetlinkError, Rtnl

    peer_ns = f"{node.name}p"
    subprocess.run(["ip", "netns", "add", peer_ns], check=True)
    try:
        with Rtnl.open_in(node.netns) as nl, Rtnl.open_in(f"/run/netns/{peer_ns}") as peer:
            nl.add_bridge("tbrx")
            with pytest.raises(NetlinkError) as e:
                nl.add_bridge("tbrx")
            assert e.value.errno == errno.EEXIST and "add bridge tbrx" in str(e.value)
            with pytest.raises(NetlinkError) as e:
                nl.link_index("nosuchlink")
            assert e.value.errno == errno.ENODEV
            br = nl.link_index("tbrx")
            nl.add_address(br, "10.9.0.1/24")
            fd = os.open(f"/run/netns/{peer_ns}", os.O_RDONLY)
            try:
                nl.add_veth("vtx0", "eth0", peer_netns_fd=fd, mtu=1400, master=br)
            finally:
                os.close(fd)
            eth0 = peer.link_index("eth0")
            peer.add_address(eth0, "10.9.0.5/24")
            peer.set_up(eth0)
            peer.set_up(peer.link_index("lo"))
            peer.add_default_route("10.9.0.1", eth0)
        host_end = node.run("ip", "-o", "link", "show", "vtx0").stdout
        assert "master tbrx" in host_end and " mtu 1400 " in host_end and ",UP" in host_end
        # One queue each, asked for at creation: the kernel's default (one per CPU, then shrunk to one)
        # waits for an RCU grace period under the RTNL lock, which serialised a burst of task starts.
        assert "numtxqueues 1 numrxqueues 1 " in node.run("ip", "-d", "-o", "link", "show", "vtx0").stdout
        details = subprocess.run(["ip", "-n", peer_ns, "-d", "-o", "link", "show", "eth0"], capture_output=True,
                                 text=True).stdout
        assert "numtxqueues 1 numrxqueues 1 " in details
        assert "inet 10.9.0.1/24" in node.run("ip", "-o", "addr", "show", "tbrx").stdout
        run_peer = ["ip", "netns", "exec", peer_ns]
        out = subprocess.run([*run_peer, "ip", "-o", "addr", "show", "eth0"], capture_output=True, text=True).stdout
        assert "inet 10.9.0.5/24" in out
        out = subprocess.run([*run_peer, "ip", "route", "show", "default"], capture_output=True, text=True).stdout
        assert out.startswith("default via 10.9.0.1 dev eth0")
        ping = subprocess.run([*run_peer, "ping", "-c", "1", "-W", "2", "10.9.0.1"], capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    finally:
        subprocess.run(["ip", "netns", "del", peer_ns], check=False)
