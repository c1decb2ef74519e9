"""Task supervisor: the small process that *is* a task's container, like containerd-shim.

    python -I -S shim.py        (spawned by `process.ProcessExecutor`; never run by hand)

Why a separate process: a task must outlive the agent (an agent restart re-adopts running tasks), so
the things that need a live parent -- reaping the program to learn its exit status, draining its
stdout/stderr into the log file -- cannot be the agent's job. The shim does them and writes the exit
status to a file the agent (this one or the next) reads.

Protocol (fds set up by the executor):

* fd 0: the configuration, a ``marshal``-ed dict, read to EOF. It carries the secrets' data: they go
  from the agent's memory through this pipe into a tmpfs, never to disk.
* The shim joins the task cgroup, unshares net+mount+UTS namespaces, mounts a private tmpfs on /run and
  a read-only one on /run/secrets holding exactly the task's secrets, sets the hostname, then writes
  ``ready`` on fd 3. The executor now wires the network namespace (veth, addresses) from outside.
* The executor writes ``go`` on fd 4 (EOF instead aborts). The shim forks the program (signals reset,
  stdin /dev/null, user/cwd/env applied, ``execve``), writes ``pid N`` on fd 3 and closes fds 3 and 4.
* It logs both streams (`logs.JsonFileWriter`), waits for the program (pidfd), and writes
  ``<exit code>`` to ``exit_path`` atomically: 0..255, or 128+signal when killed (137 for SIGKILL).

Errors before ``go`` are reported as ``error <text>`` on fd 3 (exit 1). SIGTERM/SIGINT/SIGHUP are
ignored: the executor signals the program, never the shim (only SIGKILL, on final cleanup, ends it).
Imports: C modules and `logs` only (~10 ms, ~9 MB RSS mostly shared text).
"""

from __future__ import annotations

import marshal
import os
import select
import signal
import sys
from typing import Any

if not __package__:  # run by path with -I -S: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

from agents.worker.executor.logs import JsonFileWriter

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

