"""The node's task launcher (a zygote): one long-lived process per executor state directory that has
already imported the supervisor (`shim.py`) and the catalog programs, and ``fork()``s a supervisor per
task: no interpreter start and no imports per task, which were most of what a start cost.

    python -I -S launcher.py SOCKET --ready-fd N [--netns PATH]   (started by `launchclient`)

It listens on a unix ``SOCK_SEQPACKET`` socket (``<state>/worker/launcher.sock``). A client (the
executor) first sends ``hello <fingerprint>`` and gets ``ok <pid>``, or ``mismatch`` when this launcher
runs other code or another namespace (then it retires: stops listening, keeps reaping its shims).
Each ``spawn`` message carries three pipe fds (``SCM_RIGHTS``): the configuration pipe, the control
pipe and the go pipe; the forked shim gets them as fds 0, 3 and 4 and everything else closed. Nothing
is answered on the socket -- the shim itself speaks on the control pipe (``shim <pid>`` first), and a
launcher that dies before forking closes the pipes, which the executor sees as EOF and retries.

Lifecycle: started on first use by an executor (from the agent, so in the node's cgroup: a node halt
kills it with everything else), it detaches (double fork: never a zombie of the agent) and enters the
node's network namespace (``--netns``, tests) so shims create their veths there. Shims are its
children and it reaps them; they survive it (adoption needs only the records, pidfds and exit files).
It exits once no client is connected and no shim is left -- a restarted agent reconnects to it
meanwhile -- or, never having had a client, after `STARTUP_GRACE_S`.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import select
import socket
import sys
import time

if not __package__:  # run by path with -I -S: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

PATH = os.path.abspath(__file__)
STARTUP_GRACE_S = 10.0
MAX_MSG = 512
SHIM_FDS = (0, 3, 4)
_CODE = (
    ("executor", ("launcher.py", "shim.py", "logs.py", "rtnetlink.py")),
    ("images", None),
    (os.path.join("images", "programs"), None),
)
"""What a launcher runs, below ``agents/worker``: these executor modules, all of the catalog's."""


