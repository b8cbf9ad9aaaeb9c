"""Compression bombs over loopback: the size cap counts decoded bytes, memory stays flat."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from hostile_http import RawServer, Request, deflate_bomb, gzip_bomb, http_reply, xml

CHILD = Path(__file__).with_name("bomb_child.py")
#: Peak RSS growth allowed while refusing the bombs (the cap is 1 MiB per reply).
RSS_BOUND_KIB = 50 * 1024
OK_STATUS = xml(status="ok", invoice_status="new", order_id="o-1")


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """A gzip and a zlib-deflate body, each inflating to 512 MiB of zeros."""
    return {"gzip": gzip_bomb(), "deflate": deflate_bomb()}


async def _run_child(encoding: str, bomb: bytes, concurrency: int) -> tuple[dict[str, object], int]:
    """Serve *bomb* to every status read but the warm-up; return the child's report and hits."""

    async def handler(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.field("customer") == "warm":
            writer.write(http_reply(body=OK_STATUS))
        else:
            writer.write(http_reply(body=bomb, headers=(("Content-Encoding", encoding),)))
        await writer.drain()
        return True

    async with RawServer(handler) as server:
        env = {**os.environ, "PYTHONPATH": str(CHILD.parent.parent)}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            server.base_url,
            str(concurrency),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, stderr.decode()
        hits = len(server.requests) - 1
    return json.loads(stdout), hits


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("concurrency", [1, 4])
async def test_bomb_is_refused_with_flat_memory(
    bombs: dict[str, bytes], encoding: str, concurrency: int
) -> None:
    """A 512 MiB bomb (1 or 4 at once) ends in DecodeError and grows peak RSS by < 50 MiB."""
    report, hits = await _run_child(encoding, bombs[encoding], concurrency)
    assert report["errors"] == ["DecodeError"] * concurrency, report
    assert all("larger than" in message for message in report["messages"]), report  # type: ignore[union-attr]
    growth = int(report["after_kib"]) - int(report["before_kib"])  # type: ignore[call-overload]
    assert growth < RSS_BOUND_KIB, f"peak RSS grew {growth} KiB: {report}"
    assert hits >= concurrency  # every call really read a bomb (resends may add more)
