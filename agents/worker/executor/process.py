"""The default executor: each task is a process tree isolated like a container, no engine needed.

Tasks start through the node's launcher (`launcher.py`, reached with `launchclient.py`): a long-lived
process with the supervisor and the catalog programs already imported, which forks one supervisor
(`shim.py`) per task; the supervisor sets up the task's namespaces and network (netlink) and forks the
program. The executor's part of a start is a cgroup, a record, four lines on a pipe and a bridge
check -- a few milliseconds, most of it in other processes.

Per task:

* a container id (64 hex; the short 12 are the hostname), ``<state>/containers/<id>/`` with the
  json-file log (bounded) and the exit status;
* a cgroup below the agent's (`cgroups.TaskCgroups`), limits where the controllers are delegated;
* its own network, mount and UTS namespaces: a veth per address on the node's task bridge
  (`netns.TaskNetworking`), a private tmpfs /run and a read-only tmpfs /run/secrets with exactly the
  referenced secrets, written from memory;
* a runtime record (`records.RecordStore`) so a restarted agent adopts the task instead of starting a
  duplicate: the supervisor's pid and start time identify it, a pidfd tells when it exits (supervisors
  are the launcher's children, never the agent's), and the exit status comes from the file the
  supervisor writes -- so adoption works whether the launcher is still there or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import marshal
import os
import pwd
import secrets as _secrets
import shutil
import signal as _signal
import sys
import time
from collections.abc import AsyncIterator

from agents.state.objects import Task
from agents.worker.executor import cgroups, fdio, logs, records
from agents.worker.executor.base import Container, LogQuery, SecretFile, StartFailed, TaskRejected
from agents.worker.executor.launchclient import LauncherClient, LauncherError, LineReader
from agents.worker.executor.netns import Attachment, NetworkError, TaskNetworking, attachment_for
from agents.worker.images import catalog

log = logging.getLogger(__name__)

_DEFAULT = object()


def _resolve_user(user: str) -> tuple[int | None, int | None, list[int]]:
    """``uid[:gid]`` or ``name[:group]`` -> ids (None: stay root); Docker's error text if unknown."""
    if not user:
        return None, None, []
    name, _, group = user.partition(":")
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        uid, gid = pw.pw_uid, pw.pw_gid
    except KeyError:
        if not name.isdigit():
            raise StartFailed(f"unable to find user {name}: no matching entries in passwd file") from None
        uid, gid = int(name), int(name) if not group else 0
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise StartFailed(f"unable to find group {group}: no matching entries in group file") from None
    return uid, gid, []


