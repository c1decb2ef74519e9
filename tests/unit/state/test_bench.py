"""Micro-benchmark of Store.apply, printed (``pytest -s``), never asserted: timings depend on the machine.

CPU time (``process_time``) is reported next to wall time because shared CI boxes are often contended;
``calib`` is the CPU time of a fixed pure-Python loop, to compare runs across machines.
"""

from __future__ import annotations

import random
import time

from agents.state.objects import (
    Annotations,
    NetworkAttachmentConfig,
    Placement,
    Task,
    TaskState,
    TaskStatus,
)
from agents.state.store import Store
from tests.unit.state.helpers import service, store


def _calibrate() -> float:
    t0 = time.process_time()
    for _ in range(200_000):
        {"a": 1, "b": [2]}  # noqa: B018
    return time.process_time() - t0


def _ms(f: float) -> str:
    return f"{f * 1e3:.1f} ms"


def test_apply_benchmark() -> None:
    rng = random.Random(42)
    svc = service("web", replicas=10_000, rng=rng)
    svc.spec.task_template.placement = Placement(constraints=["node.role==worker"])
    svc.spec.task_template.networks = [NetworkAttachmentConfig("net1", ["web"])]
    svc.spec.task_template.container.env = ["A=1", "B=2"]

    def fresh() -> Store:
        s = store()
        with s.local_batch() as tx:
            tx.create(svc.copy())
        return s

    with fresh().batch() as tx:
        for i in range(10_000):
            tx.create(
                Task(
                    service_id=svc.id,
                    slot=i + 1,
                    spec=svc.spec.task_template.copy(),
                    service_annotations=Annotations(name="web"),
                    annotations=Annotations(name=f"web.{i + 1}"),
                    desired_state=TaskState.RUNNING,
                    status=TaskStatus(timestamp=1.0, message="created"),
                )
            )
    assert tx.changeset is not None
    t0 = time.process_time()
    data = tx.changeset.encode()
    encode = time.process_time() - t0

    runs = []
    for _ in range(3):
        s = fresh()
        c0, w0 = time.process_time(), time.perf_counter()
        res = s.apply(2, data)
        runs.append((time.process_time() - c0, time.perf_counter() - w0))
        assert res.ok and s.count(Task) == 10_000
    cpu, wall = min(r[0] for r in runs), min(r[1] for r in runs)

    one: list[float] = []
    t = s.list(Task)[0]
    for i in range(500):
        c = t.copy()
        c.status.message = str(i)
        c.status.state = TaskState.PENDING
        with s.batch() as tx1:
            tx1.update(c)
        assert tx1.changeset is not None
        payload = tx1.changeset.encode()
        w0 = time.perf_counter()
        assert s.apply(s.index + 1, payload).ok
        one.append(time.perf_counter() - w0)
        t = s.get(Task, t.id)  # type: ignore[assignment]
    one.sort()

    c0 = time.process_time()
    snap = s.snapshot()
    snap_t = time.process_time() - c0
    c0 = time.process_time()
    Store().restore(snap)
    restore_t = time.process_time() - c0

    print(
        f"\n[state bench] calib {_ms(_calibrate())} | 10k-task changeset {len(data) / 1e6:.2f} MB, "
        f"encode {_ms(encode)} cpu | apply best cpu {_ms(cpu)}, wall {_ms(wall)} | "
        f"1-object apply median {one[len(one) // 2] * 1e6:.0f} us, p99 {one[int(len(one) * 0.99)] * 1e6:.0f} us | "
        f"snapshot {len(snap) / 1e6:.2f} MB in {_ms(snap_t)}, restore {_ms(restore_t)} cpu"
    )
