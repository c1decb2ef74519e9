"""Agent start-up figure: time from spawning N `labagent` processes at once to each one's first /_ping
answer (the wait `labctl up` has per lab), median and worst over a few rounds, plus the CPU time each
agent had used when it first answered (independent of whatever else loads the machine).

Prints one JSON object. Defaults: 5 agents (the default lab), 5 rounds; `--agents N --rounds R` to change.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _ping_once(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
    finally:
        s.close()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(agent: str, n: int, cpu: list[float]) -> list[float]:
    root = tempfile.mkdtemp(prefix="la-bench-")
    procs: list[subprocess.Popen[bytes]] = []
    socks = [os.path.join(root, f"n{i}.sock") for i in range(n)]
    ready: dict[int, float] = {}
    t0 = time.perf_counter()
    try:
        for i in range(n):
            procs.append(
                subprocess.Popen(
                    [agent, "--socket", socks[i], "--state-dir", os.path.join(root, f"s{i}"), "--node-name", f"n{i}"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = t0 + 20.0
        while len(ready) < n and time.perf_counter() < deadline:
            for i in range(n):
                if i not in ready and os.path.exists(socks[i]) and _ping_once(socks[i]):
                    ready[i] = time.perf_counter() - t0
                    cpu.append(_cpu_seconds(procs[i].pid))
            time.sleep(0.002)
        if len(ready) < n:
            raise SystemExit(f"only {len(ready)}/{n} agents answered /_ping within 20 s")
        return [ready[i] for i in range(n)]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agents", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    agent = str(Path(sys.executable).with_name("labagent"))
    load_before = os.getloadavg()[0]
    cpu: list[float] = []
    one_round(agent, 1, [])  # warm the page cache and .pyc files, as on a lab host after the first lab
    worst: list[float] = []
    every: list[float] = []
    for _ in range(args.rounds):
        times = one_round(agent, args.agents, cpu)
        worst.append(max(times))
        every.extend(times)
    print(
        json.dumps(
            {
                "agents": args.agents,
                "rounds": args.rounds,
                "cores": os.cpu_count(),
                "spawn_to_ping_median_s": round(statistics.median(every), 3),
                "spawn_to_last_ping_median_s": round(statistics.median(worst), 3),
                "spawn_to_last_ping_worst_s": round(max(worst), 3),
                "cpu_s_per_agent_at_first_ping_median": round(statistics.median(cpu), 3),
                "loadavg_1min_before": load_before,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
