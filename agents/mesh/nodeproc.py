"""Run one node's mesh agent on its own, fed ``mesh`` messages as JSON lines on stdin (tests and
benchmarks on namespaces: ``ip netns exec NODE python -m agents.mesh.nodeproc ID LABIP``). Answers each
line with ``{"applied": n, "apply_ms": …}``; ``{"type": "stop"}`` removes everything and exits."""

from __future__ import annotations

import asyncio
import json
import sys

from agents.mesh.agent import MeshAgent


async def main(node_id: str, lab_ip: str, mode: str | None) -> None:
    agent = MeshAgent(node_id, lab_ip, force_mode=mode)
    await agent.start()
    print(json.dumps({"started": agent.info()}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            msg = json.loads(line)
            if msg.get("type") == "stop":
                break
            await agent.on_message(msg)
            print(json.dumps({"applied": agent.applied, "apply_ms": round(agent.last_apply_s * 1000, 2)}), flush=True)
    finally:
        await agent.stop(remove=True)
        print(json.dumps({"stopped": True}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
