"""Placement constraints: Docker's syntax, error texts and matching rules."""

from __future__ import annotations

import pytest

from agents.manager.scheduler.constraints import Op, node_matches, parse_constraint, parse_constraints
from agents.state.objects import NodeRole
from tests.unit.manager.swarmfixtures import make_node


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("node.role", "constraint expected one operator from ==, !="),
        ("node.role = manager", "constraint expected one operator from ==, !="),
        ("node.role >= 3", "constraint expected one operator from ==, !="),
        ("a==b", "key 'a' is invalid"),
        ("node role==manager", "key 'node role' is invalid"),
        ("==manager", "key '' is invalid"),
        ("node.role==", "value '' is invalid"),
        ("node.labels.size==>3", "value '>3' is invalid"),
        ("node.labels.a!==b", "key 'node.labels.a!' is invalid"),
    ],
)
def test_parse_errors_use_docker_texts(expr: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_constraints(["node.role==worker", expr])
    assert str(e.value) == message


def test_parse_trims_whitespace_and_picks_operator() -> None:
    c = parse_constraint("  node.labels.zone  !=  East ")
    assert (c.key, c.op, c.exp, c.label) == ("node.labels.zone", Op.NE, "East", "zone")
    c = parse_constraint("node.hostname==web-1.lab")
    assert c.op is Op.EQ and c.exp == "web-1.lab"
    assert parse_constraints([]) == []


def test_each_key_matches() -> None:
    n = make_node(
        "Lab-Node1",
        labels={"zone": "east", "Disk": "SSD"},
        engine_labels={"gpu": "yes"},
        role=NodeRole.MANAGER,
        os="linux",
        arch="aarch64",
        addr="192.168.10.7",
    )
    ok = [
        f"node.id=={n.id}",
        "node.hostname==lab-node1",
        "node.role==manager",
        "node.role!=worker",
        "node.ip==192.168.10.7",
        "node.ip==192.168.10.0/24",
        "node.ip!=10.0.0.0/8",
        "node.platform.os==Linux",
        "node.platform.arch==aarch64",
        "node.labels.zone==EAST",
        "node.labels.Disk==ssd",
        "node.labels.missing!=x",
        "engine.labels.gpu==yes",
        "NODE.LABELS.zone==east",
        "Node.Hostname!=other",
    ]
    for expr in ok:
        assert node_matches(parse_constraints([expr]), n.copy()), expr
    bad = [
        "node.id==abc",
        "node.hostname!=LAB-NODE1",
        "node.role==worker",
        "node.ip==192.168.10.8",
        "node.ip==10.0.0.0/8",
        "node.ip!=192.168.0.0/16",
        "node.platform.arch==arm64",
        "node.labels.zone!=east",
        "node.labels.disk==ssd",  # label names are case-sensitive
        "node.labels.missing==x",
        "engine.labels.gpu==no",
        "node.unknown==x",
        "node.unknown!=x",
    ]
    for expr in bad:
        assert not node_matches(parse_constraints([expr]), n), expr


def test_malformed_ip_matches_neither_way() -> None:
    n = make_node("a", addr="10.1.2.3")
    for expr in ("node.ip==10.1.2", "node.ip!=10.1.2", "node.ip!=notanip"):
        assert not node_matches(parse_constraints([expr]), n), expr


def test_all_constraints_must_hold() -> None:
    n = make_node("a", labels={"zone": "east"}, role=NodeRole.WORKER)
    assert node_matches(parse_constraints(["node.labels.zone==east", "node.role==worker"]), n)
    assert not node_matches(parse_constraints(["node.labels.zone==east", "node.role==manager"]), n)
