"""Which standalone runs go behind a console (`agents.worker.console`), and the task that runs one.

A container gets a console when its create config asks for live stdio: ``docker run`` without ``-d``
(``AttachStdout``/``AttachStderr``), ``-i`` (``OpenStdin``), ``-t`` (``Tty``); the standalone side also
asks for one when an attach waits for the start. The run's task then hands the executor the console
as a host binary under the catalog's ``alpine`` entry (an image with a shell: the executor maps its
command to the host's binary and nothing else), with the real image's environment and working
directory; the console runs the image's command, resolved as the executor would have (host binary,
busybox applet or the image's Python program), as the config's user.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from agents.state.objects import ContainerSpec, Task, TaskSpec
from agents.worker.images import catalog

CONSOLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "console.py")
CONSOLE_IMAGE = "alpine"
CONSOLE_WAIT_S = 10.0
"""How long a console waits for the agent before starting its program anyway."""


def wants_console(config: dict[str, Any]) -> bool:
    return any(bool(config.get(k)) for k in ("Tty", "OpenStdin", "AttachStdin", "AttachStdout", "AttachStderr"))


def console_size(config: dict[str, Any]) -> tuple[int, int] | None:
    """``HostConfig.ConsoleSize`` ([height, width], what ``docker run -t`` sends)."""
    host_config = config.get("HostConfig") or {}
    size = host_config.get("ConsoleSize") if isinstance(host_config, dict) else None
    if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and 0 < v < 0x10000 for v in size):
        return int(size[0]), int(size[1])
    return None


def is_console(task: Task) -> bool:
    cs = task.spec.container
    return cs.image == CONSOLE_IMAGE and len(cs.command) > 3 and cs.command[3] == CONSOLE


def console_task(public: Task, config: dict[str, Any], console_dir: str) -> Task | None:
    """``public`` (the config's task) run behind a console listening in ``console_dir``. None when its
    command or user cannot be resolved: run as is, the executor then fails the start with Docker's text."""
    cs = public.spec.container
    try:
        spec = catalog.resolve(cs.image)
        argv = catalog.build_argv(spec, cs.command or None, None, cs.args)
        host = catalog.host_argv(spec, argv, python=sys.executable)
    except catalog.ImageError:
        return None
    env = spec.env_dict()
    catalog.overlay_env(env, cs.env)
    flags = ["--dir", console_dir, "--wait", str(CONSOLE_WAIT_S)]
    if config.get("Tty"):
        flags.append("--tty")
        env.setdefault("TERM", "xterm")
    if config.get("OpenStdin"):
        flags.append("--stdin")
    if config.get("StdinOnce"):
        flags.append("--stdin-once")
    size = console_size(config)
    if size is not None:
        flags += ["--size", f"{size[0]},{size[1]}"]
    if cs.user:
        from agents.worker.executor.execs import ExecFailed, resolve_user

        try:
            uid, gid, groups, home = resolve_user(cs.user)
        except ExecFailed:
            return None
        flags += ["--user", f"{uid}:{gid}:{','.join(str(g) for g in groups)}"]
        if home and not any(e.startswith("HOME=") for e in cs.env):
            env["HOME"] = home
    run_cs = ContainerSpec(
        image=CONSOLE_IMAGE,
        command=[sys.executable, "-I", "-S", CONSOLE, *flags, "--", *host],
        env=[f"{k}={v}" for k, v in env.items()],
        hostname=cs.hostname,
        dir=cs.dir or spec.working_dir,
        labels=dict(cs.labels),
        stop_signal=cs.stop_signal or spec.stop_signal,
        stop_grace_period=cs.stop_grace_period,
    )
    return Task(id=public.id, spec=TaskSpec(container=run_cs), annotations=public.annotations)
