"""The agent's configuration: what one lab node is called, where it keeps state and where it listens.

Parsed once from the command line by :func:`parse_args`; everything else receives the frozen
:class:`AgentConfig`. Only stdlib modules that the interpreter has loaded anyway are imported here,
so ``labagent --help`` and flag errors stay instant.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from agents.version import AGENT_VERSION, API_VERSION

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_STATE_DIR = "/var/lib/docker"
DEFAULT_SOCKET = "/run/docker.sock"
UNIX_PATH_MAX = 107
"""sun_path holds 108 bytes including the terminating NUL."""

_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


class ConfigError(ValueError):
    """A flag value that parses but makes no sense (reported like an argparse error)."""


@dataclass(frozen=True)
class AgentConfig:
    """Everything the daemon needs to know at start-up; immutable so it can be shared freely."""

    node_name: str
    state_dir: Path
    socket_path: Path
    addr: str | None = None
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not _NODE_NAME.fullmatch(self.node_name):
            raise ConfigError(
                f"invalid node name {self.node_name!r}: use letters, digits, '.', '_' or '-' "
                "(starting with a letter or digit, at most 253 characters)"
            )
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"invalid log level {self.log_level!r}: choose from {', '.join(LOG_LEVELS)}")
        if len(os.fsencode(self.socket_path)) > UNIX_PATH_MAX:
            raise ConfigError(
                f"socket path {str(self.socket_path)!r} is too long for a unix socket "
                f"({len(os.fsencode(self.socket_path))} bytes; the limit is {UNIX_PATH_MAX})"
            )
        if self.addr is not None:
            _check_ip(self.addr)

    @property
    def log_file(self) -> Path:
        return self.state_dir / "labagent.log"

    @property
    def debug(self) -> bool:
        return self.log_level == "debug"

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None) -> AgentConfig:
        """Parse ``argv`` (default: ``sys.argv[1:]``); exits 2 with one line on stderr if it is bad."""
        return parse_args(argv)


def _check_ip(value: str) -> None:
    import ipaddress  # small, and only needed when --addr is given

    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"invalid --addr {value!r}: expected an IPv4 or IPv6 address") from None


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="labagent",
        description="labctl node agent: a Docker Engine API (swarm subset) on a unix socket.",
    )
    p.add_argument("--node-name", default=None, help="this node's name (default: the hostname)")
    p.add_argument(
        "--state-dir", default=DEFAULT_STATE_DIR, help=f"state and log directory (default: {DEFAULT_STATE_DIR})"
    )
    p.add_argument(
        "--socket", default=DEFAULT_SOCKET, help=f"unix socket to serve the API on (default: {DEFAULT_SOCKET})"
    )
    p.add_argument("--addr", default=None, help="the node's lab IP address (optional)")
    p.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=LOG_LEVELS,
        help="log level of <state-dir>/labagent.log (default: info)",
    )
    p.add_argument(
        "--version", action="version", version=f"labagent {AGENT_VERSION} (Docker Engine API {API_VERSION})"
    )
    return p


def parse_args(argv: Sequence[str] | None = None) -> AgentConfig:
    """Build an :class:`AgentConfig` from the command line, exiting 2 (one stderr line) when it is bad."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    node_name = ns.node_name if ns.node_name is not None else os.uname().nodename
    for flag, value in (("--state-dir", ns.state_dir), ("--socket", ns.socket)):
        if not value:
            parser.error(f"{flag} must not be empty")
    try:
        return AgentConfig(
            node_name=node_name,
            state_dir=Path(os.path.abspath(ns.state_dir)),
            socket_path=Path(os.path.abspath(ns.socket)),
            addr=ns.addr,
            log_level=ns.log_level,
        )
    except ConfigError as exc:
        parser.error(str(exc))
