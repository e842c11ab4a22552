"""An upstream MCP server written with the official `mcp` Python SDK (MCPServer), for
tests/sidecar_mcp.rs: the sidecar aggregates it beside the Rust tickets mock. Tools:
`lookup_order(order_id: int)` (order 42's note holds an email address, for the PII detector)
and `echo(text: str)`. Usage: mcp_upstream.py PORT [stateless|sessions]
"""

import sys

from mcp.server.mcpserver import MCPServer

PORT = int(sys.argv[1])
MODE = sys.argv[2] if len(sys.argv) > 2 else "stateless"

app = MCPServer("orders")


@app.tool()
def lookup_order(order_id: int) -> dict:
    """One order by id."""
    note = "call back jane.doe@example.com" if order_id == 42 else "no note"
    return {"order_id": order_id, "status": "shipped", "note": note}


@app.tool()
def echo(text: str) -> str:
    """The text, back."""
    return text


app.run(
    "streamable-http",
    host="127.0.0.1",
    port=PORT,
    json_response=True,
    stateless_http=(MODE == "stateless"),
)
