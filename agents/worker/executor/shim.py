"""Task supervisor: the small process that *is* a task's container, like containerd-shim.

Forked by the node's launcher (`launcher.py`, which has already imported this module and the catalog
programs), one per task; never run by hand. Why a separate process: a task must outlive the agent
(an agent restart re-adopts running tasks), so the things that need a live parent -- reaping the
program to learn its exit status, draining its stdout/stderr into the log file -- cannot be the
agent's job. The shim does them and writes the exit status to a file the agent (this one or the next)
reads.

Protocol (pipes the executor created and handed to the launcher, which put them on these fds):

* fd 3 (control, shim -> executor): ``shim <pid>`` first, so the executor can kill a shim that hangs.
* fd 0: the configuration, a ``marshal``-ed dict, read to EOF. It carries the secrets' data: they go
  from the agent's memory through this pipe into a tmpfs, never to disk.
* The shim joins the task cgroup, opens a netlink socket in the node's network namespace, unshares
  net+mount+UTS namespaces, mounts a private tmpfs on /run and a read-only one on /run/secrets holding
  exactly the task's secrets, sets the hostname, then wires its network (`wire`: a veth created from
  the node side with its peer directly in the new namespace, enslaved to the bridge; addresses, lo and
  the default route from inside; the mesh's resolv.conf bind-mounted) and writes ``ready`` on fd 3.
* The executor writes ``go`` on fd 4 (EOF instead aborts). The shim forks the program (signals reset,
  stdin /dev/null, every other fd closed, user/cwd/env applied; catalog Python programs run their
  ``main()`` right in that forked child, anything else is ``execve``-d), writes ``pid N`` on fd 3 and
  closes fds 3 and 4.
* It logs both streams (`logs.JsonFileWriter`), waits for the program (pidfd), and writes
  ``<exit code>`` to ``exit_path`` atomically: 0..255, or 128+signal when killed (137 for SIGKILL).

Errors before ``go`` are reported as ``error <text>`` (``neterror <text>`` for the network) on fd 3
(exit 1); ``warn <text>`` lines are worth a log line but not a failure. SIGTERM/SIGINT/SIGHUP are
ignored: the executor signals the program, never the shim (only SIGKILL, on final cleanup, ends it).
"""

from __future__ import annotations

import marshal
import os
import select
import signal
import sys
from typing import Any, NoReturn

from agents.worker.executor import rtnetlink
from agents.worker.executor.logs import JsonFileWriter

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_NAME = 15
LOOPBACK_INDEX = 1  # in every network namespace

CFG_FD = 0
CTL_FD = 3
GO_FD = 4
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE, signal.SIGUSR1)
_libc_handle: Any = None


class NetworkSetupError(Exception):
    """Wiring the task's network failed (reported as ``neterror``)."""


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def libc() -> Any:
    """The C library through ctypes (loaded once; the launcher does it before forking shims)."""
    global _libc_handle
    if _libc_handle is None:
        import ctypes

        _libc_handle = ctypes.CDLL(None, use_errno=True)
    return _libc_handle


