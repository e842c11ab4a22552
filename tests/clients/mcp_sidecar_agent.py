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

from mcp_harness import names, run_all
from mcp.shared.exceptions import MCPError

URL = sys.argv[1]


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


asyncio.run(run_all(URL, [negotiates, lists_only_allowed_tools, an_allowed_call_passes,
                   pii_in_a_result_is_refused, a_clean_result_passes, a_hidden_tool_is_unknown]))
