"""Run a program on a pseudo-terminal, as a student types into it (``docker run -it``, ``docker exec -it``).

`run_on_pty` forks the program on a pty of a given size, answers prompts (send a line once some text
appeared), and returns its exit code and everything it printed. A program that outlives the timeout is
killed, so a hung test fails instead of hanging.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class PtyResult:
    code: int
    output: bytes
    timed_out: bool

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace").replace("\r\n", "\n")


def run_on_pty(argv: Sequence[str], env: dict[str, str], script: Sequence[tuple[str | None, str]],
               timeout: float = 30.0, rows: int = 24, cols: int = 80) -> PtyResult:
    """Run ``argv``; each ``(expect, send)`` step sends ``send`` once ``expect`` was printed (None: at once)."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.execvpe(argv[0], list(argv), env)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    out = b""
    seen = 0
    steps = list(script)
    deadline = time.monotonic() + timeout
    timed_out = True
    while time.monotonic() < deadline:
        if steps:
            expect, send = steps[0]
            if expect is None or expect.encode() in out[seen:]:
                if expect is not None:
                    seen = out.index(expect.encode(), seen) + len(expect)
                steps.pop(0)
                os.write(fd, send.encode())
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the program closed the terminal (it exited)
            timed_out = False
            break
        if not data:
            timed_out = False
            break
        out += data
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return PtyResult(os.waitstatus_to_exitcode(status), out, timed_out)
