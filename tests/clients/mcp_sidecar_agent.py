"""The official `mcp` Python SDK as the agent, against a Warden sidecar's `/mcp`.

Run by tests/sidecar_mcp.rs: the sidecar serves the contract bundle, whose `tickets` connector
points at the tickets mock and whose p400-tickets allows `search_tickets` and `get_ticket` with
a PII detector (`delete_ticket` is allowed by no policy). In both eras the SDK speaks
(2026-07-28 through `server/discover`, and the 2025-11-25 handshake). Usage:
mcp_sidecar_agent.py MCP_URL. Prints one line per scenario and "N passed, M failed".
"""

import asyncio
import json
import sys
import traceback

from mcp import Client
from mcp.shared.exceptions import MCPError

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


async def names(client):
    out, cursor = [], None
    for _ in range(10):
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        out += [t.name for t in page.tools]
        cursor = page.next_cursor
        if cursor is None:
            return out
    raise AssertionError("tools/list never ended")


async def negotiates(client, mode):
    want = "2026-07-28" if mode == "auto" else "2025-11-25"
    assert client.protocol_version == want, client.protocol_version


async def lists_only_allowed_tools(client, mode):
    got = await names(client)
    assert got == ["search_tickets", "get_ticket"], got


async def an_allowed_call_passes(client, mode):
    await names(client)
    r = await client.call_tool("search_tickets", {"query": "refund"})
    assert not r.is_error, r
    assert [t["id"] for t in json.loads(r.content[0].text)] == [7], r


async def pii_in_a_result_is_refused(client, mode):
    await names(client)
    try:
        r = await client.call_tool("get_ticket", {"id": 7})
    except MCPError as e:
        assert e.error.code == -32003, e.error
        assert e.error.data["code"] == "pii_detected", e.error
        assert e.error.data["decision_id"], e.error
        return
    raise AssertionError(f"ticket 7 passed: {r}")


async def a_clean_result_passes(client, mode):
    await names(client)
    r = await client.call_tool("get_ticket", {"id": 2})
    assert r.structured_content["id"] == 2, r


async def a_hidden_tool_is_unknown(client, mode):
    await names(client)
    try:
        r = await client.call_tool("delete_ticket", {"id": 1})
    except MCPError as e:
        assert e.error.code == -32602, e.error
        assert e.error.data["code"] == "unknown_tool", e.error
        return
    raise AssertionError(f"delete_ticket passed: {r}")


async def main():
    for mode in ["auto", "legacy"]:
        for fn in [negotiates, lists_only_allowed_tools, an_allowed_call_passes,
                   pii_in_a_result_is_refused, a_clean_result_passes, a_hidden_tool_is_unknown]:
            await scenario(fn, mode)
    failed = sum(1 for _, e in RESULTS if e is not None)
    print(f"{len(RESULTS) - failed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


asyncio.run(main())
