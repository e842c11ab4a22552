"""The scenario harness the MCP client scripts share: each scenario runs in a fresh `Client`
of the official `mcp` SDK in one mode, and the run ends with "N passed, M failed"."""

import sys
import traceback

from mcp import Client

RESULTS = []


async def scenario(url, fn, mode):
    name = f"{fn.__name__}[{mode}]"
    try:
        async with Client(url, mode=mode, raise_exceptions=True) as client:
            await fn(client, mode)
        RESULTS.append((name, None))
        print("PASS", name, flush=True)
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        RESULTS.append((name, e))
        print("FAIL", name, repr(e), flush=True)
        traceback.print_exc()


async def names(client):
    """Every tool's name, page after page."""
    out, cursor = [], None
    for _ in range(10):
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        out += [t.name for t in page.tools]
        cursor = page.next_cursor
        if cursor is None:
            return out
    raise AssertionError("tools/list never ended")


async def run_all(url, scenarios):
    """Every scenario in both eras the SDK speaks: stateless (auto) and the handshake."""
    for mode in ["auto", "legacy"]:
        for fn in scenarios:
            await scenario(url, fn, mode)
    failed = sum(1 for _, e in RESULTS if e is not None)
    print(f"{len(RESULTS) - failed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
