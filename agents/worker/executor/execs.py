"""``docker exec`` on the node: a new process inside a running task's namespaces and cgroup.

Works for every container whose ``Container.pid`` is the task's program on this host (the process
executor's swarm tasks and standalone containers; not the docker executor, whose engine has its own
exec). The process is spawned by the agent as ``nsexec.py`` (see there) which enters the task and
``execve``s the command, so the agent is its parent and reaps it.

What the exec'd process gets, as in Docker:

* the task's network, UTS (hostname = short id) and mount namespaces (its ``/run/secrets``), its cgroup;
* the command resolved like the task's own (`catalog.host_argv`: the host's binaries, busybox applets,
  the image's Python programs; a scratch image has no ``sh``);
* the container's environment: what ``/proc/<pid>/environ`` shows, overlaid with the configured one
  (image env, ``HOSTNAME``, ``HOME``, the container's ``Env``: programs the executor runs in-process
  show only the supervisor's environment there), then the exec's ``Env``; ``TERM=xterm`` with a tty;
* the exec's ``User``/``WorkingDir``, else the container's;
* stdin/stdout/stderr as pipes, or one pty (``os.openpty``) whose size `ExecProcess.resize` sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import grp
import marshal
import os
import pwd
import signal as _signal
import struct
import sys
import termios
from dataclasses import dataclass, field
from typing import Any

from agents.worker.executor import cgroups, fdio
from agents.worker.executor.nsexec import PREFIX as OCI_PREFIX
from agents.worker.images import catalog

__all__ = ["OCI_PREFIX", "ExecConfig", "ExecFailed", "ExecProcess", "NotRunning", "prepare", "spawn"]

NSEXEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nsexec.py")


class ExecFailed(Exception):
    """The command cannot be started; ``exit_code`` is what Docker reports (126/127) and the message is
    Docker's OCI text, written to the client's stream."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NotRunning(Exception):
    """The container's program is gone (or never ran)."""


@dataclass
class ExecConfig:
    """One exec's request (``POST /containers/{id}/exec``), already type-checked by the API."""

    cmd: list[str]
    env: list[str] = field(default_factory=list)
    user: str = ""
    working_dir: str = ""
    tty: bool = False
    stdin: bool = False


# ------------------------------------------------------------------------------------ preparation


def _parse_env(items: list[str], into: dict[str, str]) -> None:
    for item in items:
        key, sep, value = item.partition("=")
        if key and sep:
            into[key] = value


def proc_environ(pid: int) -> dict[str, str]:
    """``/proc/<pid>/environ`` as a dict (empty if unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return {}
    out: dict[str, str] = {}
    _parse_env([p.decode(errors="replace") for p in raw.split(b"\0") if p], out)
    return out


def _image(c: Any) -> catalog.ImageSpec | None:
    try:
        return catalog.resolve(str(c.task.spec.container.image or c.image))
    except catalog.ImageError:
        return None


def container_env(c: Any) -> dict[str, str]:
    """The container's environment as configured (what Docker gives every exec)."""
    cs = c.task.spec.container
    spec = _image(c)
    env = spec.env_dict() if spec is not None else {"PATH": catalog.DEFAULT_PATH}
    env["HOSTNAME"] = str(getattr(c, "hostname", "") or c.id[:12])
    _parse_env(list(cs.env), env)
    if "HOME" not in env:
        env["HOME"] = "/root"
    return env


def resolve_user(user: str) -> tuple[int | None, int | None, list[int], str | None]:
    """``uid[:gid]`` / ``name[:group]`` -> (uid, gid, groups, home); Docker's texts when unknown."""
    if not user:
        return None, None, [], None
    name, _, group = user.partition(":")
    home: str | None = None
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        uid, gid, home = pw.pw_uid, pw.pw_gid, pw.pw_dir
    except KeyError:
        if not name.isdigit():
            raise ExecFailed(f"unable to find user {name}: no matching entries in passwd file", 126) from None
        uid, gid = int(name), int(name) if not group else 0
    groups: list[int] = []
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ExecFailed(f"unable to find group {group}: no matching entries in group file", 126) from None
    elif not name.isdigit():
        groups = [g.gr_gid for g in grp.getgrall() if name in g.gr_mem]
    return uid, gid, groups, home


def task_cgroup(pid: int) -> str | None:
    """The cgroup directory of ``pid`` (None without cgroup v2)."""
    mount, path = cgroups.cgroup2_mount(), cgroups.own_cgroup(pid)
    if mount is None or path is None:
        return None
    full = os.path.join(mount, path.lstrip("/"))
    return full if os.path.isdir(full) else None


