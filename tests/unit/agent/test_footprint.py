"""The agent's memory settings take effect (glibc here) and asyncio honours the smaller TLS buffer."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_arena_cap_and_tls_buffer_in_a_fresh_process() -> None:
    code = textwrap.dedent("""
        import asyncio.sslproto, ssl
        from agents import footprint
        assert footprint.limit_malloc_arenas(), "glibc's mallopt refused the arena cap"
        footprint.shrink_tls_read_buffer(32 * 1024)
        ctx = ssl.create_default_context()
        proto = asyncio.sslproto.SSLProtocol(asyncio.new_event_loop(), asyncio.Protocol(), ctx, None)
        assert len(proto._ssl_buffer) == 32 * 1024, len(proto._ssl_buffer)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

