"""The official `mcp` Python SDK as an MCP client.

Run by tests/mcp_mock.rs against the deterministic tickets mock (src/dev/mocks/mcp.rs), in
both eras the SDK speaks: stateless 2026-07-28 (mode "auto", through `server/discover`) and
the initialize handshake (mode "legacy", 2025-11-25). Usage: mcp_agent.py MCP_URL
Prints one line per scenario and a closing "N passed, M failed" line; exits 1 on any failure.
"""

import asyncio
import json
import sys

from mcp_harness import names, run_all

URL = sys.argv[1]


async def negotiates(client, mode):
    want = "2026-07-28" if mode == "auto" else "2025-11-25"
    assert client.protocol_version == want, client.protocol_version


async def lists_every_page(client, mode):
    got = await names(client)
    assert got == ["search_tickets", "get_ticket", "delete_ticket"], got


async def calls_a_tool(client, mode):
    await names(client)
    r = await client.call_tool("get_ticket", {"id": 7})
    assert not r.is_error, r
    text = r.content[0].text
    assert "jane.doe@example.com" in text, text
    assert r.structured_content["id"] == 7, r.structured_content
    r = await client.call_tool("search_tickets", {"query": "refund"})
    assert [t["id"] for t in json.loads(r.content[0].text)] == [7], r


async def a_tool_error_is_a_result(client, mode):
    await names(client)
    r = await client.call_tool("get_ticket", {"id": 999})
    assert r.is_error, r


async def an_sse_answer_reads_like_json(client, mode):
    await names(client)
    r = await client.call_tool("search_tickets", {"query": "invoice [[sse]]"})
    assert not r.is_error, r
    assert [t["id"] for t in json.loads(r.content[0].text)] == [2], r


asyncio.run(run_all(URL, [negotiates, lists_every_page, calls_a_tool, a_tool_error_is_a_result,
                   an_sse_answer_reads_like_json]))
