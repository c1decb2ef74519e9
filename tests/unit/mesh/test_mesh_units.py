"""Rule generation (golden), table deltas, the DNS responder and the userspace proxy."""

from __future__ import annotations

import asyncio
import re
import socket
import struct

import pytest

from agents.mesh import libnft, overlay, rules
from agents.mesh.commands import Runner
from agents.mesh.dns import answer_query
from agents.mesh.proxy import PortProxy
from agents.mesh.table import MeshNetwork, MeshPort, MeshService, MeshTable, MeshTask


def table() -> MeshTable:
    t = MeshTable()
    t.networks = {"ing": MeshNetwork("ing", "ingress", 4096, "10.0.0.0/24", True),
                  "usr": MeshNetwork("usr", "front", 4097, "10.0.1.0/24")}
    t.services["s1"] = MeshService(
        "s1", "web", {"ing": "10.0.0.2", "usr": "10.0.1.2"}, (MeshPort("tcp", 80, 8080),), ("usr",),
        (MeshTask("a", "n1", {"ing": "10.0.0.3", "usr": "10.0.1.3"}, True),
         MeshTask("b", "n2", {"ing": "10.0.0.4", "usr": "10.0.1.4"}, True),
         MeshTask("c", "n2", {"ing": "10.0.0.5", "usr": "10.0.1.5"}, False)))
    return t


def test_service_rules_golden() -> None:
    r = rules.service_rules(table().services["s1"], table())
    assert r.chains == {
        "svc-s1-ing-tcp-80": ["meta mark set meta mark | 0x10000000 meta l4proto tcp dnat ip to numgen inc mod 2 "
                              "map { 0 : 10.0.0.3, 1 : 10.0.0.4 } : 80"],
        "svc-s1-ing-all": ["meta mark set meta mark | 0x10000000 dnat ip to numgen inc mod 2 "
                           "map { 0 : 10.0.0.3, 1 : 10.0.0.4 }"],
        "svc-s1-usr-all": ["meta mark set meta mark | 0x10000000 dnat ip to numgen inc mod 2 "
                           "map { 0 : 10.0.1.3, 1 : 10.0.1.4 }"],
    }
    assert r.ingress == {("tcp", 8080): "svc-s1-ing-tcp-80"}
    assert r.vips == {"10.0.0.2": "svc-s1-ing-all", "10.0.1.2": "svc-s1-usr-all"}


def test_diff_replaces_only_the_changed_chain_and_removal_cleans_up() -> None:
    t = table()
    old = rules.service_rules(t.services["s1"], t)
    s = t.services["s1"]
    t.services["s1"] = MeshService(s.id, s.name, s.vips, s.ports, s.networks, s.tasks[:1])
    new = rules.service_rules(t.services["s1"], t)
    cmds = rules.service_diff(old, new)
    assert cmds[0] == "flush chain ip labctl-mesh svc-s1-ing-tcp-80"
    assert not any("element" in c for c in cmds)
    gone = rules.service_diff(new, None)
    assert "delete element ip labctl-mesh ingress { tcp . 8080 }" in gone
    assert gone[-1] == "delete chain ip labctl-mesh svc-s1-usr-all"
    assert all(c.startswith(("flush", "delete")) for c in gone)


def test_no_backend_only_marks() -> None:
    t = table()
    s = t.services["s1"]
    t.services["s1"] = MeshService(s.id, s.name, s.vips, s.ports, s.networks, ())
    r = rules.service_rules(t.services["s1"], t)
    assert r.chains["svc-s1-ing-tcp-80"] == ["meta mark set meta mark | 0x10000000"]


def test_table_delta_round_trip() -> None:
    a, b = MeshTable(), table()
    msg = a.delta_message(b)
    assert msg is not None
    c = MeshTable()
    assert c.apply(msg) == {"s1"}
    assert c.services == b.services and c.networks == b.networks
    assert b.delta_message(c) is None
    d = MeshTable(networks=b.networks)
    msg2 = b.delta_message(d)
    assert msg2 is not None and msg2["removed"] == ["s1"]
    assert c.apply(msg2) == {"s1"} and not c.services


def query(name: str) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!6H", 0x1234, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def test_dns_vip_tasks_and_nxdomain() -> None:
    t = table()
    ans = answer_query(t, query("web"), "10.0.1.3", "usr")
    assert ans is not None and ans[-4:] == socket.inet_aton("10.0.1.2") and ans[3] & 0x0F == 0
    ans = answer_query(t, query("tasks.web"), "10.0.1.3", "usr")
    assert ans is not None and struct.unpack("!H", ans[6:8])[0] == 2
    ans = answer_query(t, query("nope"), "10.0.1.3", "usr")
    assert ans is not None and ans[3] & 0x0F == 3


def test_proxy_round_robin_and_skips_dead_backends() -> None:
    async def main() -> None:
        async def serve(tag: bytes) -> tuple[asyncio.Server, int]:
            async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                w.write(tag)
                await w.drain()
                w.close()
            srv = await asyncio.start_server(h, "127.0.0.1", 0)
            return srv, srv.sockets[0].getsockname()[1]

        s1, p1 = await serve(b"one")
        s2, p2 = await serve(b"two")
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        p3 = dead.getsockname()[1]
        dead.close()
        backends = [("127.0.0.1", p1), ("127.0.0.1", p3), ("127.0.0.1", p2)]
        proxy = PortProxy(0, lambda: backends, "127.0.0.1")
        await proxy.start()
        assert proxy._server is not None
        port = proxy._server.sockets[0].getsockname()[1]
        got = []
        for _ in range(4):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            got.append(await r.read())
            w.close()
        assert sorted(got) == [b"one", b"one", b"two", b"two"]
        await proxy.stop()
        s1.close()
        s2.close()

    asyncio.run(main())


