"""System endpoints: /_ping, /version and /info (what ``docker version`` and ``docker info`` need).

Shapes follow the v1.45 spec (SystemVersion, SystemInfo) and dockerd 26.1's handlers; values come
from the real host where they mean something (memory, CPUs, kernel, OS) and are honest defaults
otherwise (no containers or images until the worker lands; swarm state from the node context).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
from typing import Any

from aiohttp import web

from agents import hostinfo
from agents.api import versions
from agents.api.httputil import api_version, json_response
from agents.api.routing import RouteTable
from agents.api.server import node_context
from agents.context import NodeContext
from agents.version import AGENT_VERSION, API_VERSION, ENGINE_VERSION, MIN_API_VERSION, PLATFORM_NAME

routes = RouteTable("system")

GIT_COMMIT = f"labagent-{AGENT_VERSION}"
NETWORK_PLUGINS = ["bridge", "host", "null", "overlay"]
LOG_PLUGINS = ["json-file", "local"]
_NOT_AVAILABLE = {"ID": "N/A", "Expected": ""}


@routes.get("/_ping")
@routes.head("/_ping")
async def ping(request: web.Request) -> web.StreamResponse:
    """Liveness plus the headers clients negotiate with (Api-Version, Swarm, ...); never cached."""
    headers = {
        "Cache-Control": "no-cache, no-store, must-revalidate",
        "Pragma": "no-cache",
        "Swarm": node_context(request).swarm_status(),
    }
    if request.method == "HEAD":
        headers["Content-Length"] = "0"  # as dockerd: HEAD announces an empty body
        return web.Response(headers=headers, content_type="text/plain", charset="utf-8")
    return web.Response(body=b"OK", headers=headers, content_type="text/plain", charset="utf-8")


@routes.get("/version")
async def version(request: web.Request) -> web.StreamResponse:
    return json_response(version_body(node_context(request)))


@routes.get("/info")
async def info(request: web.Request) -> web.StreamResponse:
    return json_response(info_body(node_context(request), api_version(request)))


def _build_time() -> str:
    """When this agent was installed (mtime of its package), RFC 3339 so the CLI reformats it."""
    try:
        mtime = os.stat(os.path.join(os.path.dirname(os.path.dirname(__file__)), "version.py")).st_mtime
    except OSError:
        mtime = 0.0
    return _dt.datetime.fromtimestamp(mtime, _dt.UTC).isoformat(timespec="seconds")


def version_body(ctx: NodeContext) -> dict[str, Any]:
    """The SystemVersion object, with the Engine component the CLI prints and a labagent one."""
    engine_details = {
        "ApiVersion": API_VERSION,
        "Arch": hostinfo.go_arch(),
        "BuildTime": _build_time(),
        "Experimental": "false",
        "GitCommit": GIT_COMMIT,
        "GoVersion": hostinfo.python_version(),
        "KernelVersion": hostinfo.kernel_version(),
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
    }
    return {
        "Platform": {"Name": PLATFORM_NAME},
        "Components": [
            {"Name": "Engine", "Version": ENGINE_VERSION, "Details": engine_details},
            {
                "Name": "labagent",
                "Version": AGENT_VERSION,
                "Details": {"Node": ctx.config.node_name, "Python": hostinfo.python_version()},
            },
        ],
        "Version": ENGINE_VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": GIT_COMMIT,
        "GoVersion": hostinfo.python_version(),
        "Os": "linux",
        "Arch": hostinfo.go_arch(),
        "KernelVersion": hostinfo.kernel_version(),
        "BuildTime": engine_details["BuildTime"],
    }


def _tasks_running() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:
        return 0


def info_body(ctx: NodeContext, api: str = API_VERSION) -> dict[str, Any]:
    """The SystemInfo object for API version ``api`` (older versions get dockerd's adjustments)."""
    cfg = ctx.config
    body: dict[str, Any] = {
        "ID": ctx.engine_id,
        "Containers": 0,
        "ContainersRunning": 0,
        "ContainersPaused": 0,
        "ContainersStopped": 0,
        "Images": 0,
        "Driver": "vfs",
        "DriverStatus": [],
        "Plugins": {"Volume": ["local"], "Network": NETWORK_PLUGINS, "Authorization": None, "Log": LOG_PLUGINS},
        "MemoryLimit": False,
        "SwapLimit": False,
        "CpuCfsPeriod": False,
        "CpuCfsQuota": False,
        "CPUShares": False,
        "CPUSet": False,
        "PidsLimit": False,
        "IPv4Forwarding": hostinfo.sysctl_enabled("/proc/sys/net/ipv4/ip_forward"),
        "BridgeNfIptables": hostinfo.sysctl_enabled("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        "BridgeNfIp6tables": hostinfo.sysctl_enabled("/proc/sys/net/bridge/bridge-nf-call-ip6tables"),
        "Debug": cfg.debug,
        "NFd": hostinfo.open_fds(),
        "OomKillDisable": False,
        "NGoroutines": _tasks_running(),
        "SystemTime": _dt.datetime.now().astimezone().isoformat(),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": hostinfo.cgroup_version(),
        "NEventsListener": 0,
        "KernelVersion": hostinfo.kernel_version(),
        "OperatingSystem": hostinfo.operating_system(),
        "OSVersion": hostinfo.os_version(),
        "OSType": "linux",
        "Architecture": hostinfo.architecture(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": None,
            "AllowNondistributableArtifactsHostnames": None,
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "IndexConfigs": {
                "docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": True, "Official": True}
            },
            "Mirrors": [],
        },
        "NCPU": hostinfo.ncpu(),
        "MemTotal": hostinfo.mem_total(),
        "GenericResources": None,
        "DockerRootDir": str(cfg.state_dir),
        "HttpProxy": hostinfo.mask_credentials(hostinfo.proxy_env("HTTP_PROXY")),
        "HttpsProxy": hostinfo.mask_credentials(hostinfo.proxy_env("HTTPS_PROXY")),
        "NoProxy": hostinfo.proxy_env("NO_PROXY"),
        "Name": cfg.node_name,
        "Labels": [],
        "ExperimentalBuild": False,
        "ServerVersion": ENGINE_VERSION,
        "Runtimes": {"runc": {"path": "runc"}},
        "DefaultRuntime": "runc",
        "Swarm": ctx.swarm_info(),
        "LiveRestoreEnabled": False,
        "Isolation": "",
        "InitBinary": "docker-init",
        "ContainerdCommit": dict(_NOT_AVAILABLE),
        "RuncCommit": dict(_NOT_AVAILABLE),
        "InitCommit": dict(_NOT_AVAILABLE),
        "SecurityOptions": [],
        "CDISpecDirs": [],
        "Warnings": [],
    }
    if versions.less_than(api, "1.25"):
        # dockerd: pre-1.25 clients expect name-only security options and this legacy field.
        body["SecurityOptions"] = [opt.split(",", 1)[0].removeprefix("name=") for opt in body["SecurityOptions"]]
        body["ExecutionDriver"] = "<not supported>"
    return body
