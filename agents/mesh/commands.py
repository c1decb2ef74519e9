"""Running ``nft``, ``ip`` and ``bridge`` in the node's network namespace (the agent's own, or one given
as a path for tests), each as one batch: nft batches are single kernel transactions. nft goes through
libnftables in-process where it can (`agents.mesh.libnft`: no process, cached ruleset), else the binary."""

from __future__ import annotations

import asyncio
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

from agents.mesh import libnft

_NFT_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mesh-nft")
"""libnftables calls block (netlink): one thread of their own, never queued behind other work."""


class CommandError(Exception):
    """A batch failed; the message is the tool's."""


class Runner:
    """``netns``: a namespace path (``/run/netns/x`` or ``/proc/PID/ns/net``); None = this process's."""

    def __init__(self, netns: str | None = None, *, use_lib: bool = True) -> None:
        self.netns = netns
        self.use_lib = use_lib and netns is None
        """libnftables only in this process's own namespace (its netlink socket lives there)."""

    def _argv(self, argv: list[str]) -> list[str]:
        if self.netns is None:
            return argv
        return ["nsenter", f"--net={self.netns}", "--", *argv]

    async def run(self, argv: list[str], stdin: str = "", *, check: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self._argv(argv),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin.encode())
        if proc.returncode != 0 and check:
            raise CommandError(err.decode(errors="replace").strip() or f"{argv[0]} exited {proc.returncode}")
        return out.decode(errors="replace")

    @property
    def nft_backend(self) -> str:
        """``libnftables`` or ``nft`` (the binary): how `nft` reaches the kernel."""
        return "libnftables" if self.use_lib and libnft.shared() is not None else "nft"

    async def nft(self, commands: list[str]) -> None:
        """One atomic transaction (``nft -f -`` syntax and semantics)."""
        if not commands:
            return
        script = "\n".join(commands) + "\n"
        lib = libnft.shared() if self.use_lib else None
        if lib is None:
            await self.run(["nft", "-f", "-"], script)
            return
        try:
            await asyncio.get_running_loop().run_in_executor(_NFT_THREAD, lib.run, script)
        except libnft.NftError as e:
            raise CommandError(str(e)) from None

    async def ip(self, commands: list[str], *, force: bool = True) -> None:
        """``ip -batch``; with ``force`` a failing line ("File exists") does not stop the rest."""
        if commands:
            await self.run(["ip", *(["-force"] if force else []), "-batch", "-"], "\n".join(commands) + "\n",
                           check=not force)

    async def bridge(self, commands: list[str]) -> None:
        if commands:
            await self.run(["bridge", "-force", "-batch", "-"], "\n".join(commands) + "\n", check=False)

    async def sysctl(self, key: str, value: str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")
        if self.netns is None:
            try:
                with open(path, "w") as fh:
                    fh.write(value)
            except OSError:
                pass
            return
        await self.run(["sh", "-c", f"echo {value} > {path}"], check=False)

    async def read_sysctl(self, key: str) -> str:
        path = "/proc/sys/" + key.replace(".", "/")
        if self.netns is None:
            try:
                with open(path) as fh:
                    return fh.read().strip()
            except OSError:
                return ""
        return (await self.run(["cat", path], check=False)).strip()


async def nft_usable(runner: Runner) -> tuple[bool, str]:
    """Can this node program nftables NAT (binary present, privileges, nat/numgen/fib support)?"""
    if shutil.which("nft") is None and not (runner.use_lib and libnft.shared() is not None):
        return False, "nft not found"
    if os.geteuid() != 0:
        return False, "not root"
    probe = "labctl-mesh-probe"
    try:
        await runner.nft([
            f"add table ip {probe}",
            f"add chain ip {probe} p {{ type nat hook prerouting priority -100; policy accept; }}",
            f"add rule ip {probe} p fib daddr type local tcp dport 1 meta mark set 1 "
            "dnat ip to numgen inc mod 1 map { 0 : 127.0.0.1 }",
            f"delete table ip {probe}",
        ])
    except (CommandError, OSError) as e:
        return False, str(e)
    return True, ""


async def vxlan_usable(runner: Runner) -> bool:
    """Can a VXLAN device be created here (module built in or loadable)?"""
    name = "vxmprobe0"
    try:
        await runner.ip([f"link add {name} type vxlan id 16777214 dstport 4789"], force=False)
    except (CommandError, OSError):
        return False
    await runner.ip([f"link del {name}"])
    return True