CTL_FD = 3
GO_FD = 4
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE, signal.SIGUSR1)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setup(cfg: dict[str, Any]) -> None:
    """Everything that must happen before the network is wired: cgroup, namespaces, mounts, hostname."""
    cgroup = cfg.get("cgroup")
    if cgroup:
        try:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
        except OSError:
            pass  # no cgroup: the task still runs (the executor logged why)
    if not cfg.get("namespaces", True):
        return
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWNET), "unshare")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    _check(libc.mount(b"tmpfs", b"/run", b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=755,size=64m"), "mount /run")
    os.mkdir("/run/secrets", 0o755)
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    _check(libc.mount(b"tmpfs", b"/run/secrets", b"tmpfs", flags, b"mode=755,size=16m"), "mount /run/secrets")
    for s in cfg.get("secrets", ()):
        name = str(s["name"])
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"invalid secret file name {name!r}")
        fd = os.open(os.path.join("/run/secrets", name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
        try:
            view = memoryview(s["data"])
            while view:
                view = view[os.write(fd, view) :]
            os.fchown(fd, int(s.get("uid", 0)), int(s.get("gid", 0)))
            os.fchmod(fd, int(s.get("mode", 0o444)))
        finally:
            os.close(fd)
    _check(libc.mount(None, b"/run/secrets", None, MS_REMOUNT | MS_RDONLY | flags, None), "remount /run/secrets ro")
    if cfg.get("hostname"):
        with open("/proc/sys/kernel/hostname", "w") as fh:
            fh.write(str(cfg["hostname"]))


def _child(cfg: dict[str, Any], out_w: int, err_w: int) -> None:
    """In the forked child: become the task's program (never returns)."""
    try:
        for sig in _HANDLED:
            signal.signal(sig, signal.SIG_DFL)  # ignored signals would stay ignored across execve
        os.setpgid(0, 0)
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for fd in (devnull, out_w, err_w, CTL_FD, GO_FD):
            if fd > 2:
                try:
                    os.close(fd)
                except OSError:
                    pass
        uid, gid = cfg.get("uid"), cfg.get("gid")
        if gid is not None:
            os.setgroups(list(cfg.get("groups") or []))
            os.setgid(int(gid))
        if uid is not None:
            os.setuid(int(uid))
        try:
            os.chdir(cfg.get("cwd") or "/")
        except OSError:
            os.chdir("/")
        argv = list(cfg["argv"])
        if len(argv) > 4 and argv[1:3] == ["-I", "-S"] and argv[3].endswith("/images/run.py"):
            _run_in_process(argv, dict(cfg["env"]))
        os.execve(argv[0], argv, dict(cfg["env"]))
    except OSError as e:
        os.write(2, f"exec {cfg['argv'][0]}: {e.strerror}\n".encode())
        os._exit(127 if e.errno == 2 else 126)
    except BaseException as e:
        os.write(2, f"task start failed: {e}\n".encode())
        os._exit(126)


def _run_in_process(argv: list[str], env: dict[str, str]) -> None:
    """A catalog Python program runs in this forked child: no second interpreter start (~40 ms of CPU
    and ~8 MB per task saved); the same `run.main` the exec'ed ``run.py`` would have called."""
    os.environ.clear()
    os.environ.update(env)
    sys.argv = argv[3:]
    code = 1
    try:
        _set_name(argv)
        from agents.worker.images import run

        code = run.main(argv[4:])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    os._exit(code & 0xFF)


def _set_name(argv: list[str]) -> None:
    """Name the process after the program (``ps``, ``docker top``) rather than ``python``."""
    words = argv[argv.index("--") + 1 :] if "--" in argv else argv[-1:]
    if words:
        name = os.path.basename(words[0])[:15].encode()
        _libc().prctl(15, name, 0, 0, 0)  # PR_SET_NAME


def supervise(cfg: dict[str, Any]) -> int:
    """Fork the program, pump its output into the log, return its Docker-style exit code."""
    writer = JsonFileWriter(cfg["log_path"], int(cfg.get("log_max_size", 10 << 20)), int(cfg.get("log_max_files", 2)))
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(cfg, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    os.write(CTL_FD, f"pid {pid}\n".encode())
    os.close(CTL_FD)
    os.close(GO_FD)
    streams = {out_r: "stdout", err_r: "stderr"}
    poller = select.poll()
    for fd in streams:
        poller.register(fd, select.POLLIN)
    pidfd = os.pidfd_open(pid)
    poller.register(pidfd, select.POLLIN)
    exited = False
    while streams and not exited:
        for fd, _ in poller.poll():
            if fd == pidfd:
                exited = True
                continue
            data = os.read(fd, 1 << 16)
            if data:
                writer.write(streams[fd], data)
            else:
                poller.unregister(fd)
                os.close(fd)
                del streams[fd]
    # The program is gone; take what it left in the pipes without waiting for daemonised children.
    for fd, name in streams.items():
        os.set_blocking(fd, False)
        try:
            while True:
                data = os.read(fd, 1 << 16)
                if not data:
                    break
                writer.write(name, data)
        except BlockingIOError:
            pass
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    writer.close()
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def main() -> int:
    for sig in _HANDLED:
        signal.signal(sig, signal.SIG_IGN)
    try:
        cfg = marshal.loads(_read_all(0))
        setup(cfg)
    except BaseException as e:
        os.write(CTL_FD, f"error {type(e).__name__}: {e}".replace("\n", " ").encode() + b"\n")
        return 1
    os.write(CTL_FD, b"ready\n")
    if _read_all(GO_FD).strip() != b"go":
        return 1  # the executor gave up (network wiring failed, task cancelled)
    code = supervise(cfg)
    exit_path = cfg["exit_path"]
    tmp = exit_path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{code}\n")
    os.replace(tmp, exit_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
