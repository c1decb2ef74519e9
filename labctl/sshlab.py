"""A lab's own SSH material under `$LABCTL_HOME/labs/<lab>/ssh/`: never the user's `~/.ssh`.

* `id_ed25519` / `.pub`: the key labctl logs in with (netns and vagrant labs authorise it themselves;
  for provider ssh it is the default when a node names no key: add the `.pub` to the machine);
* `ssh_host_ed25519_key`: the host key of the sshd labctl runs inside netns nodes (known in advance, so
  those nodes are trusted exactly, not on first use);
* `known_hosts`: the lab's host keys. Unknown hosts are accepted on first use and recorded here
  (OpenSSH's `accept-new`); a changed key is refused with an error, never ignored;
* `config`: an ssh_config with one `Host` per node, for `labctl ssh`, `labctl exec` and tunnels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class SSHTarget:
    """Where one node's sshd is and how to log in."""

    node: str
    host: str
    port: int
    user: str
    key: Path

    @property
    def known_hosts_name(self) -> str:
        """The host's name as OpenSSH and paramiko write it in known_hosts."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def generate_keypair(path: Path, comment: str) -> None:
    """An ed25519 key pair in OpenSSH format (private 0600, public beside it as `.pub`)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write_private(path, private)
    path.with_name(path.name + ".pub").write_bytes(public + f" {comment}\n".encode())


class LabSSH:
    def __init__(self, lab_dir: Path, lab: str) -> None:
        self.dir = lab_dir / "ssh"
        self.lab = lab

    @property
    def client_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def config(self) -> Path:
        return self.dir / "config"

    def ensure_client_key(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.client_key.exists():
            generate_keypair(self.client_key, f"labctl-{self.lab}")
        return self.client_key

    def ensure_host_key(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.host_key.exists():
            generate_keypair(self.host_key, f"labctl-{self.lab}-host")
        return self.host_key

    def public_key(self, private: Path) -> str:
        return private.with_name(private.name + ".pub").read_text().strip()

    def trust(self, targets: list[SSHTarget], host_public_key: str) -> None:
        """Record a host key known in advance (netns nodes) for these targets, replacing older lines."""
        keytype, blob = host_public_key.split()[:2]
        names = {t.known_hosts_name for t in targets}
        lines = [ln for ln in self._known_lines() if ln.split(" ", 1)[0] not in names]
        lines += [f"{name} {keytype} {blob}" for name in sorted(names)]
        self.known_hosts.write_text("".join(f"{ln}\n" for ln in lines))

    def forget_all_hosts(self) -> None:
        """Machines rebuilt (vagrant destroy/up) have new host keys: start the lab's known_hosts afresh."""
        self.known_hosts.unlink(missing_ok=True)

    def _known_lines(self) -> list[str]:
        try:
            return [ln for ln in self.known_hosts.read_text().splitlines() if ln.strip()]
        except FileNotFoundError:
            return []

    def write_config(self, targets: list[SSHTarget]) -> Path:
        """One `Host <node>` block per node; OpenSSH and labctl read the same facts."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        blocks = []
        for t in targets:
            blocks.append(
                f"Host {t.node}\n"
                f"  HostName {t.host}\n  Port {t.port}\n  User {t.user}\n"
                f"  IdentityFile \"{t.key}\"\n  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile \"{self.known_hosts}\"\n  StrictHostKeyChecking accept-new\n"
                "  PasswordAuthentication no\n  LogLevel ERROR\n"
            )
        self.config.write_text(f"# labctl lab {self.lab}: generated, rewritten by `labctl up`\n" + "\n".join(blocks))
        return self.config
