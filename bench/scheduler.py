"""Scheduler placement time: 1,000 and 10,000 replicas over 100 READY nodes.

For each size a fresh in-memory store (no Raft) gets 100 READY nodes, one replicated service and its
tasks already PENDING (what the allocator hands over). Timed: the scheduler's pass only, i.e. deciding
every placement (``Scheduler.plan``) and building the changesets (``Scheduler.build``, at most 5,000
tasks each). Task creation is not timed; applying the changesets to the store (encode, decode, apply,
the path a Raft entry takes) is reported separately as ``apply_*_s``. Each size runs ``--runs`` times
on a fresh store and the fastest run is reported (the machine is shared: interference only ever adds
time, so the minimum is the stable statistic; the median is reported next to it). The sizes alternate
so both see the same background load; ``ratio_cpu`` is the same ratio on thread CPU time. The bench also checks that the placement is even (100 ± 1 per node at 10,000).

Prints ONE JSON object on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from agents.manager.loop import LocalCommitter  # noqa: E402
from agents.manager.scheduler import Scheduler  # noqa: E402
from agents.state.objects import (  # noqa: E402
    Annotations,
    ContainerSpec,
    Node,
    NodeDescription,
    NodeState,
    NodeStatus,
    Platform,
    Service,
    ServiceSpec,
    Task,
    TaskSpec,
    TaskState,
    TaskStatus,
    new_id,
    task_name,
)
from agents.state.store import Store  # noqa: E402

NODES = 100
TARGET_PLACE_10000_S = 1.0
TARGET_RATIO = 1.5


def populated_store(replicas: int, seed: int) -> tuple[Store, Service]:
    rng = random.Random(seed)
    store = Store()
    with store.local_batch() as tx:
        for i in range(NODES):
            tx.create(
                Node(
                    id=new_id(rng),
                    description=NodeDescription(
                        hostname=f"node{i:03d}", platform=Platform("linux", "x86_64")
                    ),
                    status=NodeStatus(state=NodeState.READY, addr=f"10.10.0.{i + 1}"),
                )
            )
    svc = Service(
        id=new_id(rng),
        spec=ServiceSpec(
            name="web", replicas=replicas, task_template=TaskSpec(container=ContainerSpec(image="nginx"))
        ),
    )
    with store.local_batch() as tx:
        tx.create(svc)
    spec = svc.spec.task_template
    with store.local_batch() as tx:
        for slot in range(1, replicas + 1):
            tid = new_id(rng)
            tx.create(
                Task(
                    id=tid,
                    service_id=svc.id,
                    slot=slot,
                    spec=spec,
                    service_annotations=Annotations(name="web"),
                    annotations=Annotations(name=task_name("web", tid, slot=slot)),
                    desired_state=TaskState.RUNNING,
                    status=TaskStatus(state=TaskState.PENDING, message="pending task scheduling"),
                )
            )
    return store, svc


def run_once(replicas: int, seed: int) -> dict[str, Any]:
    store, svc = populated_store(replicas, seed)
    sched = Scheduler(store, LocalCommitter(store))
    sched.rebuild()
    gc.collect()
    c0, t0 = time.thread_time(), time.perf_counter()
    decisions = sched.plan()
    txs = sched.build(decisions)
    t1, c1 = time.perf_counter(), time.thread_time()
    for tx in txs:
        assert tx.changeset is not None
        result = store.commit_local(tx.changeset)
        assert result.ok, result.error
    t2 = time.perf_counter()
    counts: dict[str, int] = {}
    for t in store.tasks_by_service(svc.id):
        assert t.status.state == TaskState.ASSIGNED and t.node_id
        counts[t.node_id] = counts.get(t.node_id, 0) + 1
    per_node = [counts.get(n.id, 0) for n in store.list(Node)]
    return {
        "place_s": t1 - t0,
        "cpu_s": c1 - c0,
        "apply_s": t2 - t1,
        "changesets": len(txs),
        "placed": sum(per_node),
        "min_per_node": min(per_node),
        "max_per_node": max(per_node),
    }


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(results[0])
    out["place_s"] = min(r["place_s"] for r in results)
    out["place_median_s"] = statistics.median(r["place_s"] for r in results)
    out["cpu_s"] = min(r["cpu_s"] for r in results)
    out["apply_s"] = min(r["apply_s"] for r in results)
    out["min_per_node"] = min(r["min_per_node"] for r in results)
    out["max_per_node"] = max(r["max_per_node"] for r in results)
    out["placed"] = min(r["placed"] for r in results)
    return out


def measure(runs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Alternate the sizes so that both see the same background load."""
    small: list[dict[str, Any]] = []
    large: list[dict[str, Any]] = []
    for seed in range(runs):
        small.append(run_once(1_000, seed))
        large.append(run_once(10_000, seed))
    return summarize(small), summarize(large)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    small, large = measure(args.runs)
    per_small = small["place_s"] / 1_000 * 1e6
    per_large = large["place_s"] / 10_000 * 1e6
    ratio = per_large / per_small
    even = large["placed"] == 10_000 and large["min_per_node"] >= 99 and large["max_per_node"] <= 101
    out = {
        "nodes": NODES,
        "runs": args.runs,
        "place_1000_s": round(small["place_s"], 4),
        "place_10000_s": round(large["place_s"], 4),
        "per_task_us_1000": round(per_small, 2),
        "per_task_us_10000": round(per_large, 2),
        "ratio": round(ratio, 3),
        "ratio_cpu": round((large["cpu_s"] / 10_000) / (small["cpu_s"] / 1_000), 3),
        "place_median_1000_s": round(small["place_median_s"], 4),
        "place_median_10000_s": round(large["place_median_s"], 4),
        "apply_1000_s": round(small["apply_s"], 4),
        "apply_10000_s": round(large["apply_s"], 4),
        "changesets_10000": large["changesets"],
        "per_node_10000": [large["min_per_node"], large["max_per_node"]],
        "targets": {
            "place_10000_s": TARGET_PLACE_10000_S,
            "ratio": TARGET_RATIO,
            "per_node_10000": "100 +- 1",
        },
        "meets": {
            "place_10000_s": large["place_s"] <= TARGET_PLACE_10000_S,
            "ratio": ratio <= TARGET_RATIO,
            "even": even,
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