class _FakeRunner(Runner):
    """Records sysctl writes; reads answer from ``values``."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(use_lib=False)
        self.values = values
        self.written: dict[str, str] = {}

    async def sysctl(self, key: str, value: str) -> None:
        self.written[key] = value

    async def read_sysctl(self, key: str) -> str:
        return self.values.get(key, "")


def test_prepare_node_keeps_bridged_ipv4_out_of_the_ip_hooks() -> None:
    on = _FakeRunner({"net.bridge.bridge-nf-call-iptables": "1", "net.ipv4.conf.all.rp_filter": "1"})
    asyncio.run(overlay.prepare_node(on))
    assert on.written["net.bridge.bridge-nf-call-iptables"] == "0"
    assert on.written["net.ipv4.conf.all.rp_filter"] == "2" and on.written["net.ipv4.ip_forward"] == "1"


def test_prepare_node_loosens_strict_reverse_path_checks_and_routes_localnet() -> None:
    """RHEL-like hosts check reverse paths strictly on every device (the larger of ``all`` and the
    device's value counts): replies of remote tasks arrive over the lab device and would be dropped.
    ``route_localnet`` lets 127.0.0.1 reach published ports (DNATed off the loopback device)."""
    strict = _FakeRunner({"net.ipv4.conf.all.rp_filter": "1", "net.ipv4.conf.default.rp_filter": "1",
                          "net.ipv4.conf.eth1.rp_filter": "1", "net.ipv4.conf.eth0.rp_filter": "1"})
    asyncio.run(overlay.prepare_node(strict, "eth1"))
    assert {k: v for k, v in strict.written.items() if "rp_filter" in k} == {
        "net.ipv4.conf.all.rp_filter": "2", "net.ipv4.conf.default.rp_filter": "2",
        "net.ipv4.conf.eth1.rp_filter": "2"}
    assert strict.written["net.ipv4.conf.all.route_localnet"] == "1"
    off = _FakeRunner({"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.eth1.rp_filter": "0"})
    asyncio.run(overlay.prepare_node(off, "eth1"))
    assert not any("rp_filter" in k for k in off.written)  # no check stays no check


def test_loopback_is_closed_to_the_network() -> None:
    script = rules.base_script("192.168.56.11")
    guard = 'add rule ip labctl-mesh input iifname != "lo" ip daddr 127.0.0.0/8 ct status & snat == 0 drop'
    assert guard in script
    assert script.index(guard) < next(i for i, c in enumerate(script) if "reject" in c)
    absent = _FakeRunner({})  # no br_netfilter in this kernel: nothing to turn off
    asyncio.run(overlay.prepare_node(absent))
    assert "net.bridge.bridge-nf-call-iptables" not in absent.written


def test_bridges_get_a_fixed_node_unique_mac_before_they_come_up() -> None:
    t = table()
    new = overlay.desired(t, "n1", "192.168.56.11", "vxlan")
    ip, _ = overlay.diff(overlay.OverlayState(), new, "192.168.56.11", "eth0")
    br = rules.bridge_name("ing")
    mac = overlay.bridge_mac("192.168.56.11", br)
    assert re.fullmatch(r"02(:[0-9a-f]{2}){5}", mac)
    assert ip.index(f"link set {br} address {mac}") < ip.index(f"link set {br} up")
    assert mac == overlay.bridge_mac("192.168.56.11", br) != overlay.bridge_mac("192.168.56.12", br)
    again, _ = overlay.diff(new, new, "192.168.56.11", "eth0")
    assert not any("address" in c for c in again)  # an unchanged bridge is left alone


def test_node_arp_over_vxlan_is_a_probe() -> None:
    script = rules.base_script("192.168.56.11")
    assert ('add rule bridge labctl-mesh output oifname "vxm*" arp operation request arp saddr ip @anycast '
            "arp saddr ip set 0.0.0.0") in script


def test_libnftables_reports_nft_errors() -> None:
    lib = libnft.shared()
    if lib is None:
        pytest.skip("libnftables is not installed")
    with pytest.raises(libnft.NftError, match="syntax error"):
        lib.run("this is not nft\n")


def test_runner_without_the_library_uses_the_binary() -> None:
    calls: list[tuple[list[str], str]] = []

    class Recording(Runner):
        async def run(self, argv: list[str], stdin: str = "", *, check: bool = True) -> str:
            calls.append((argv, stdin))
            return ""

    asyncio.run(Recording(use_lib=False).nft(["add table ip x", "delete table ip x"]))
    assert calls == [(["nft", "-f", "-"], "add table ip x\ndelete table ip x\n")]
    assert Recording(use_lib=False).nft_backend == "nft"
    assert Runner("/run/netns/other").use_lib is False  # another namespace: never in-process


def test_a_vip_passing_between_services_leaves_before_it_is_added() -> None:
    t = table()
    a = t.services["s1"]
    b = MeshService("s2", "other", dict(a.vips), (MeshPort("tcp", 80, 8080),), ("usr",), a.tasks[:1])
    ra, rb = rules.service_rules(a, t), rules.service_rules(b, t)
    cmds = rules.services_diff([(None, rb), (ra, None)])  # s2 takes over what s1 held, one transaction
    for key in ("vips { 10.0.1.2", "ingress { tcp . 8080"):
        delete = next(i for i, c in enumerate(cmds) if c.startswith("delete element") and key in c)
        add = next(i for i, c in enumerate(cmds) if c.startswith("add element") and key in c)
        assert delete < add, cmds
    assert cmds.index(f"delete chain ip labctl-mesh {next(iter(ra.chains))}") > max(
        i for i, c in enumerate(cmds) if c.startswith("add element"))