def prepare(c: Any, cfg: ExecConfig, *, python: str = sys.executable) -> dict[str, Any]:
    """The helper's configuration for running ``cfg`` in container ``c``; `NotRunning` if its program is
    gone, `ExecFailed` (with Docker's text and code) if the command or user cannot be resolved."""
    pid = int(getattr(c, "pid", 0) or 0)
    if not getattr(c, "running", False) or pid <= 0 or not os.path.exists(f"/proc/{pid}/ns/mnt"):
        raise NotRunning(str(c.id))
    env = proc_environ(pid)
    env.update(container_env(c))
    _parse_env(cfg.env, env)
    if cfg.tty:
        env.setdefault("TERM", "xterm")
    cs = c.task.spec.container
    uid, gid, groups, home = resolve_user(cfg.user or cs.user)
    if home is not None and not any(e.startswith("HOME=") for e in [*cs.env, *cfg.env]):
        env["HOME"] = home
    spec = _image(c)
    cwd = cfg.working_dir or cs.dir or (spec.working_dir if spec is not None else "") or "/"
    if spec is None:
        argv = list(cfg.cmd)
    else:
        try:
            argv = catalog.host_argv(spec, cfg.cmd, python=python, path=env.get("PATH") or catalog.DEFAULT_PATH)
        except catalog.ImageError:
            name = cfg.cmd[0] if cfg.cmd else ""
            raise ExecFailed(
                f'exec: "{name}": executable file not found in $PATH', 127
            ) from None
    return {
        "pid": pid,
        "cgroup": task_cgroup(pid),
        "argv": argv,
        "env": env,
        "cwd": cwd,
        "cwd_fallback": not cfg.working_dir,
        "uid": uid,
        "gid": gid,
        "groups": groups,
        "tty": cfg.tty,
    }


# ----------------------------------------------------------------------------------------- running


def set_winsize(fd: int, height: int, width: int) -> None:
    """TIOCSWINSZ: the kernel tells the foreground process group (SIGWINCH)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", max(0, height), max(0, width), 0, 0))


class ExecProcess:
    """A running exec: its pid, its stdio on the agent's side, and its exit code once it ends.

    With a tty, ``master`` is the pty (read output, write input); otherwise ``stdin`` (a pipe's write
    end, or -1 without stdin), ``stdout`` and ``stderr`` (read ends). All fds are non-blocking and owned
    here: `close` releases them."""

    def __init__(self, proc: asyncio.subprocess.Process, *, master: int = -1, stdin: int = -1,
                 stdout: int = -1, stderr: int = -1) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.master, self.stdin, self.stdout, self.stderr = master, stdin, stdout, stderr
        for fd in (master, stdin, stdout, stderr):
            if fd >= 0:
                os.set_blocking(fd, False)

    @property
    def tty(self) -> bool:
        return self.master >= 0

    async def wait(self) -> int:
        """Docker's exit code: the command's, or 128+signal."""
        code = await self.proc.wait()
        return 128 - code if code < 0 else code

    def resize(self, height: int, width: int) -> None:
        if self.master >= 0:
            set_winsize(self.master, height, width)

    def signal(self, sig: int) -> None:
        """Signal the exec's process group (it is a session leader), then the process itself."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def close_stdin(self) -> None:
        if self.stdin >= 0:
            os.close(self.stdin)
            self.stdin = -1

    def close(self) -> None:
        for name in ("master", "stdin", "stdout", "stderr"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)


async def spawn(config: dict[str, Any], *, size: tuple[int, int] | None = None, python: str = sys.executable,
                attach_stdin: bool = True, detached: bool = False) -> ExecProcess:
    """Start the helper with ``config`` (from `prepare`); returns once the process exists."""
    payload = marshal.dumps(config)
    cfg_r, cfg_w = os.pipe()
    own: list[int] = []
    child: list[int] = []
    kwargs: dict[str, Any] = {}
    try:
        if detached:
            devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            child.append(devnull)
            kwargs = {"stdin": devnull, "stdout": devnull, "stderr": devnull}
        elif config.get("tty"):
            master, slave = os.openpty()
            own.append(master)
            child.append(slave)
            if size is not None:
                set_winsize(master, *size)
            kwargs = {"stdin": slave, "stdout": slave, "stderr": slave}
        else:
            in_r, in_w = os.pipe() if attach_stdin else (os.open(os.devnull, os.O_RDONLY), -1)
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            own += [fd for fd in (in_w, out_r, err_r) if fd >= 0]
            child += [in_r, out_w, err_w]
            kwargs = {"stdin": in_r, "stdout": out_w, "stderr": err_w}
        for fd in own:
            os.set_inheritable(fd, False)
        proc = await asyncio.create_subprocess_exec(
            python, "-I", "-S", NSEXEC, str(cfg_r),
            pass_fds=(cfg_r,), start_new_session=True, env={"PATH": catalog.DEFAULT_PATH}, **kwargs,
        )
    except BaseException:
        for fd in own:
            os.close(fd)
        raise
    finally:
        for fd in (*child, cfg_r):
            os.close(fd)
    await fdio.hand_over(cfg_w, payload)
    if detached:
        return ExecProcess(proc)
    if config.get("tty"):
        return ExecProcess(proc, master=own[0])
    if attach_stdin:
        return ExecProcess(proc, stdin=own[0], stdout=own[1], stderr=own[2])
    return ExecProcess(proc, stdout=own[0], stderr=own[1])


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, _signal.SIGKILL)
