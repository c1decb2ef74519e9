"""alpine/busybox run the host's real binaries; errors and exit codes are Docker's."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest

from agents.worker.images import catalog
from tests.unit.images.conftest import StartFn


def test_alpine_ping(start: StartFn) -> None:
    if shutil.which("ping") is None:
        pytest.skip("needs the host's ping (iputils-ping)")
    task = start("alpine", "ping", "-c", "1", "127.0.0.1", listen=False)
    assert task.proc.wait(20) == 0
    assert "1 received" in task.stdout or "1 packets received" in task.stdout


def test_busybox_sh_exit_code(start: StartFn) -> None:
    task = start("busybox", "sh", "-c", "echo hi; exit 3", listen=False)
    assert task.proc.wait(20) == 3
    assert task.stdout == "hi\n"


def test_default_shell_exits_without_a_tty(start: StartFn) -> None:
    task = start("alpine", listen=False)
    assert task.proc.wait(20) == 0


def test_sleep_dies_on_sigterm(start: StartFn) -> None:
    task = start("alpine", "sleep", "1000", listen=False)
    time.sleep(0.1)
    assert task.proc.poll() is None
    assert task.stop(signal.SIGTERM) == -signal.SIGTERM  # like the real image: sleep does not trap TERM


def test_echo_and_hostname(start: StartFn) -> None:
    task = start("busybox", "echo", "hello", "world", listen=False)
    assert task.proc.wait(20) == 0 and task.stdout == "hello world\n"
    task = start("alpine", "hostname", listen=False)
    assert task.proc.wait(20) == 0 and task.stdout.strip()


def test_missing_executable_is_127() -> None:
    proc = subprocess.run(
        [sys.executable, "-I", "-S", catalog.RUN_PY, "alpine", "nosuchcmd"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 127
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in proc.stderr


def test_hello_world() -> None:
    proc = subprocess.run([sys.executable, "-I", "-S", catalog.RUN_PY, "hello-world"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "Hello from Docker!" in proc.stdout


def test_nginx_image_runs_other_commands_on_the_host() -> None:
    proc = subprocess.run(
        [sys.executable, "-I", "-S", catalog.RUN_PY, "nginx", "sh", "-c", "echo from-shell"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (proc.returncode, proc.stdout) == (0, "from-shell\n")
    proc = subprocess.run(
        [sys.executable, "-I", "-S", catalog.RUN_PY, "nginx:1.25", "nginx", "-v"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0 and "nginx version: nginx/1.25.5" in proc.stderr