class ProcessExecutor:
    """See the module docstring. ``node_netns``: the node's side of task networking (bridges, veth host
    ends) lives in that namespace (tests); ``cgroup_parent``: where task cgroups go (default:
    ``<agent cgroup>/tasks``; None: none); ``python``: the interpreter the launcher runs on."""

    name = "process"

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        node_netns: str | None = None,
        cgroup_parent: str | object | None = _DEFAULT,
        fallback_subnet: str = "172.18.0.0/24",
        fallback_bridge: str = "tasks0",
        python: str = sys.executable,
        log_max_size: int = logs.DEFAULT_MAX_SIZE,
        log_max_files: int = logs.DEFAULT_MAX_FILES,
        max_parallel_starts: int = 8,
        start_timeout_s: float = 15.0,
    ) -> None:
        self.state_dir = str(state_dir)
        self.containers_dir = os.path.join(self.state_dir, "containers")
        os.makedirs(self.containers_dir, mode=0o710, exist_ok=True)
        self.records = records.RecordStore(os.path.join(self.state_dir, "worker", "tasks"))
        self.net = TaskNetworking(node_netns, fallback_subnet, fallback_bridge)
        parent = cgroups.default_parent() if cgroup_parent is _DEFAULT else cgroup_parent
        self.cgroups = cgroups.TaskCgroups(parent if isinstance(parent, str) else None)
        self.python = python
        self.log_max_size = log_max_size
        self.log_max_files = log_max_files
        self.start_timeout_s = start_timeout_s
        self._starts = asyncio.Semaphore(max_parallel_starts)
        worker_dir = os.path.join(self.state_dir, "worker")
        self.launcher = LauncherClient(
            os.path.join(worker_dir, "launcher.sock"),
            python=python,
            node_netns=node_netns,
            log_path=os.path.join(worker_dir, "launcher.log"),
            timeout_s=start_timeout_s,
        )
        self._recs: dict[str, records.RuntimeRecord] = {}
        self._containers: dict[str, Container] = {}
        self._pending: dict[str, dict[str, object]] = {}
        """Container id -> supervisor config not yet handed over (holds secret data, memory only)."""
        self._watches: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------ paths

    def container_dir(self, cid: str) -> str:
        return os.path.join(self.containers_dir, cid)

    def log_path(self, cid: str) -> str:
        return os.path.join(self.container_dir(cid), f"{cid}-json.log")

    def exit_path(self, cid: str) -> str:
        return os.path.join(self.container_dir(cid), "exit")

    def _used_addresses(self) -> set[str]:
        return {
            a.partition("/")[0] for c in self._containers.values() if c.state != "exited" for a in c.addresses
        }

    # ----------------------------------------------------------------------------------------- create

    async def create(self, task: Task, secrets: list[SecretFile]) -> Container:
        cs = task.spec.container
        try:
            spec = catalog.resolve(cs.image)
            argv = catalog.build_argv(spec, cs.command or None, None, cs.args)
        except catalog.ImageError as e:
            raise TaskRejected(str(e)) from None
        start_error = ""
        try:
            exec_argv = catalog.host_argv(spec, argv, python=self.python)
        except catalog.ImageError as e:
            exec_argv, start_error = [], str(e)
        cid = _secrets.token_hex(32)
        hostname = cs.hostname or cid[:12]
        env = spec.env_dict()
        env["HOSTNAME"] = hostname
        env.setdefault("HOME", "/root")
        catalog.overlay_env(env, cs.env)
        uid, gid, groups = _resolve_user(cs.user)
        if uid is not None and "HOME" not in {e.partition("=")[0] for e in cs.env}:
            with contextlib.suppress(KeyError):
                env["HOME"] = pwd.getpwuid(uid).pw_dir
        atts = [attachment_for(n.network_id, a) for n in task.networks for a in n.addresses[:1] if n.network_id]
        if not atts:
            atts = [self.net.fallback_attachment(self._used_addresses())]
        c = Container(
            id=cid,
            task=task,
            image=cs.image,
            argv=argv,
            created=time.time(),
            addresses=[a.address for a in atts],
            hostname=hostname,
            error=start_error,
        )
        self._containers[cid] = c  # before any await: concurrent creates see its address as taken
        rec = records.RuntimeRecord(
            task_id=task.id,
            container_id=cid,
            task=task.to_dict(),
            image=cs.image,
            argv=argv,
            created=c.created,
            addresses=c.addresses,
        )
        lim = task.spec.resources.limits
        await asyncio.to_thread(self._materialize, rec, lim.memory_bytes, lim.nano_cpus)
        cgroup = rec.cgroup
        self._pending[cid] = {
            "argv": exec_argv,
            "env": env,
            "cwd": cs.dir or spec.working_dir or "/",
            "uid": uid,
            "gid": gid,
            "groups": groups,
            "hostname": hostname,
            "cgroup": cgroup,
            "secrets": [{"name": s.name, "data": s.data, "uid": s.uid, "gid": s.gid, "mode": s.mode} for s in secrets],
            "log_path": self.log_path(cid),
            "log_max_size": self.log_max_size,
            "log_max_files": self.log_max_files,
            "exit_path": self.exit_path(cid),
            "attachments": [(a.bridge, a.address, a.gateway) for a in atts],
        }
        self._recs[cid] = rec
        return c

    def _materialize(self, rec: records.RuntimeRecord, memory_bytes: int, nano_cpus: int) -> None:
        """The container's directory, cgroup and first record -- in a worker thread: file system
        latency (a journal commit on a busy disk) must not stall the loop that starts other tasks."""
        os.makedirs(self.container_dir(rec.container_id), mode=0o710)
        rec.cgroup = self.cgroups.create(rec.container_id, memory_bytes, nano_cpus)
        self.records.save(rec)

    # ------------------------------------------------------------------------------------------ start

    async def start(self, c: Container) -> None:
        cfg = self._pending.pop(c.id, None)
        if cfg is None:
            raise StartFailed(f"container {c.short_id} cannot be started twice")
        if c.error:
            raise StartFailed(c.error)
        async with self._starts:
            await self._spawn(c, cfg)

    async def _spawn(self, c: Container, cfg: dict[str, object]) -> None:
        rec = self._recs[c.id]
        shim = 0
        ctl: LineReader | None = None
        go_w = -1
        try:
            atts = [Attachment(*a) for a in cfg.pop("attachments")]  # type: ignore[attr-defined]
            try:
                for att in atts:
                    await self.net.ensure_bridge(att)
            except NetworkError as e:
                raise StartFailed(f"network setup failed: {e}") from None
            cfg["attachments"] = self.net.wiring(c.id, atts)
            cfg["resolv_conf"] = self.net.resolv_text(atts)
            payload = marshal.dumps(cfg)
            del cfg  # the secrets' only copy now travels in the pipe
            for _ in range(2):
                ctl, go_w, shim = await self._fork_shim(payload)
                if shim:
                    break
                ctl.close()
                os.close(go_w)
                ctl, go_w = None, -1
                self.launcher.reset()  # it died before forking: start a new one, once
            if not shim or ctl is None:
                raise StartFailed(f"starting container failed: the task launcher exited (see {self.launcher.log_path})")
            del payload
            # Recorded with the program's pid below: a shim whose agent dies before ``go`` exits by itself
            # (EOF), and the task cgroup holds everything a restarted agent must kill.
            rec.shim_pid = shim
            rec.shim_start = records.proc_start_time(shim)
            line = await ctl.readline(self.start_timeout_s)
            while line.startswith(b"warn "):
                log.warning("task %s: %s", c.short_id, line[5:].decode(errors="replace"))
                line = await ctl.readline(self.start_timeout_s)
            if line != b"ready":
                if line.startswith(b"neterror "):
                    self.net.forget_bridges(atts)
                raise StartFailed(_shim_error(line))
            os.write(go_w, b"go\n")
            os.close(go_w)
            go_w = -1
            line = await ctl.readline(self.start_timeout_s)
            if not line.startswith(b"pid "):
                raise StartFailed(_shim_error(line))
            pid = int(line.split()[1])
        except BaseException as e:
            if shim:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(shim, _signal.SIGKILL)
            c.state, c.exit_code, c.finished_at = "exited", 128, time.time()
            c.error = str(e) if isinstance(e, StartFailed) else f"starting container failed: {e!r}"
            rec.state, rec.exit_code, rec.error, rec.finished_at = "exited", 128, c.error, c.finished_at
            self.records.save(rec)
            await asyncio.to_thread(self._cleanup_cgroup, rec)
            c.exited.set()
            if isinstance(e, StartFailed | asyncio.CancelledError):
                raise
            raise StartFailed(c.error) from e
        finally:
            if ctl is not None:
                ctl.close()
            if go_w >= 0:
                with contextlib.suppress(OSError):
                    os.close(go_w)
        c.pid, c.state, c.started_at = pid, "running", time.time()
        rec.pid, rec.pid_start, rec.state, rec.started_at = pid, records.proc_start_time(pid), "running", c.started_at
        saving = asyncio.ensure_future(asyncio.to_thread(self.records.save, rec))
        try:
            await asyncio.shield(saving)  # off the loop, like `_materialize`
        finally:
            self._watch(c)  # even if the start is cancelled now: the task runs and must be watched

    async def _fork_shim(self, payload: bytes) -> tuple[LineReader, int, int]:
        """Have the launcher fork a supervisor on fresh pipes and give it ``payload``: its control
        reader, the go pipe's write end, and its pid (0 if the launcher vanished before forking)."""
        cfg_r, cfg_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        go_r, go_w = os.pipe()
        try:
            await self.launcher.spawn([cfg_r, ctl_w, go_r])
        except BaseException as e:
            for fd in (cfg_w, ctl_r, go_w):
                os.close(fd)
            if isinstance(e, LauncherError):
                raise StartFailed(f"starting container failed: {e}") from None
            raise
        finally:
            for fd in (cfg_r, ctl_w, go_r):
                os.close(fd)
        ctl = LineReader(ctl_r)
        try:
            await fdio.hand_over(cfg_w, payload)
            line = await ctl.readline(self.start_timeout_s)
        except BaseException:
            ctl.close()
            os.close(go_w)
            raise
        if line.startswith(b"shim "):
            return ctl, go_w, int(line.split()[1])
        if line:
            ctl.close()
            os.close(go_w)
            raise StartFailed(_shim_error(line))
        return ctl, go_w, 0

    # ----------------------------------------------------------------------------------- exit watching

    def _watch(self, c: Container) -> None:
        """Notice the supervisor's exit through a pidfd (works for adopted, non-child processes too)."""
        rec = self._recs[c.id]
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(rec.shim_pid)
        except ProcessLookupError:
            self._on_exit(c)
            return
        if not records.alive(rec.shim_pid, rec.shim_start):  # pid reused or exited before we looked
            os.close(pidfd)
            self._on_exit(c)
            return
        self._watches[c.id] = pidfd

        def ready() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._watches.pop(c.id, None)
            self._on_exit(c)

        loop.add_reader(pidfd, ready)

    def _on_exit(self, c: Container) -> None:
        rec = self._recs[c.id]
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(rec.shim_pid, os.WNOHANG)  # reap it if it is our child
        code = _read_exit(self.exit_path(c.id))
        if code is None:
            code = 137  # the supervisor itself was killed (cgroup kill, node halt): so was the task
            c.error = c.error or "task: supervisor killed"
        try:
            finished = os.stat(self.exit_path(c.id)).st_mtime
        except OSError:
            finished = time.time()
        c.state, c.exit_code, c.finished_at = "exited", code, finished
        rec.state, rec.exit_code, rec.finished_at = "exited", code, finished
        self.records.save(rec)
        if rec.cgroup:
            cg = rec.cgroup
            asyncio.get_running_loop().run_in_executor(None, cgroups.TaskCgroups.remove, cg)
        c.exited.set()

    def _cleanup_cgroup(self, rec: records.RuntimeRecord) -> None:
        if rec.cgroup:
            cgroups.TaskCgroups.remove(rec.cgroup)

    # ------------------------------------------------------------------------------------- operations

    async def signal(self, c: Container, sig: int) -> None:
        """Signal the task's program (Docker signals the container's init, not the supervisor)."""
        rec = self._recs.get(c.id)
        if rec is None or c.state != "running":
            raise ProcessLookupError(f"container {c.short_id} is not running")
        if not records.alive(rec.pid, rec.pid_start):
            raise ProcessLookupError(f"container {c.short_id} is not running")
        os.kill(rec.pid, sig)

    async def remove(self, c: Container) -> None:
        """Kill whatever is left, delete the cgroup, container directory and record."""
        self._pending.pop(c.id, None)
        rec = self._recs.get(c.id)
        if c.state == "running":
            with contextlib.suppress(ProcessLookupError):
                await self.signal(c, _signal.SIGKILL)
            try:
                async with asyncio.timeout(5):
                    await c.exited.wait()
            except TimeoutError:
                if rec is not None and rec.cgroup:
                    cgroups.TaskCgroups.kill(rec.cgroup)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await c.exited.wait()
        if rec is not None:
            await asyncio.to_thread(self._cleanup_cgroup, rec)
            self.records.delete(rec.task_id)
        pidfd = self._watches.pop(c.id, None)
        if pidfd is not None:
            asyncio.get_running_loop().remove_reader(pidfd)
            os.close(pidfd)
        await asyncio.to_thread(shutil.rmtree, self.container_dir(c.id), True)
        self._containers.pop(c.id, None)
        self._recs.pop(c.id, None)

    def logs(self, c: Container, query: LogQuery = LogQuery()) -> AsyncIterator[logs.LogEntry]:
        return logs.read_logs(self.log_path(c.id), query, running=lambda: c.state != "exited")

    # ----------------------------------------------------------------------------------- re-adoption

    async def prewarm(self) -> None:
        """Start (or reach) the node's launcher now: starting it costs a few hundred ms of CPU, which
        would otherwise delay the first tasks of a service and every task queued behind them."""
        try:
            await self.launcher.connect()
        except (LauncherError, OSError) as e:
            log.warning("task launcher not started ahead of tasks: %s", e)

    async def restore(self) -> list[Container]:
        """Containers this node had before the agent (re)started: running ones adopted, others as exited.

        A record left in ``created`` (the agent died while starting it) is cleaned up and not returned:
        the task is still below RUNNING for the manager, so the worker simply starts it again."""
        out = []
        for rec in self.records.load_all():
            try:
                task = Task.from_dict(rec.task)
            except (ValueError, TypeError):
                self.records.delete(rec.task_id)
                continue
            c = Container(
                id=rec.container_id,
                task=task,
                image=rec.image,
                argv=rec.argv,
                created=rec.created,
                pid=rec.pid,
                started_at=rec.started_at,
                finished_at=rec.finished_at,
                exit_code=rec.exit_code,
                addresses=list(rec.addresses),
                hostname=rec.container_id[:12],
                error=rec.error,
                adopted=True,
            )
            self._containers[c.id] = c
            self._recs[c.id] = rec
            if rec.state == "created":
                if rec.shim_pid and records.alive(rec.shim_pid, rec.shim_start):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(rec.shim_pid, _signal.SIGKILL)
                await self.remove(c)
                continue
            if rec.state == "running":
                c.state = "running"
                self._watch(c)  # exits found here are reported by the worker like any other exit
            else:
                c.state = "exited"
                c.exited.set()
            out.append(c)
        return out

    async def close(self) -> None:
        """Stop watching and let go of the launcher (tasks keep running: the next agent adopts them)."""
        loop = asyncio.get_running_loop()
        for pidfd in self._watches.values():
            loop.remove_reader(pidfd)
            os.close(pidfd)
        self._watches.clear()
        self._pending.clear()
        await self.launcher.close()


def _read_exit(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def _shim_error(line: bytes) -> str:
    text = line.decode(errors="replace")
    if text.startswith("neterror "):
        return f"network setup failed: {text[9:]}"
    if text.startswith("error "):
        return f"starting container failed: {text[6:]}"
    return "starting container failed: task supervisor exited early"
