"""Committed-write throughput: our Raft (3 KV processes, mutual TLS, fsync) vs PySyncObj 0.3.17.

Both systems run as 3 processes on 127.0.0.1 with 100-byte values and the same total number of
proposals in flight; throughput is the number of proposals whose *apply* was acknowledged to the proposer
inside the measurement window, latency is proposal -> acknowledgement.

* ours: one load-generator process (this one) opens ``--conns`` pipelined client connections with
  ``--inflight`` puts in flight on each -- by default one connection per node, the followers relaying
  puts to the leader (the shape of PySyncObj's run below); ``--clients leader`` sends everything to the
  leader instead. The servers persist every Ready with one fsync and talk mutual TLS.
* PySyncObj: each of the 3 node processes proposes through its ``@replicated`` method with a callback,
  keeping ``conns*inflight/3`` in flight (followers forward to the leader internally); each callback
  submits the next command from PySyncObj's own thread. PySyncObj keeps its log in memory (no journal
  file, no fsync) and uses no encryption: its fastest configuration. Its load generator lives inside the
  node processes (no client hop), ours is a separate process talking TCP: both favour PySyncObj.

Prints ONE JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

VALUE_SIZE = 100


def eprint(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def percentiles(lat_s: list[float]) -> dict[str, float]:
    if not lat_s:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    lat = sorted(lat_s)

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3, 3)

    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "mean_ms": round(statistics.fmean(lat) * 1e3, 3)}


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------- ours


def _load_protocol(value: bytes, inflight: int, w0: float, w1: float, lat: list[float], errors: dict[str, int]) -> Any:
    """A pipelined put generator: each response immediately triggers the next request (no coroutines)."""
    from agents.raft.kv import OK, FrameProtocol

    perf = time.perf_counter

    class Load(FrameProtocol):
        def __init__(self) -> None:
            super().__init__()
            self.sent: dict[int, float] = {}
            self.rid = 0
            self.finished = self._loop.create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            for _ in range(inflight):
                self.issue()

        def issue(self) -> None:
            now = perf()
            if now >= w1:
                if not self.sent and not self.finished.done():
                    self.finished.set_result(None)
                return
            self.rid += 1
            self.sent[self.rid] = now
            self.send([self.rid, "put", b"k%d" % self.rid, value])

        def frame_received(self, obj: Any) -> None:
            t0 = self.sent.pop(obj[0])
            t1 = perf()
            if obj[1] == OK:
                if w0 <= t1 < w1:
                    lat.append(t1 - t0)
            else:
                key = str(obj[2])[:40]
                errors[key] = errors.get(key, 0) + 1
            self.issue()

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.finished.done():
                self.finished.set_exception(ConnectionError(f"lost: {exc}"))

    return Load


async def _ours_load(
    cluster: Any, leader: int, conns: int, inflight: int, warmup: float, duration: float, spread: bool = False
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    value = os.urandom(VALUE_SIZE)
    lat: list[float] = []
    errors: dict[str, int] = {}
    t_start = time.perf_counter()
    w0, w1 = t_start + warmup, t_start + warmup + duration
    proto_cls = _load_protocol(value, inflight, w0, w1, lat, errors)
    protos = []
    for i in range(conns):
        target = leader if not spread else cluster.ids[i % len(cluster.ids)]
        _, proto = await loop.create_connection(proto_cls, "127.0.0.1", cluster.client_ports[target])
        protos.append(proto)
    await asyncio.wait_for(asyncio.gather(*(p.finished for p in protos)), warmup + duration + 30)
    for p in protos:
        p.transport.close()
    return {"ops": len(lat), "lat": lat, "errors": errors}


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from agents.raft.kvcluster import LocalCluster

    profile_dir = Path(args.profile_dir) if args.profile_dir else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    extra = ("--snapshot-every", str(args.snapshot_every))
    spread = args.clients == "spread"
    with LocalCluster(
        tls=True, fsync=True, profile_dir=profile_dir, extra_args=extra, forward=spread
    ) as cluster:
        cluster.start()

        async def go() -> dict[str, Any]:
            leader = await cluster.wait_leader(timeout=20.0)
            eprint(f"ours: leader is node {leader}; loading for {args.warmup}+{args.duration}s")
            res = await _ours_load(
                cluster, leader, args.conns, args.inflight, args.warmup, args.duration, spread
            )
            st = await cluster.statuses()
            res["leader"] = leader
            res["runner"] = st.get(leader, {}).get("runner")
            return res

        try:
            res = asyncio.run(go())
        finally:
            cluster.stop_all()
    ops_s = res["ops"] / args.duration
    out = {
        "ops_per_s": round(ops_s, 1),
        **percentiles(res["lat"]),
        "tls": True,
        "fsync": True,
        "errors": res["errors"],
        "clients": f"{args.conns} pipelined connections x {args.inflight} in flight, "
        + ("one per node, followers relay puts to the leader" if spread else "all to the leader"),
    }
    rs = res.get("runner") or {}
    if rs.get("fsyncs"):
        out["leader_entries_per_fsync"] = round(rs["entries_saved"] / rs["fsyncs"], 1)
    return out


# ---------------------------------------------------------------------- PySyncObj


def pysyncobj_node(args: argparse.Namespace) -> None:
    """Child process: one PySyncObj member that also generates its share of the load."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    class KV(SyncObj):  # type: ignore[misc]
        def __init__(self, me: str, partners: list[str]) -> None:
            super().__init__(me, partners, SyncObjConf(appendEntriesUseBatch=not args.pso_no_batch))
            self._data: dict[bytes, bytes] = {}

        @replicated  # type: ignore[untyped-decorator]
        def put(self, key: bytes, value: bytes) -> int:
            self._data[key] = value
            return len(self._data)

    addrs = [f"127.0.0.1:{p}" for p in args.ports.split(",")]
    me = addrs[args.pysyncobj_node]
    obj = KV(me, [a for a in addrs if a != me])
    while obj._getLeader() is None and time.time() < args.start_at + 30:
        time.sleep(0.01)
    while time.time() < args.start_at:
        time.sleep(0.005)
    t_start = time.perf_counter()
    w0, w1 = t_start + args.warmup, t_start + args.warmup + args.duration
    lat: list[float] = []
    errors: dict[str, int] = {}
    value = os.urandom(VALUE_SIZE)
    perf = time.perf_counter
    seq = iter(range(1 << 62))
    prefix = b"n%d-" % args.pysyncobj_node

    # Closed loop without cross-thread wake-ups: each callback (run on PySyncObj's own thread) submits
    # the next command, so the main thread only sleeps -- the most favourable way to drive PySyncObj.
    def submit() -> None:
        t0 = perf()
        if t0 >= w1:
            return

        def cb(result: Any, err: Any) -> None:
            t1 = perf()
            if err == FAIL_REASON.SUCCESS:
                if w0 <= t1 < w1:
                    lat.append(t1 - t0)
            else:
                errors[str(err)] = errors.get(str(err), 0) + 1
            submit()

        obj.put(prefix + b"%d" % next(seq), value, callback=cb)

    for _ in range(args.inflight):
        submit()
    time.sleep(max(0.0, w1 - perf()))
    time.sleep(0.5)
    print(json.dumps({"ops": len(lat), "lat": lat, "errors": errors, "leader": str(obj._getLeader())}))
    sys.stdout.flush()
    os._exit(0)  # PySyncObj's threads do not stop on their own


