"""Leader failover time: kill -9 the leader of 3 KV processes, time the first commit on a new leader.

Default timing (heartbeat 100 ms, election timeout 10 ticks = 1-2 s randomized), mutual TLS, fsync on.
Each trial: a client writes continuously to both survivors (one put in flight per survivor; followers
answer "not leader" at once, a dead connection times out after 300 ms), the leader gets SIGKILL, and the
time from the kill to the first acknowledged put is recorded. The killed node is then restarted from its
data directory and must catch up before the next trial (which kills whoever leads then).

Prints ONE JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from agents.raft.kv import KVClient  # noqa: E402
from agents.raft.kvcluster import LocalCluster  # noqa: E402


def eprint(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


async def _writer(
    cluster: LocalCluster, nid: int, t_kill: list[float], first_ok: asyncio.Future[tuple[float, int]]
) -> None:
    """Write to one survivor until a put is acknowledged after the kill."""
    client: KVClient | None = None
    n = 0
    while not first_ok.done():
        try:
            if client is None:
                client = await KVClient.connect("127.0.0.1", cluster.client_ports[nid], timeout=0.3)
            n += 1
            await client.put(b"failover", b"%d-%d" % (nid, n), timeout=0.3)
            now = time.perf_counter()
            if t_kill and now > t_kill[0] and not first_ok.done():
                first_ok.set_result((now, nid))
        except Exception as e:
            if isinstance(e, (ConnectionError, OSError)) and client is not None:
                await client.close()
                client = None
            await asyncio.sleep(0.005)
    if client is not None:
        await client.close()


async def _caught_up(cluster: LocalCluster, nid: int, leader: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await cluster.statuses()
        if (
            nid in st
            and leader in st
            and st[leader]["role"] == "leader"
            and st[nid]["leader"] == leader
            and st[nid]["applied"] >= st[leader]["commit"]
        ):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"node {nid} did not catch up with leader {leader}")


async def run(args: argparse.Namespace, cluster: LocalCluster) -> dict[str, Any]:
    leader = await cluster.wait_leader(timeout=20.0)
    samples: list[float] = []
    for trial in range(args.trials):
        survivors = [n for n in cluster.ids if n != leader]
        t_kill: list[float] = []
        first_ok: asyncio.Future[tuple[float, int]] = asyncio.get_running_loop().create_future()
        writers = [asyncio.create_task(_writer(cluster, s, t_kill, first_ok)) for s in survivors]
        try:
            await asyncio.sleep(args.settle)
            t_kill.append(time.perf_counter())
            cluster.kill(leader)
            t_ok, new_leader = await asyncio.wait_for(asyncio.shield(first_ok), args.trial_timeout)
        finally:
            if not first_ok.done():
                first_ok.cancel()
            for w in writers:
                w.cancel()
            for w in writers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await w
        dt = t_ok - t_kill[0]
        samples.append(dt)
        eprint(f"trial {trial + 1}/{args.trials}: killed {leader}, node {new_leader} committed after {dt:.3f}s")
        cluster.start_node(leader)
        await _caught_up(cluster, leader, new_leader)
        leader = new_leader
    s = sorted(samples)

    def pct(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))], 3)

    return {
        "trials": len(s),
        "p50_s": pct(0.5),
        "p99_s": pct(0.99),
        "max_s": round(s[-1], 3),
        "min_s": round(s[0], 3),
        "samples_s": [round(x, 3) for x in samples],
        "heartbeat_ms": args.tick_ms,
        "election_ticks": args.election_ticks,
        "tls": True,
        "fsync": True,
        "targets": {"p50_s": 2.0, "p99_s": 3.0},
    }


def main() -> None:
    # SIGTERM -> SystemExit, so the finally blocks kill every node process and remove the temp dirs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--tick-ms", type=float, default=100.0)
    ap.add_argument("--election-ticks", type=int, default=10)
    ap.add_argument("--settle", type=float, default=0.3, help="seconds of steady writes before the kill")
    ap.add_argument("--trial-timeout", type=float, default=20.0)
    args = ap.parse_args()
    t0 = time.monotonic()
    with LocalCluster(tls=True, fsync=True, tick_ms=args.tick_ms, election_ticks=args.election_ticks) as c:
        c.start()
        try:
            result = asyncio.run(run(args, c))
        except BaseException:
            for nid in c.ids:
                eprint(f"--- node {nid} log tail ---\n{c.log_tail(nid)}")
            raise
        finally:
            c.stop_all()
    result["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