def fingerprint(python: str, netns: str | None) -> str:
    """What a launcher must match to be reused: interpreter, namespace and the code it forks (size and
    mtime of each module in `_CODE`: an upgraded agent gets a fresh launcher)."""
    import hashlib

    root = os.path.dirname(os.path.dirname(PATH))
    h = hashlib.sha256(f"{python}\0{netns or ''}".encode())
    for sub, only in _CODE:
        d = os.path.join(root, sub)
        try:
            names = sorted(only or (n for n in os.listdir(d) if n.endswith(".py")))
        except OSError:
            continue
        for name in names:
            try:
                st = os.stat(os.path.join(d, name))
            except OSError:
                continue
            h.update(f"{sub}/{name}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:32]


def unix_address(path: str) -> tuple[str, int | None]:
    """``path`` as a socket address: itself, or via ``/proc/self/fd/<dir fd>/<name>`` when it is longer
    than ``sun_path`` holds (deep state directories); the caller closes the returned dir fd."""
    if len(os.fsencode(path)) < 100:
        return path, None
    fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{os.path.basename(path)}", fd


def preload() -> None:
    """Import what every shim and catalog program needs, once, before any fork."""
    import importlib

    from agents.worker.executor import shim
    from agents.worker.images import catalog, run  # noqa: F401 (run: the in-process entry point)

    shim.libc()
    for name in catalog.builtin_names():
        module = catalog.resolve(name).module
        if module:
            importlib.import_module(module)


def _quiet_thread_fork_hook() -> None:
    """Make ``threading``'s after-fork hook a no-op in this process (and so in its children).

    The catalog programs import ``threading``; its hook then rebuilds the thread table and locks in
    every forked child, which copies ~120 pages -- about 0.5 ms of page faults per fork on a VM, twice
    per task. It has nothing to repair here: the launcher never starts a thread, so at each fork the
    table holds only the main thread (whose ident the child keeps) and no lock is held."""
    import threading

    hook = getattr(threading, "_after_fork", None)
    if hook is not None and hasattr(hook, "__code__") and threading.active_count() == 1:
        hook.__code__ = _no_hook.__code__


def _no_hook() -> None:
    return None


class Launcher:
    """The serving loop: accept clients, fork shims on ``spawn``, reap them, exit when idle."""

    def __init__(self, listener: socket.socket, path: str, fp: str) -> None:
        self.listener: socket.socket | None = listener
        self.path = path
        self.inode = os.stat(path).st_ino
        self.fp = fp
        self.clients: dict[int, socket.socket] = {}
        self.shims: dict[int, int] = {}
        """pidfd -> pid of each live shim."""
        self.unwatched: set[int] = set()
        """Shims without a pidfd (none could be opened): reaped by polling."""
        self.poller = select.poll()
        self.poller.register(listener, select.POLLIN)
        self.had_client = False

    def serve(self) -> None:
        started = time.monotonic()
        while True:
            idle = not self.clients and not self.shims and not self.unwatched
            if idle and (self.had_client or time.monotonic() - started > STARTUP_GRACE_S):
                break
            for pid in list(self.unwatched):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue
                self.unwatched.discard(pid)
            for fd, _events in self.poller.poll(1000):
                try:
                    if self.listener is not None and fd == self.listener.fileno():
                        self._accept()
                    elif fd in self.clients:
                        self._client(fd)
                    elif fd in self.shims:
                        self._reap(fd)
                except OSError as e:  # one client's or shim's trouble never ends the launcher
                    sys.stderr.write(f"launcher: {e}\n")
        self.retire()

    def retire(self) -> None:
        """Stop listening (the socket path goes too, unless another launcher took it over)."""
        if self.listener is None:
            return
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass
        self.poller.unregister(self.listener)
        self.listener.close()
        self.listener = None

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.clients[conn.fileno()] = conn
        self.poller.register(conn, select.POLLIN)
        self.had_client = True

    def _drop(self, fd: int) -> None:
        conn = self.clients.pop(fd)
        self.poller.unregister(fd)
        conn.close()

    def _client(self, fd: int) -> None:
        conn = self.clients[fd]
        try:
            msg, fds, _flags, _addr = socket.recv_fds(conn, MAX_MSG, len(SHIM_FDS), socket.MSG_CMSG_CLOEXEC)
        except OSError:
            msg, fds = b"", []
        if not msg:
            for x in fds:
                os.close(x)
            self._drop(fd)  # the agent is gone (or closed its executor)
            return
        if msg == b"spawn" and len(fds) == len(SHIM_FDS):
            self._spawn(fds)
            return
        for x in fds:
            os.close(x)
        word, _, arg = msg.decode(errors="replace").partition(" ")
        if word == "hello" and arg == self.fp:
            conn.send(f"ok {os.getpid()}".encode())
            return
        if word == "hello":
            self.retire()  # old code or another namespace: the client starts a fresh launcher
            try:
                conn.send(b"mismatch")
            except OSError:
                pass
        self._drop(fd)  # mismatched, or not our protocol

    def _spawn(self, fds: list[int]) -> None:
        gc.freeze()  # the launcher's objects stay untouched by the children's collections (fewer copied pages)
        try:
            pid = os.fork()
        except OSError as e:
            try:
                os.write(fds[1], f"error fork: {e.strerror}\n".encode())
            finally:
                for x in fds:
                    os.close(x)
            return
        if pid == 0:
            try:
                _become_shim(fds)
            finally:
                os._exit(1)  # whatever happens, a child never returns into the launcher's loop
        for x in fds:
            os.close(x)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # out of fds: poll for its exit instead
            self.unwatched.add(pid)
            return
        self.shims[pidfd] = pid
        self.poller.register(pidfd, select.POLLIN)

    def _reap(self, pidfd: int) -> None:
        pid = self.shims.pop(pidfd)
        self.poller.unregister(pidfd)
        os.close(pidfd)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _become_shim(fds: list[int]) -> None:
    """In the forked child: the pipes on fds 0, 3, 4, stdout on /dev/null, stderr kept (the launcher's
    log), every other fd of the launcher closed; then the supervisor's life (`shim.start`, no return).
    No module may be loaded here (only looked up): one import per child costs ~1 ms of page faults."""
    try:
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 16) for fd in fds]
        for fd, target in zip(high, SHIM_FDS, strict=True):
            os.dup2(fd, target)
        null = os.open("/dev/null", os.O_WRONLY)
        os.dup2(null, 1)
        os.closerange(5, 1 << 20)
        os.setsid()
        from agents.worker.executor import shim
    except BaseException:
        os._exit(1)
    shim.start()


def main(argv: list[str]) -> int:
    """Parse the command line, enter the namespace, import, listen, detach, serve."""
    path, ready_fd, netns = "", -1, ""
    words = list(argv)
    while words:
        w = words.pop(0)
        if w == "--ready-fd" and words:
            ready_fd = int(words.pop(0))
        elif w == "--netns" and words:
            netns = words.pop(0)
        else:
            path = w
    if not path or ready_fd < 0:
        sys.stderr.write("usage: launcher.py SOCKET --ready-fd N [--netns PATH]\n")
        return 2
    try:
        fp = fingerprint(sys.executable, netns or None)
        if netns:
            from agents.worker.executor import rtnetlink

            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            rtnetlink.setns(fd, rtnetlink.CLONE_NEWNET)
            os.close(fd)
        preload()
        try:
            os.unlink(path)  # a stale socket of a launcher that is gone (the client checked)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        address, dir_fd = unix_address(path)
        try:
            listener.bind(address)
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        os.chmod(path, 0o600)
        listener.listen(128)
    except BaseException as e:
        os.write(ready_fd, f"error {type(e).__name__}: {e}\n".encode())
        return 1
    if os.fork():
        os._exit(0)  # the parent goes (the executor reaps it); the server below is nobody's zombie
    _quiet_thread_fork_hook()
    from agents.worker.executor import shim

    shim.set_name("labctl-launcher")
    launcher = Launcher(listener, path, fp)
    os.write(ready_fd, f"ready {os.getpid()}\n".encode())
    os.close(ready_fd)
    launcher.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
