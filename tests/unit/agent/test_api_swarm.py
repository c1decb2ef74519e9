"""Swarm, nodes, secrets and networks endpoints driven by the docker SDK against a real 3-node swarm
(two managers and a worker, in-process on 127.A.B.x, see ``swarmharness``).

The swarm is built through the API itself (``client.swarm.init/join``); requests sent to the follower
manager are forwarded to the leader. Bodies are checked against the v1.45 reference spec. Tests run in
file order on one module-scoped swarm; the ones that change membership come last.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.types import IPAMConfig, IPAMPool

from agents.api import netaddr
from agents.api.forwarding import local_replayer
from agents.state.objects import ContainerSpec, SecretReference, Service, ServiceSpec, TaskSpec
from tests import apischema

from .agentserver import Reply, http_request
from .swarmharness import InProcessNode, loopback_subnet

pytestmark = pytest.mark.timeout(180)

WORKER_MSG = (
    "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
    "Please run this command on a manager node or promote the current node to a manager."
)
NO_SWARM_MSG = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node '
    "to swarm and try again."
)


class Swarm:
    def __init__(self, root: Path) -> None:
        net = loopback_subnet()
        self.nodes: dict[str, InProcessNode] = {}
        self.clients: dict[str, docker.DockerClient] = {}
        for i, name in enumerate(("m1", "m2", "w1"), start=1):
            node = InProcessNode(root / name, name, f"{net}.{i}")
            node.swarm.forward_to_local_api = local_replayer(node.sock)  # as the daemon wires it
            self.nodes[name] = node
            self.clients[name] = docker.DockerClient(base_url=node.base_url, version="1.45", timeout=60)

    def close(self) -> None:
        for c in self.clients.values():
            c.close()
        for n in self.nodes.values():
            n.stop()


    def build(self) -> None:
        """``swarm init`` on m1, m2 joins as a manager and w1 as a worker, all through the SDK."""
        m1 = self.nodes["m1"]
        self.node_id = self.clients["m1"].swarm.init(advertise_addr=m1.ip)
        tokens = self.clients["m1"].api.inspect_swarm()["JoinTokens"]
        self.joined = (
            self.clients["m2"].swarm.join([f"{m1.ip}:2377"], tokens["Manager"]),
            self.clients["w1"].swarm.join([m1.ip], tokens["Worker"]),  # the port defaults to 2377
        )


@contextlib.contextmanager
def built_swarm(prefix: str) -> Iterator[Swarm]:
    root = Path(tempfile.mkdtemp(prefix=prefix))  # short: unix socket paths are limited
    s = Swarm(root)
    try:
        s.build()
        yield s
    finally:
        s.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def swarm() -> Iterator[Swarm]:
    """Shared by the tests that leave membership as they found it (each test stands alone: xdist)."""
    with built_swarm("la-sw-") as s:
        yield s


@contextlib.contextmanager
def lone_node(name: str = "x1") -> Iterator[InProcessNode]:
    """A node in no swarm."""
    root = Path(tempfile.mkdtemp(prefix="la-sw1-"))
    node = InProcessNode(root / name, name, loopback_subnet() + ".1")
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(root, ignore_errors=True)


def api(node: InProcessNode, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Reply:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if data is not None else {}
    return http_request(node.sock, method, path, data, headers)


def api_error(fn: Callable[[], Any]) -> docker.errors.APIError:
    with pytest.raises(docker.errors.APIError) as info:
        fn()
    return info.value


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def update_spec(client: docker.DockerClient, ref: str, **changes: Any) -> None:
    """Re-read the node and update its spec, retrying while the leader's own bookkeeping (status,
    reachability) moves the version under us, as a careful client does."""
    for _ in range(20):
        node = client.nodes.get(ref)
        try:
            node.update(dict(node.attrs["Spec"], **changes))
            return
        except docker.errors.APIError as exc:
            if "update out of sequence" not in str(exc):
                raise
        time.sleep(0.1)
    pytest.fail("node update kept running out of sequence")


# ------------------------------------------------------------------------------------- membership


def test_not_in_swarm_refusals() -> None:
    with lone_node() as node:
        for path in ("/nodes", "/swarm", "/secrets"):
            r = api(node, "GET", path)
            assert (r.status, r.json()) == (503, {"message": NO_SWARM_MSG}), path
        r = api(node, "POST", "/swarm/leave")
        assert (r.status, r.json()["message"]) == (503, "This node is not part of a swarm")
        r = api(node, "POST", "/networks/create", {"Name": "x", "Driver": "overlay"})
        assert (r.status, r.json()["message"]) == (503, NO_SWARM_MSG)
        names = sorted(n["Name"] for n in api(node, "GET", "/networks").json())
        assert names == ["bridge", "host", "none"]
        client = docker.DockerClient(base_url=node.base_url, version="1.45", timeout=30)
        bad = api_error(lambda: client.swarm.init(advertise_addr="0.0.0.0"))
        assert bad.status_code == 400 and "advertise address must be a non-zero IP" in str(bad)
        client.close()


def test_init_and_join(swarm: Swarm) -> None:
    m1, c1 = swarm.nodes["m1"], swarm.clients["m1"]
    assert isinstance(swarm.node_id, str) and len(swarm.node_id) == 25
    assert swarm.joined == (True, True)
    again = api_error(lambda: c1.swarm.init(advertise_addr=m1.ip))
    assert again.status_code == 503 and "already part of a swarm" in str(again)

    c1.swarm.reload()
    attrs = c1.swarm.attrs
    apischema.validate(attrs, "Swarm")
    assert attrs["DataPathPort"] == 4789 and attrs["SubnetSize"] == 24
    assert attrs["TLSInfo"]["TrustRoot"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in json.dumps(attrs)

    info = swarm.clients["m2"].info()["Swarm"]
    assert info["ControlAvailable"] is True and info["LocalNodeState"] == "active"
    assert swarm.clients["w1"].info()["Swarm"]["ControlAvailable"] is False
    apischema.validate(c1.info()["Swarm"], "SwarmInfo")
    assert c1.info()["Swarm"]["Cluster"]["ID"] == attrs["ID"]
    assert c1.info()["Swarm"]["NodeID"] == swarm.node_id

    r = api(swarm.nodes["w1"], "POST", "/swarm/join", {"RemoteAddrs": [m1.ip], "JoinToken": attrs["JoinTokens"]["Worker"]})
    assert r.status == 503 and "already part of a swarm" in r.json()["message"]


def test_join_refusals(swarm: Swarm) -> None:
    with lone_node() as node:  # bad requests never get it into the swarm
        r = api(node, "POST", "/swarm/join", {"RemoteAddrs": [], "JoinToken": "x"})
        assert (r.status, r.json()["message"]) == (400, "at least 1 RemoteAddr is required to join")
        r = api(node, "POST", "/swarm/join", {"RemoteAddrs": [f"{swarm.nodes['m1'].ip}:2377"], "JoinToken": "bogus"})
        assert (r.status, r.json()["message"]) == (400, "invalid join token")
        r = api(node, "POST", "/swarm/join", {"RemoteAddrs": "m1", "JoinToken": "x"})
        assert r.status == 400 and "RemoteAddrs must be an array" in r.json()["message"]


# ------------------------------------------------------------------------------------------ nodes


def test_node_list_inspect_and_filters(swarm: Swarm) -> None:
    m1 = swarm.nodes["m1"]
    r = api(m1, "GET", "/nodes")
    assert r.status == 200
    apischema.validate(r.json(), "Node", array=True)
    nodes = {n["Description"]["Hostname"]: n for n in r.json()}
    assert set(nodes) == {"m1", "m2", "w1"}

    def leader_known() -> bool:
        ns = {n["Description"]["Hostname"]: n for n in api(m1, "GET", "/nodes").json()}
        return ns["m1"]["ManagerStatus"].get("Leader") is True and ns["m2"]["ManagerStatus"]["Reachability"] == "reachable"

    wait_for(leader_known, what="manager status of m1 and m2")
    assert "ManagerStatus" not in nodes["w1"]
    assert nodes["m2"]["ManagerStatus"]["Addr"] == f"{swarm.nodes['m2'].ip}:2377"

    c = swarm.clients["m1"]
    assert {n.attrs["Description"]["Hostname"] for n in c.nodes.list(filters={"role": "manager"})} == {"m1", "m2"}
    assert [n.attrs["Description"]["Hostname"] for n in c.nodes.list(filters={"name": "w"})] == ["w1"]
    w1_id = nodes["w1"]["ID"]
    assert c.nodes.get(w1_id[:6]).id == w1_id
    assert c.nodes.get("w1").id == w1_id  # by hostname
    assert c.nodes.list(filters={"id": w1_id[:8]})[0].id == w1_id

    for query, message in (
        ({"bogus": {"x": True}}, "invalid filter 'bogus'"),
        ({"role": {"boss": True}}, "Invalid role filter: 'boss'"),
    ):
        r = api(m1, "GET", "/nodes?filters=" + urllib.parse.quote(json.dumps(query)))
        assert (r.status, r.json()["message"]) == (400, message)
    r = api(m1, "GET", "/nodes/nope")
    assert (r.status, r.json()) == (404, {"message": "node nope not found"})


def test_follower_forwards_to_leader(swarm: Swarm) -> None:
    c2 = swarm.clients["m2"]
    assert not swarm.nodes["m2"].swarm.manager.is_leader  # type: ignore[union-attr]
    assert len(c2.nodes.list()) == 3
    update_spec(c2, "w1", Labels={"ROOM": "N1"})  # a write through the follower
    assert swarm.clients["m1"].nodes.get("w1").attrs["Spec"]["Labels"] == {"ROOM": "N1"}
    c2.swarm.reload()
    assert c2.swarm.attrs["JoinTokens"]["Worker"].startswith("SWMTKN-1-")


def test_worker_refuses_cluster_state(swarm: Swarm) -> None:
    w = swarm.nodes["w1"]
    for method, path in (("GET", "/nodes"), ("GET", "/swarm"), ("GET", "/secrets"), ("POST", "/secrets/create")):
        r = api(w, method, path, {} if method == "POST" else None)
        assert (r.status, r.json()) == (503, {"message": WORKER_MSG}), path
    r = api(w, "POST", "/networks/create", {"Name": "x", "Driver": "overlay"})
    assert r.status == 403 and r.json()["message"].startswith("Cannot create a multi-host network from a worker")
    names = sorted(n["Name"] for n in api(w, "GET", "/networks").json())
    assert names == ["bridge", "docker_gwbridge", "host", "none"]


def test_node_update(swarm: Swarm) -> None:
    c = swarm.clients["m1"]
    version = c.nodes.get("w1").version
    update_spec(c, "w1", Availability="drain")
    node = c.nodes.get("w1")
    spec = node.attrs["Spec"]
    assert node.attrs["Spec"]["Availability"] == "drain" and node.version > version

    stale = api_error(lambda: c.api.update_node(node.id, version, dict(spec, Availability="active")))
    assert (stale.status_code, stale.explanation) == (500, "rpc error: code = Unknown desc = update out of sequence")

    m1 = swarm.nodes["m1"]
    path = f"/nodes/{node.id}/update"
    for query, body, message in (
        ("", spec, "invalid node version '': strconv.ParseUint: parsing \"\": invalid syntax"),
        (f"?version={node.version}", dict(spec, Role="boss"), 'invalid Role: "boss"'),
        (f"?version={node.version}", dict(spec, Availability=""), 'invalid Availability: ""'),
        (f"?version={node.version}", dict(spec, Labels=["a"]), "invalid JSON: Labels must be an object, got array"),
    ):
        r = api(m1, "POST", path + query, body)
        assert (r.status, r.json()["message"]) == (400, message)
    r = api(m1, "POST", path + f"?version={node.version}", raw=b"{nope")
    assert r.status == 400 and r.json()["message"].startswith("invalid JSON")
    update_spec(c, "w1", Availability="active")


def test_node_remove_refusals(swarm: Swarm) -> None:
    c = swarm.clients["m1"]
    w1, m2 = c.nodes.get("w1"), c.nodes.get("m2")
    err = api_error(lambda: c.api.remove_node(w1.id))
    assert err.status_code == 400
    assert err.explanation == f"rpc error: code = FailedPrecondition desc = node {w1.id} is not down and can't be removed"
    err = api_error(lambda: c.api.remove_node(m2.id, force=True))
    assert err.status_code == 400 and "must be demoted to worker before removal" in err.explanation
    assert api_error(lambda: c.api.remove_node("nope")).status_code == 404


# ----------------------------------------------------------------------------------------- secrets


def test_secrets_lifecycle(swarm: Swarm) -> None:
    c = swarm.clients["m2"]  # through the follower: every call is forwarded
    secret = c.secrets.create(name="db_pass", data=b"hunter2", labels={"app": "db"})
    got = c.secrets.get("db_pass")
    assert got.id == secret.id and got.name == "db_pass"
    assert "Data" not in got.attrs["Spec"]
    apischema.validate(got.attrs, "Secret")
    listed = api(swarm.nodes["m1"], "GET", "/secrets").json()
    apischema.validate(listed, "Secret", array=True)
    assert "hunter2" not in json.dumps(listed) and base64.b64encode(b"hunter2").decode() not in json.dumps(listed)
    assert [s.name for s in c.secrets.list(filters={"name": "db"})] == ["db_pass"]
    assert c.secrets.list(filters={"label": "app=web"}) == []
    assert [s.id for s in c.secrets.list(filters={"id": secret.id[:5]})] == [secret.id]

    dup = api_error(lambda: c.secrets.create(name="db_pass", data=b"x"))
    assert (dup.status_code, dup.explanation) == (409, "rpc error: code = AlreadyExists desc = secret db_pass already exists")
    bad = api_error(lambda: c.secrets.create(name="bad name", data=b"x"))
    assert bad.status_code == 400 and "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed" in bad.explanation
    empty = api_error(lambda: c.secrets.create(name="empty", data=b""))
    assert empty.status_code == 400 and "secret data must be larger than 0" in empty.explanation

    m1 = swarm.nodes["m1"]
    for body, message in (
        ({"Name": "s", "Data": "***"}, "invalid JSON: Data must be base64-encoded bytes"),
        ({"Name": "s", "Data": 5}, "invalid JSON: Data must be a string, got integer"),
        ({"Name": "s", "Labels": {"a": 1}, "Data": "eA=="}, "invalid JSON: Labels.a must be a string, got integer"),
    ):
        r = api(m1, "POST", "/secrets/create", body)
        assert (r.status, r.json()["message"]) == (400, message)
    r = api(m1, "POST", "/secrets/create", raw=b"[1]")
    assert r.status == 400

    # labels may change, the data may not
    spec = dict(got.attrs["Spec"], Labels={"app": "db", "tier": "2"})
    r = api(swarm.nodes["m2"], "POST", f"/secrets/{secret.id}/update?version={got.attrs['Version']['Index']}", spec)
    assert r.status == 200, r.body
    got.reload()
    assert got.attrs["Spec"]["Labels"] == {"app": "db", "tier": "2"}
    r = api(m1, "POST", f"/secrets/{secret.id}/update?version={got.attrs['Version']['Index']}",
            dict(spec, Data=base64.b64encode(b"other").decode()))
    assert (r.status, r.json()["message"]) == (400, "rpc error: code = InvalidArgument desc = only updates to Labels are allowed")

    # in use by a service -> refused
    manager = m1.swarm.manager
    assert manager is not None

    async def add_service() -> None:
        ref = SecretReference(secret_id=secret.id, secret_name="db_pass", file_name="db_pass")
        svc = Service(spec=ServiceSpec(name="db", task_template=TaskSpec(container=ContainerSpec(image="redis", secrets=[ref])),
                                       replicas=0))
        with manager.store.batch() as tx:
            tx.create(svc)
        assert tx.changeset is not None
        assert (await manager.commit(tx.changeset)).ok

    m1.run(add_service())
    err = api_error(lambda: c.api.remove_secret(secret.id))
    assert (err.status_code, err.explanation) == (
        400, "rpc error: code = InvalidArgument desc = secret 'db_pass' is in use by the following service: db")

    async def drop_service() -> None:
        svc = manager.store.find(Service, "db")
        with manager.store.batch() as tx:
            tx.delete(Service, svc.id)
        assert tx.changeset is not None
        await manager.commit(tx.changeset)

    m1.run(drop_service())
    got.remove()
    assert api_error(lambda: c.secrets.get("db_pass")).status_code == 404
    r = api(m1, "GET", "/secrets/db_pass")
    assert (r.status, r.json()) == (404, {"message": "secret db_pass not found"})


# ---------------------------------------------------------------------------------------- networks


def test_networks(swarm: Swarm) -> None:
    c = swarm.clients["m1"]
    m1 = swarm.nodes["m1"]
    listed = api(m1, "GET", "/networks").json()
    apischema.validate(listed, "Network", array=True)
    by_name = {n["Name"]: n for n in listed}
    assert set(by_name) == {"bridge", "host", "none", "docker_gwbridge", "ingress"}
    assert by_name["ingress"]["Scope"] == "swarm" and by_name["ingress"]["Ingress"] is True
    assert by_name["ingress"]["Driver"] == "overlay"
    assert by_name["bridge"]["Scope"] == "local"

    net = c.networks.create("appnet", driver="overlay", attachable=True, labels={"app": "x"},
                            ipam=IPAMConfig(pool_configs=[IPAMPool(subnet="10.77.0.0/24")]))
    got = c.networks.get(net.id)
    apischema.validate(got.attrs, "Network")
    assert got.attrs["Attachable"] is True and got.attrs["IPAM"]["Config"][0]["Subnet"] == "10.77.0.0/24"
    assert swarm.clients["m2"].networks.get("appnet").id == net.id  # the follower's replica has it
    assert [n.name for n in c.networks.list(filters={"driver": "overlay", "label": "app=x"})] == ["appnet"]

    dup = api_error(lambda: swarm.clients["m2"].networks.create("appnet", driver="overlay"))
    assert (dup.status_code, dup.explanation) == (409, "network with name appnet already exists")
    bridge = api_error(lambda: c.networks.create("local1"))
    assert bridge.status_code == 400 and 'network driver "bridge" is not supported' in bridge.explanation
    plugin = api_error(lambda: c.networks.create("n", driver="weave"))
    assert (plugin.status_code, plugin.explanation) == (404, 'plugin "weave" not found')
    r = api(m1, "POST", "/networks/create", {"Name": "n2", "Driver": "overlay", "IPAM": {"Config": [{"Subnet": "10.1.0.0/24", "Gateway": "10.2.0.1"}]}})
    assert (r.status, r.json()["message"]) == (
        400, "rpc error: code = InvalidArgument desc = ipam configuration: subnet 10.1.0.0/24 does not contain gateway 10.2.0.1")
    r = api(m1, "POST", "/networks/create", {"Name": "host", "Driver": "overlay"})
    assert (r.status, r.json()["message"]) == (403, "host is a pre-defined network and cannot be created")
    r = api(m1, "POST", "/networks/create", {"Name": 7, "Driver": "overlay"})
    assert r.status == 400

    for name in ("bridge", "none"):
        r = api(m1, "DELETE", f"/networks/{name}")
        assert (r.status, r.json()["message"]) == (403, f"{name} is a pre-defined network and cannot be removed")
    assert api(m1, "GET", "/networks/nope").status == 404
    swarm.clients["m2"].networks.get("appnet").remove()  # forwarded delete
    assert api(m1, "GET", "/networks/appnet").json() == {"message": "network appnet not found"}


# -------------------------------------------------------------------------------------- swarm update


def test_swarm_update_and_token_rotation(swarm: Swarm) -> None:
    c = swarm.clients["m1"]
    c.swarm.reload()
    before = c.swarm.attrs["JoinTokens"]
    c.swarm.update(rotate_worker_token=True)
    c.swarm.reload()
    after = c.swarm.attrs["JoinTokens"]
    assert after["Worker"] != before["Worker"] and after["Manager"] == before["Manager"]

    stale = api_error(lambda: c.api.update_swarm(version=1, swarm_spec={}))
    assert (stale.status_code, stale.explanation) == (500, "rpc error: code = Unknown desc = update out of sequence")
    m1 = swarm.nodes["m1"]
    version = c.swarm.version
    r = api(m1, "POST", f"/swarm/update?version={version}", {"Name": "other"})
    assert (r.status, r.json()["message"]) == (400, 'swarm spec must be named "default"')
    r = api(m1, "POST", f"/swarm/update?version={version}", {"Dispatcher": {"HeartbeatPeriod": "5s"}})
    assert r.status == 400 and "Spec.Dispatcher.HeartbeatPeriod must be an integer" in r.json()["message"]
    r = api(m1, "POST", "/swarm/update?version=x", {})
    assert r.status == 400 and r.json()["message"].startswith("invalid swarm version 'x'")
    r = api(m1, "POST", f"/swarm/update?version={version}", {"Labels": {"course": "swarm101"}})
    assert r.status == 200
    c.swarm.reload()
    assert c.swarm.attrs["Spec"]["Labels"] == {"course": "swarm101"}
    assert api(m1, "GET", "/swarm/unlockkey").json() == {"UnlockKey": ""}


# --------------------------------------------------------------------------------- demote and leave


def test_demote_rules_and_leave() -> None:
    with built_swarm("la-sw2-") as swarm:
        _demote_and_leave(swarm)


def _demote_and_leave(swarm: Swarm) -> None:
    c = swarm.clients["m1"]
    update_spec(c, "m2", Role="worker")  # recorded; the role manager carries it out
    err = api_error(lambda: update_spec(c, "m1", Role="worker"))
    assert (err.status_code, err.explanation) == (
        400, "rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm")

    # the worker leaves; afterwards it is in no swarm at all
    w = swarm.clients["w1"]
    w.swarm.leave()
    r = api(swarm.nodes["w1"], "GET", "/nodes")
    assert (r.status, r.json()["message"]) == (503, NO_SWARM_MSG)
    assert w.info()["Swarm"]["LocalNodeState"] == "inactive"

    # the last manager must force
    def m2_is_worker() -> bool:
        return swarm.clients["m2"].info()["Swarm"]["ControlAvailable"] is False

    wait_for(m2_is_worker, timeout=30, what="m2 demoted")
    err = api_error(lambda: c.swarm.leave())
    assert err.status_code == 503 and err.explanation.startswith(
        "You are attempting to leave the swarm on a node that is participating as a manager. "
        "Removing the last manager erases all current state of the swarm.")
    assert c.swarm.leave(force=True) is True
    assert c.info()["Swarm"]["LocalNodeState"] == "inactive"


# ----------------------------------------------------------------------------------------- addresses


def test_advertise_address_resolution() -> None:
    assert netaddr.advertise_ip("lo", "", None) == "127.0.0.1"  # an interface name
    assert netaddr.advertise_ip("10.1.2.3:4567", "", None) == "10.1.2.3"
    assert netaddr.advertise_ip("", "0.0.0.0:2377", "10.9.9.9") == "10.9.9.9"  # the agent's --addr
    assert netaddr.advertise_ip("", "10.4.4.4:2377", "10.9.9.9") == "10.4.4.4"
    for bad in ("0.0.0.0", "no-such-if0", "300.1.1.1"):
        with pytest.raises(netaddr.AddrError, match="advertise address must be a non-zero IP"):
            netaddr.advertise_ip(bad, "", None)
    assert netaddr.split_host_port("[fe80::1]:2377") == ("fe80::1", "2377")
