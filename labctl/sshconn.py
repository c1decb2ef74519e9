"""SSH sessions to nodes through paramiko, with host keys handled explicitly.

Policy = OpenSSH's `StrictHostKeyChecking accept-new` on the lab's own known_hosts: an unknown host is
trusted on first use and recorded; a host whose key changed is refused with an error naming the file.
Checking is never switched off, and the user's `~/.ssh` is neither read nor written.
"""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path

import paramiko

from labctl.errors import LabError
from labctl.sshlab import SSHTarget

_append_lock = threading.Lock()


class AcceptNewPolicy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    """Record an unknown host's key in the lab's known_hosts (appending under a lock: pushes run in
    parallel threads and processes share the file)."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with _append_lock, open(self.known_hosts, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)


def connect(target: SSHTarget, known_hosts: Path, timeout: float = 10.0, retry_for: float = 0.0) -> paramiko.SSHClient:
    """A logged-in client; retries refused connections for `retry_for` seconds (a booting sshd)."""
    deadline = time.monotonic() + retry_for
    while True:
        client = paramiko.SSHClient()
        if known_hosts.exists():
            client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(AcceptNewPolicy(known_hosts))
        try:
            client.connect(
                target.host, port=target.port, username=target.user, key_filename=str(target.key),
                look_for_keys=False, allow_agent=False, timeout=timeout, banner_timeout=timeout,
                auth_timeout=timeout,
            )
            return client
        except paramiko.BadHostKeyException as e:
            client.close()
            raise LabError(
                f"{target.node}: the host key of {target.known_hosts_name} changed ({e.key.get_name()}); "
                f"if the machine was rebuilt, remove its line from {known_hosts}"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise LabError(
                f"{target.node}: {target.user}@{target.host} refused the key {target.key} "
                "(authorise its .pub in the machine's ~/.ssh/authorized_keys)"
            ) from None
        except (OSError, paramiko.SSHException) as e:
            client.close()
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise LabError(f"{target.node}: cannot reach sshd at {target.known_hosts_name}: {e}") from None


def run(client: paramiko.SSHClient, command: str, stdin: bytes | None = None,
        timeout: float = 300.0) -> tuple[int, str, str]:
    """Run a command; returns (exit status, stdout, stderr)."""
    chan = client.get_transport().open_session(timeout=timeout)
    chan.settimeout(timeout)
    try:
        chan.exec_command(command)
        if stdin is not None:
            chan.sendall(stdin)
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            if chan.recv_ready():
                out += chan.recv(65536)
            elif chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            elif chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            else:
                chan.status_event.wait(0.01)
        while chan.recv_ready():
            out += chan.recv(65536)
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        return chan.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace")
    except TimeoutError:
        raise LabError(f"remote command timed out after {timeout:.0f} s: {command[:80]}") from None
    finally:
        chan.close()


def check(client: paramiko.SSHClient, node: str, what: str, command: str, stdin: bytes | None = None,
          timeout: float = 300.0) -> str:
    """Run a command that must succeed; a failure is a LabError with the last lines of its output."""
    code, out, err = run(client, command, stdin, timeout)
    if code != 0:
        tail = " | ".join((err or out).strip().splitlines()[-3:])
        raise LabError(f"{node}: {what} failed (exit {code}): {tail}")
    return out
