"""Version constants the agent advertises.

The agent impersonates a Docker Engine so the unmodified CLI and SDK drive it; these are the values
it claims. Kept import-free so anything (the daemon's start-up path included) can read them cheaply.
"""

from __future__ import annotations

AGENT_VERSION = "0.1.0"
"""labagent's own version (the "labagent" component of /version)."""

ENGINE_VERSION = "26.1.0"
"""The Docker Engine release whose API the agent speaks."""

API_VERSION = "1.45"
"""Highest (and default) Engine API version served."""

MIN_API_VERSION = "1.24"
"""Lowest Engine API version accepted (Docker 26's own minimum)."""

PLATFORM_NAME = "labctl swarm agent"
"""``Platform.Name`` of /version: the CLI prints it after "Server:"."""

SERVER_HEADER = f"Docker/{ENGINE_VERSION} (linux)"