def _check(rc: int, what: str) -> None:
    if rc != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def set_name(name: str) -> None:
    """The process name ``ps`` and ``top`` show (15 bytes at most)."""
    libc().prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def setup(cfg: dict[str, Any]) -> rtnetlink.Rtnl | None:
    """Everything before the network: cgroup, namespaces, mounts, hostname. Returns a netlink socket
    in the node's network namespace (opened before leaving it) when there are interfaces to wire."""
    cgroup = cfg.get("cgroup")
    if cgroup:
        try:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
        except OSError:
            pass  # no cgroup: the task still runs (the executor logged why)
    if not cfg.get("namespaces", True):
        return None
    node = rtnetlink.Rtnl() if cfg.get("attachments") else None
    c = libc()
    _check(c.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWNET), "unshare")
    _check(c.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    _check(c.mount(b"tmpfs", b"/run", b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=755,size=64m"), "mount /run")
    os.mkdir("/run/secrets", 0o755)
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    _check(c.mount(b"tmpfs", b"/run/secrets", b"tmpfs", flags, b"mode=755,size=16m"), "mount /run/secrets")
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
    _check(c.mount(None, b"/run/secrets", None, MS_REMOUNT | MS_RDONLY | flags, None), "remount /run/secrets ro")
    if cfg.get("hostname"):
        hostname = str(cfg["hostname"]).encode()
        _check(c.sethostname(hostname, len(hostname)), "sethostname")
    return node


def wire(cfg: dict[str, Any], node: rtnetlink.Rtnl | None) -> list[str]:
    """Give this (new) network namespace its interfaces; returns warnings (resolv.conf problems).

    ``cfg["attachments"]``: ``(bridge, address CIDR, gateway, host end name, mtu)`` per ``eth<i>``."""
    warnings: list[str] = []
    atts = cfg.get("attachments") or []
    if not cfg.get("namespaces", True):
        return warnings
    try:
        with rtnetlink.Rtnl() as inside:
            inside.set_up(LOOPBACK_INDEX)
            if atts:
                assert node is not None
                own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    eth0 = 0
                    for i, (bridge, address, _gw, host_end, mtu) in enumerate(atts):
                        master = node.link_index(bridge)
                        node.add_veth(host_end, f"eth{i}", peer_netns_fd=own, mtu=mtu or None, master=master)
                        index = inside.link_index(f"eth{i}")
                        inside.add_address(index, address)
                        inside.set_up(index)
                        eth0 = eth0 or index
                finally:
                    os.close(own)
                inside.add_default_route(atts[0][2], eth0)
    except OSError as e:
        raise NetworkSetupError(e.strerror or str(e)) from None
    text = cfg.get("resolv_conf")
    if text:
        try:
            with open("/run/resolv.conf", "w") as fh:
                fh.write(str(text))
            _check(libc().mount(b"/run/resolv.conf", b"/etc/resolv.conf", None, MS_BIND, None), "bind resolv.conf")
        except OSError as e:
            warnings.append(f"could not set resolv.conf: {e}")
    return warnings


def _child(cfg: dict[str, Any], out_w: int, err_w: int) -> NoReturn:
    """In the forked child: become the task's program (never returns)."""
    try:
        for sig in _HANDLED:
            signal.signal(sig, signal.SIG_DFL)  # ignored signals would stay ignored across execve
        os.setpgid(0, 0)
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.closerange(3, 1 << 20)  # the task inherits nothing of the shim's (log file, pipes, sockets)
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


def _run_in_process(argv: list[str], env: dict[str, str]) -> NoReturn:
    """A catalog Python program runs in this forked child, on the modules the launcher imported: no
    interpreter start, no imports; the same `run.main` the exec'ed ``run.py`` would have called."""
    os.environ.clear()
    os.environ.update(env)
    sys.argv = argv[3:]
    code = 1
    try:
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


def _say(line: str) -> None:
    os.write(CTL_FD, line.replace("\n", " ").encode() + b"\n")


def main() -> int:
    """The supervisor's whole life, on fds 0, 3 and 4 (see the module docstring); returns its exit status."""
    for sig in _HANDLED:
        signal.signal(sig, signal.SIG_IGN)
    _say(f"shim {os.getpid()}")
    node = None
    try:
        cfg = marshal.loads(_read_all(CFG_FD))
        node = setup(cfg)
        for warning in wire(cfg, node):
            _say(f"warn {warning}")
    except NetworkSetupError as e:
        _say(f"neterror {e}")
        return 1
    except BaseException as e:
        _say(f"error {type(e).__name__}: {e}")
        return 1
    finally:
        if node is not None:
            node.close()
    _say("ready")
    if _read_all(GO_FD).strip() != b"go":
        return 1  # the executor gave up (task cancelled, agent gone)
    code = supervise(cfg)
    exit_path = cfg["exit_path"]
    tmp = exit_path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{code}\n")
    os.replace(tmp, exit_path)
    return 0


def start() -> NoReturn:
    """Entry point in the launcher's freshly forked child: be the supervisor, then exit (never return
    into the launcher's loop, whatever happens)."""
    code = 1
    try:
        set_name("labctl-shim")
        code = main()
    except BaseException:
        import traceback

        traceback.print_exc()  # to the launcher's log
    finally:
        os._exit(code)
