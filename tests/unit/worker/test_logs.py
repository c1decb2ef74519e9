"""The json-file log writer and reader."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from agents.worker.executor.base import LogQuery
from agents.worker.executor.logs import MAX_LINE, JsonFileWriter, log_files, read_entries, read_logs


def test_lines_are_docker_json_file_entries(tmp_path: Path) -> None:
    p = str(tmp_path / "c-json.log")
    w = JsonFileWriter(p)
    w.write("stdout", b"hel")
    w.write("stderr", b"err\n")
    w.write("stdout", b"lo\nwor")
    w.write("stdout", "ld \u00e9\xff".encode("latin-1"))
    w.close()
    raw = [json.loads(line) for line in Path(p).read_text().splitlines()]
    assert [(r["stream"], r["log"]) for r in raw] == [("stderr", "err\n"), ("stdout", "hello\n"),
                                                      ("stdout", "world \ufffd\ufffd")]
    assert raw[0]["time"].endswith("Z") and len(raw[0]["time"]) == 30
    assert [e.data for e in read_entries(p)] == [b"err\n", b"hello\n", "world \ufffd\ufffd".encode()]


def test_long_lines_are_split_like_docker(tmp_path: Path) -> None:
    p = str(tmp_path / "l.log")
    w = JsonFileWriter(p)
    w.write("stdout", b"a" * (MAX_LINE + 10) + b"\n")
    w.close()
    assert [len(e.data) for e in read_entries(p)] == [MAX_LINE, 11]


def test_rotation_bounds_disk_use(tmp_path: Path) -> None:
    p = str(tmp_path / "r.log")
    w = JsonFileWriter(p, max_size=2048, max_files=3)
    for i in range(1000):
        w.write("stdout", f"line {i}\n".encode())
    w.close()
    files = log_files(p)
    assert len(files) == 3 and all(os.path.getsize(f) <= 2048 for f in files)
    data = [e.data for e in read_entries(p)]
    assert data[-1] == b"line 999\n" and data == sorted(data, key=lambda d: int(d.split()[1]))


def test_tail_streams_and_follow(tmp_path: Path) -> None:
    p = str(tmp_path / "f.log")
    w = JsonFileWriter(p)
    for i in range(5):
        w.write("stdout" if i % 2 == 0 else "stderr", f"{i}\n".encode())

    async def body() -> tuple[list[bytes], list[bytes], list[bytes]]:
        tail = [e.data async for e in read_logs(p, LogQuery(tail=2))]
        err = [e.data async for e in read_logs(p, LogQuery(stdout=False))]
        running = [True]

        async def writer() -> None:
            await asyncio.sleep(0.05)
            w.write("stdout", b"late\n")
            await asyncio.sleep(0.15)
            running[0] = False

        wt = asyncio.ensure_future(writer())
        followed = [e.data async for e in read_logs(p, LogQuery(tail=1, follow=True), running=lambda: running[0], poll_s=0.01)]
        await wt
        return tail, err, followed

    tail, err, followed = asyncio.run(body())
    w.close()
    assert tail == [b"3\n", b"4\n"] and err == [b"1\n", b"3\n"] and followed == [b"4\n", b"late\n"]
