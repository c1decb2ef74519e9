from __future__ import annotations

import dataclasses
import random
import re

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.state.objects import (
    ID_LENGTH,
    KINDS,
    SECOND,
    Cluster,
    ContainerSpec,
    Network,
    Node,
    NodeRole,
    RestartCondition,
    RootCA,
    Secret,
    SecretSpec,
    Service,
    ServiceSpec,
    Task,
    TaskSpec,
    TaskState,
    UpdateConfig,
    UpdateOrder,
    is_terminal,
    kind_of,
    new_id,
    task_name,
)
from tests.unit.state.strategies import for_class

ALL = list(KINDS.values())


def _plain(value: object) -> bool:
    if value is None or type(value) in (str, int, float, bool, bytes):
        return True
    if type(value) is list:
        return all(_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trips(cls: type, data: st.DataObject) -> None:
    obj = data.draw(for_class(cls))
    d = obj.to_dict()
    assert _plain(d)
    assert cls.from_dict(d) == obj
    assert cls.from_dict(msgpack.unpackb(msgpack.packb(d, use_bin_type=True))) == obj
    lst = obj.to_list()
    assert _plain(lst)
    assert cls.from_list(msgpack.unpackb(msgpack.packb(lst, use_bin_type=True))) == obj
    assert obj.copy() == obj


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_copy_is_deep(cls: type, data: st.DataObject) -> None:
    obj = data.draw(for_class(cls))
    before = obj.to_dict()
    dup = obj.copy()
    _scribble(dup)
    assert obj.to_dict() == before


def _scribble(obj: object) -> None:
    """Mutate every mutable container and nested object reachable from ``obj``."""
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        v = getattr(obj, f.name)
        if isinstance(v, list):
            for item in v:
                if dataclasses.is_dataclass(item):
                    _scribble(item)
            v.append(v[0] if v else "x")
        elif isinstance(v, dict):
            for item in v.values():
                if dataclasses.is_dataclass(item):
                    _scribble(item)
            v["scribbled"] = "x" if not v else next(iter(v.values()))
        elif dataclasses.is_dataclass(v):
            _scribble(v)
        elif isinstance(v, str) and not isinstance(v, TaskState):
            try:
                setattr(obj, f.name, v + "!")
            except (TypeError, ValueError):
                pass


def test_defaults_follow_docker() -> None:
    c = Cluster()
    assert c.spec.name == "default"
    assert c.spec.orchestration.task_history_retention_limit == 5
    assert (c.spec.raft.heartbeat_tick, c.spec.raft.election_tick) == (1, 10)
    assert c.spec.dispatcher.heartbeat_period == 1 * SECOND
    assert c.spec.ca_config.node_cert_expiry == 90 * 24 * 3600 * SECOND
    assert c.spec.encryption_config.auto_lock_managers is False
    s = ServiceSpec()
    assert s.task_template.container.stop_grace_period == 10 * SECOND
    assert s.task_template.restart_policy.condition is RestartCondition.ANY
    assert s.task_template.restart_policy.delay == 5 * SECOND
    assert s.update_config == UpdateConfig(1, 0, "pause", 5 * SECOND, 0.0, UpdateOrder.STOP_FIRST)  # type: ignore[arg-type]
    assert s.endpoint_spec.mode == "vip"
    n = Node()
    assert n.desired_role is NodeRole.WORKER and n.manager_status is None
    assert ContainerSpec().secrets == [] and Network().spec.driver == "overlay"


def test_task_states_match_swarmkit() -> None:
    assert [(s.name, s.value) for s in TaskState] == [
        ("NEW", 0), ("PENDING", 64), ("ASSIGNED", 192), ("ACCEPTED", 256), ("PREPARING", 320),
        ("READY", 384), ("STARTING", 448), ("RUNNING", 512), ("COMPLETE", 576), ("SHUTDOWN", 640),
        ("FAILED", 704), ("REJECTED", 768), ("REMOVE", 800), ("ORPHANED", 832),
    ]  # fmt: skip
    assert str(TaskState.RUNNING) == "running" and TaskState.SHUTDOWN.docker_name == "shutdown"
    assert not TaskState.RUNNING.is_terminal and TaskState.COMPLETE.is_terminal
    assert next(s for s in TaskState if is_terminal(s)) is TaskState.COMPLETE


def test_new_id() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-z]{25}", i) for i in ids) and ID_LENGTH == 25
    assert new_id(random.Random(7)) == new_id(random.Random(7))


def test_task_name() -> None:
    assert task_name("web", "abc", slot=3) == "web.3.abc"
    assert task_name("mon", "abc", node_id="n1") == "mon.n1.abc"


@pytest.mark.parametrize(
    "bad",
    [
        {"id": 5},
        {"id": "x", "slot": "1"},
        {"id": "x", "status": {"state": 5}},
        {"id": "x", "status": "running"},
        {"id": "x", "networks": {"a": 1}},
        {"id": "x", "annotations": {"labels": {"k": 1}}},
        {"id": "x", "meta": {"version": 1.5}},
        [],
        None,
    ],
)
def test_from_dict_rejects_malformed(bad: object) -> None:
    with pytest.raises(ValueError):
        Task.from_dict(bad)


def test_from_dict_tolerates_missing_and_unknown_keys() -> None:
    t = Task.from_dict({"id": "abc", "future_field": 1, "status": {"state": 512}})
    assert t.id == "abc" and t.status.state is TaskState.RUNNING and t.spec == TaskSpec()
    assert Task.from_list(["abc"]).id == "abc"  # older, shorter wire form: trailing fields default


def test_redaction() -> None:
    c = Cluster(root_ca=RootCA(ca_key_pem=b"KEY", ca_cert_pem=b"CERT"), unlock_key=b"U")
    r = c.redacted()
    assert r.root_ca.ca_key_pem == b"" and r.unlock_key == b"" and r.root_ca.ca_cert_pem == b"CERT"
    assert c.root_ca.ca_key_pem == b"KEY"
    assert Secret(spec=SecretSpec(data=b"pw")).redacted().spec.data == b""


def test_kind_of() -> None:
    assert kind_of(Task) == "task" and kind_of("service") == "service" and KINDS["service"] is Service
    with pytest.raises(KeyError):
        kind_of("volume")
    with pytest.raises(KeyError):
        kind_of(TaskSpec)  # type: ignore[arg-type]