def run_pysyncobj(args: argparse.Namespace) -> dict[str, Any]:
    ports = free_ports(3)
    per_node = args.pso_inflight or max(1, args.conns * args.inflight // 3)
    start_at = time.time() + 3.0
    procs: list[subprocess.Popen[bytes]] = []
    tmp = tempfile.mkdtemp(prefix="pysyncobj-")
    try:
        for i in range(3):
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--pysyncobj-node",
                str(i),
                "--ports",
                ",".join(map(str, ports)),
                "--start-at",
                str(start_at),
                "--warmup",
                str(args.warmup),
                "--duration",
                str(args.duration),
                "--inflight",
                str(per_node),
                *(["--pso-no-batch"] if args.pso_no_batch else []),
            ]
            procs.append(
                subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, start_new_session=True)
            )
        eprint(f"pysyncobj: 3 nodes x {per_node} in flight; loading for {args.warmup}+{args.duration}s")
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=start_at - time.time() + args.warmup + args.duration + 60)
            outs.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    lat = [x for o in outs for x in o["lat"]]
    errors: dict[str, int] = {}
    for o in outs:
        for k, v in o["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {
        "ops_per_s": round(len(lat) / args.duration, 1),
        **percentiles(lat),
        "tls": False,
        "fsync": False,
        "errors": errors,
        "clients": f"each of 3 nodes proposes with {per_node} in flight (followers forward)",
        "version": "0.3.17",
    }


def main() -> None:
    # SIGTERM -> SystemExit, so the finally blocks kill every node process and remove the temp dirs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--conns", type=int, default=3)
    ap.add_argument("--inflight", type=int, default=256)
    ap.add_argument(
        "--pso-inflight", type=int, default=0, help="PySyncObj in flight per node (default: the same total)"
    )
    ap.add_argument(
        "--pso-no-batch", action="store_true", help="PySyncObj: appendEntriesUseBatch=False (send at once)"
    )
    ap.add_argument("--snapshot-every", type=int, default=100_000)
    ap.add_argument(
        "--clients",
        choices=["leader", "spread"],
        default="spread",
        help="ours: every connection to the leader, or one per node with followers relaying to the leader",
    )
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    ap.add_argument("--only", choices=["ours", "pysyncobj"], default=None)
    ap.add_argument("--profile-dir", default=None, help="cProfile dumps of our KV processes")
    # child mode
    ap.add_argument("--pysyncobj-node", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ports", default="", help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pysyncobj_node is not None:
        pysyncobj_node(args)
        return
    result: dict[str, Any] = {"payload_bytes": VALUE_SIZE, "duration_s": args.duration, "nodes": 3}
    systems = [x for x in ("ours", "pysyncobj") if args.only in (None, x)]
    runs: dict[str, list[dict[str, Any]]] = {x: [] for x in systems}
    load_before = os.getloadavg()[0]
    t0 = time.monotonic()
    for r in range(args.rounds):  # alternate, so a noisy neighbour hurts both systems alike
        for system in systems:
            res = run_ours(args) if system == "ours" else run_pysyncobj(args)
            eprint(f"round {r + 1}/{args.rounds} {system}:", json.dumps(res))
            runs[system].append(res)
    for system, rs in runs.items():
        rs.sort(key=lambda x: x["ops_per_s"])
        best = dict(rs[len(rs) // 2])  # the median round
        best["rounds_ops_per_s"] = [x["ops_per_s"] for x in rs]
        result[system] = best
    if "ours" in result and "pysyncobj" in result and result["pysyncobj"]["ops_per_s"]:
        result["ratio"] = round(result["ours"]["ops_per_s"] / result["pysyncobj"]["ops_per_s"], 3)
    result["rounds"] = args.rounds
    result["wall_s"] = round(time.monotonic() - t0, 1)
    result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["cpus"] = os.cpu_count()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
