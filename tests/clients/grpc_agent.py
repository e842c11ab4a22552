"""An agent speaking warden.v1.Mediation with the official grpcio client.

Usage: grpc_agent.py AGENT_ADDR PROTO_ROOT STUB_DIR

Generates the Python stubs of proto/warden/v1/mediation.proto with grpcio-tools into STUB_DIR
(the test setup), then runs each scenario against the sidecar's agent port and prints one JSON
object per line: the scenario's name, the gRPC status name, and what the answer or the refusal
carried. The Rust test (tests/grpc_client.rs) judges them.
"""

import json
import sys

from stubs import generate

addr, proto_root, stub_dir = sys.argv[1], sys.argv[2], sys.argv[3]
generate(proto_root, "warden/v1/mediation.proto", stub_dir)

import grpc  # noqa: E402
from warden.v1 import mediation_pb2 as pb  # noqa: E402
from warden.v1 import mediation_pb2_grpc as rpc  # noqa: E402

channel = grpc.insecure_channel(addr)
stub = rpc.MediationStub(channel)


def meta_of(pairs):
    out = {}
    for k, v in pairs or ():
        out[k] = v.hex() if isinstance(v, bytes) else v
    return out


def report(name, call, **extra):
    """Run `call` (returns (reply, initial metadata)); print what happened."""
    row = {"name": name}
    try:
        reply, initial = call()
        row.update(status="OK", initial=meta_of(initial), **extra)
        row["reply"] = reply
    except grpc.RpcError as e:
        row.update(
            status=e.code().name,
            message=e.details(),
            trailing=meta_of(e.trailing_metadata()),
        )
    print(json.dumps(row), flush=True)


def unary(method, req, run=None, timeout=None):
    md = [("x-warden-run-id", run)] if run else []
    resp, call = method.with_call(req, metadata=md, timeout=timeout)
    return resp, call.initial_metadata()


def chat(content, max_tokens=None):
    r = pb.ChatRequest(model="gpt-4o-mini", messages=[pb.ChatMessage(role="user", content=content)])
    if max_tokens is not None:
        r.max_tokens = max_tokens
    return r


def fields(msg):
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(msg, preserving_proto_field_name=True)


# Chat, whole: allowed and refused.
report("chat", lambda: (lambda r: (fields(r[0]), r[1]))(unary(stub.ChatCompletion, chat("hi [[reply:5]]"), "py-1")))
report("chat_pii", lambda: unary(stub.ChatCompletion, chat("mail jane.doe@example.com"), "py-2"))


def stream(content, run, max_tokens=None, timeout=None):
    it = stub.StreamChatCompletion(chat(content, max_tokens), metadata=[("x-warden-run-id", run)], timeout=timeout)
    chunks = 0
    try:
        for c in it:
            if c.content:
                chunks += 1
    except grpc.RpcError as e:
        print(
            json.dumps(
                {
                    "name": f"stream:{run}",
                    "status": e.code().name,
                    "chunks": chunks,
                    "trailing": meta_of(e.trailing_metadata()),
                    "initial": meta_of(it.initial_metadata()),
                }
            ),
            flush=True,
        )
        return
    print(json.dumps({"name": f"stream:{run}", "status": "OK", "chunks": chunks, "initial": meta_of(it.initial_metadata())}), flush=True)


# A stream allowed whole, then one cut at the run's budget (an upstream that overruns).
stream("a [[reply:1024]]", "py-budget", 1024)
stream("b [[reply:1024]] [[overrun]]", "py-budget", 1024)

# HTTP, SQL, MCP: allowed and refused.
report("http", lambda: (lambda r: ({"status": r[0].status, "body": r[0].body.decode()}, r[1]))(
    unary(stub.HttpCall, pb.HttpRequest(connector="weather", path="/v1/forecast/oslo"))))
report("http_path", lambda: unary(stub.HttpCall, pb.HttpRequest(connector="weather", path="/admin")))
report("sql", lambda: (lambda r: (fields(r[0]), r[1]))(
    unary(stub.SqlQuery, pb.SqlRequest(template="customer_by_id", params_json='{"id": 1}'))))
report("sql_injection", lambda: unary(stub.SqlQuery, pb.SqlRequest(template="customer_by_id", params_json='{"id": "1 OR 1=1"}')))
report("mcp", lambda: (lambda r: (fields(r[0]), r[1]))(
    unary(stub.McpToolCall, pb.McpRequest(tool="get_ticket", arguments_json='{"id": 3}'))))
report("mcp_pii", lambda: unary(stub.McpToolCall, pb.McpRequest(tool="get_ticket", arguments_json='{"id": 7}')))
report("mcp_hidden", lambda: unary(stub.McpToolCall, pb.McpRequest(tool="delete_ticket", arguments_json='{"id": 3}')))

# Access on each channel.
chat_json = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi [[reply:3]]"}]})
for name, plane, connector, action, payload in [
    ("access_llm", "public-llm", "openai", "chat", chat_json),
    ("access_http", "public-web", "weather", "GET /v1/forecast/oslo", ""),
    ("access_sql", "crm", "crm-db", "customer_by_id", '{"id": 2}'),
    ("access_mcp", "support-tools", "tickets", "search_tickets", '{"query": "printer"}'),
    ("access_wrong_plane", "crm", "weather", "GET /v1/forecast/oslo", ""),
]:
    report(
        name,
        lambda p=plane, c=connector, a=action, b=payload: (lambda r: ({"channel": r[0].channel, "status": r[0].status}, r[1]))(
            unary(stub.Access, pb.AccessRequest(plane=p, connector=c, action=a, payload=b.encode()))
        ),
    )

# Another tenant's connector: unknown on the wire, cross_tenant in the record.
report("cross_tenant", lambda: unary(stub.HttpCall, pb.HttpRequest(connector="globex-api", path="/x")))
report("access_cross_tenant", lambda: unary(stub.Access, pb.AccessRequest(connector="globex-api", action="GET /x")))

# A deadline shorter than the answer.
report("deadline", lambda: unary(stub.McpToolCall, pb.McpRequest(tool="search_tickets", arguments_json='{"query": "x [[slow:3000]]"}'), timeout=0.3))
stream("slow [[reply:40]] [[slow:50]]", "py-deadline", None, 0.4)
