"""``labagent``: the node daemon serving the Docker Engine API on a unix socket.

Start-up speed matters (a lab spawns several agents at once on a small machine), so this module
imports only argparse-level stdlib at load time; asyncio, aiohttp and the API modules are imported
once the command line is known to be good. Exit codes: 0 after SIGTERM/SIGINT, 1 when the agent
cannot start or crashes (one line on stderr, details in ``<state-dir>/labagent.log``), 2 for a bad
command line.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence

from agents.config import AgentConfig, parse_args

log = logging.getLogger("labagent")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StartupError(RuntimeError):
    """The agent cannot start; the message is the one line printed on stderr."""


def setup_logging(cfg: AgentConfig) -> None:
    """Everything (ours, aiohttp's, asyncio's, warnings) goes to the log file; nothing to stderr."""
    handler = logging.FileHandler(cfg.log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(cfg.log_level.upper())
    logging.captureWarnings(True)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: parse flags, prepare the state dir, serve until signalled."""
    t0 = time.monotonic()
    cfg = parse_args(argv)  # exits 2 on a bad command line
    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(cfg)
    except OSError as exc:
        print(f"labagent: error: cannot use state dir {cfg.state_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1

    import asyncio

    from agents import footprint

    footprint.apply()
    try:
        return asyncio.run(_serve(cfg, t0))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        print(f"labagent: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        log.exception("labagent crashed")
        print(f"labagent: error: {type(exc).__name__}: {exc} (see {cfg.log_file})", file=sys.stderr)
        return 1


async def _serve(cfg: AgentConfig, t0: float) -> int:
    import asyncio
    import signal

    log.info(
        "labagent starting: node=%s addr=%s state=%s socket=%s pid=%d",
        cfg.node_name,
        cfg.addr or "-",
        cfg.state_dir,
        cfg.socket_path,
        os.getpid(),
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    # Installed before the slow imports so an early SIGTERM still ends in a clean shutdown.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    from agents.fastimport import import_without_system_cas

    import_without_system_cas("agents.api.server")
    from agents.api.server import ApiServer, SocketInUse, build_app
    from agents.context import NodeContext

    try:
        ctx = NodeContext.create(cfg)
    except OSError as exc:
        raise StartupError(f"cannot initialise state in {cfg.state_dir}: {exc.strerror or exc}") from exc
    app = build_app(ctx)
    access_log = logging.getLogger("labagent.access") if cfg.debug else None
    try:
        server = await ApiServer.start(app, cfg.socket_path, access_log=access_log)
    except SocketInUse as exc:
        raise StartupError(str(exc)) from exc
    except OSError as exc:
        raise StartupError(f"cannot listen on {cfg.socket_path}: {exc.strerror or exc}") from exc
    log.info("serving the Docker Engine API on unix://%s (ready in %.0f ms)", cfg.socket_path, _ms_since(t0))

    # The swarm side comes after the socket answers: /_ping first, then resume any swarm membership.
    from agents.api.forwarding import local_replayer
    from agents.swarmnode import SwarmNode, SwarmTiming

    swarm = SwarmNode(cfg.state_dir, cfg.node_name, timing=SwarmTiming.from_env())
    swarm.forward_to_local_api = local_replayer(cfg.socket_path)  # the leader answers followers' requests
    ctx.swarm = swarm
    await swarm.start()
    # Managers fetch task logs from the node that ran the task (docs/swarm-design.md, "Task logs").
    from agents.api.nodelogs import run_node_log_server

    log_server = asyncio.ensure_future(run_node_log_server(ctx))
    # Everything imported and started so far lives as long as the agent: freeze it, so the collector's
    # full passes (20-30 ms each, several during a burst of task starts) walk only recent objects.
    from agents.raft import gctune

    gc_freezer = gctune.start()

    await stop.wait()
    log.info("received %s: shutting down", received[0] if received else "stop")
    log_server.cancel()
    await asyncio.gather(log_server, return_exceptions=True)
    await gctune.stop(gc_freezer)
    await swarm.stop()
    standalone = getattr(ctx, "standalone", None)  # docker run containers: keep running, stop their ports
    if standalone is not None:
        await standalone.close()
    await server.close()
    log.info("stopped")
    return 0


def _ms_since(t0: float) -> float:
    return (time.monotonic() - t0) * 1000.0


if __name__ == "__main__":
    sys.exit(main())
