"""The official `mcp` Python SDK as an MCP client.

Run by tests/mcp_mock.rs against the deterministic tickets mock (src/dev/mocks/mcp.rs), in
both eras the SDK speaks: stateless 2026-07-28 (mode "auto", through `server/discover`) and
the initialize handshake (mode "legacy", 2025-11-25). Usage: mcp_agent.py MCP_URL
Prints one line per scenario and a closing "N passed, M failed" line; exits 1 on any failure.
"""

import asyncio
import json
import sys
import traceback

from mcp import Client

URL = sys.argv[1]
RESULTS = []


async def scenario(fn, mode):
    name = f"{fn.__name__}[{mode}]"
    try:
        async with Client(URL, mode=mode, raise_exceptions=True) as client:
            await fn(client, mode)
        RESULTS.append((name, None))
        print("PASS", name, flush=True)
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        RESULTS.append((name, e))
        print("FAIL", name, repr(e), flush=True)
        traceback.print_exc()


async def all_tools(client):
    names, cursor = [], None
    for _ in range(10):
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        names += [t.name for t in page.tools]
        cursor = page.next_cursor
        if cursor is None:
            return names
    raise AssertionError("tools/list never ended")


async def negotiates(client, mode):
    want = "2026-07-28" if mode == "auto" else "2025-11-25"
    assert client.protocol_version == want, client.protocol_version


async def lists_every_page(client, mode):
    names = await all_tools(client)
    assert names == ["search_tickets", "get_ticket", "delete_ticket"], names


async def calls_a_tool(client, mode):
    await all_tools(client)
    r = await client.call_tool("get_ticket", {"id": 7})
    assert not r.is_error, r
    text = r.content[0].text
    assert "jane.doe@example.com" in text, text
    assert r.structured_content["id"] == 7, r.structured_content
    r = await client.call_tool("search_tickets", {"query": "refund"})
    assert [t["id"] for t in json.loads(r.content[0].text)] == [7], r


async def a_tool_error_is_a_result(client, mode):
    await all_tools(client)
    r = await client.call_tool("get_ticket", {"id": 999})
    assert r.is_error, r


async def an_sse_answer_reads_like_json(client, mode):
    await all_tools(client)
    r = await client.call_tool("search_tickets", {"query": "invoice [[sse]]"})
    assert not r.is_error, r
    assert [t["id"] for t in json.loads(r.content[0].text)] == [2], r


async def main():
    for mode in ["auto", "legacy"]:
        for fn in [negotiates, lists_every_page, calls_a_tool, a_tool_error_is_a_result,
                   an_sse_answer_reads_like_json]:
            await scenario(fn, mode)
    failed = sum(1 for _, e in RESULTS if e is not None)
    print(f"{len(RESULTS) - failed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


asyncio.run(main())
