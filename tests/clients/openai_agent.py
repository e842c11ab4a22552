"""The official `openai` Python SDK as the agent, against a Warden sidecar.

Run by tests/openai_client.rs, which starts the mock upstreams and a sidecar whose contract
bundle caps output at 10 tokens per run. Usage: openai_agent.py AGENT_URL ADMIN_URL ADMIN_TOKEN
Prints one line per scenario and a closing "N passed, M failed" line; exits 1 on any failure.
"""

import json
import sys
import traceback
import urllib.request

import openai

AGENT, ADMIN, TOKEN = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=AGENT + "/v1", api_key="agent-key-not-forwarded", max_retries=0)
RESULTS = []


def admin_mode(mode, tenant=None):
    body = {"mode": mode, "reason": "openai client test"}
    if tenant:
        body["tenant"] = tenant
    req = urllib.request.Request(
        ADMIN + "/ops/mode",
        data=json.dumps(body).encode(),
        headers={"authorization": "Bearer " + TOKEN, "content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req) as r:
        assert r.status == 200, r.status


def scenario(fn):
    try:
        fn()
        RESULTS.append((fn.__name__, None))
        print("PASS", fn.__name__, flush=True)
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        RESULTS.append((fn.__name__, e))
        print("FAIL", fn.__name__, repr(e), flush=True)
        traceback.print_exc()
    return fn


def code_of(e):
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        return body.get("code") or (body.get("error") or {}).get("code")
    return getattr(e, "code", None)


def user(text):
    return [{"role": "user", "content": text}]


@scenario
def allowed_plain_call():
    r = client.chat.completions.create(model="gpt-4o-mini", messages=user("hello"), max_tokens=5)
    assert len(r.choices[0].message.content.split()) == 5, r
    assert r.usage.completion_tokens == 5


@scenario
def allowed_streamed_call():
    text = ""
    for chunk in client.chat.completions.create(
        model="gpt-4o-mini", messages=user("hi [[reply:6]]"), stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert len(text.split()) == 6, text


@scenario
def model_not_allowed():
    try:
        client.chat.completions.create(model="gpt-4o", messages=user("hi"))
    except openai.PermissionDeniedError as e:
        assert e.status_code == 403 and code_of(e) == "no_allow_policy", (e.status_code, e.body)
        return
    raise AssertionError("gpt-4o was allowed")


@scenario
def pii_in_prompt_refused():
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=user("mail jane.doe@example.com"))
    except openai.PermissionDeniedError as e:
        assert code_of(e) == "pii_detected", e.body
        return
    raise AssertionError("PII passed")


@scenario
def stream_cut_at_run_budget_then_run_stopped():
    text = ""
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        # An upstream that ignores the clamped max_tokens: cut where the budget ends.
        messages=user("long [[reply:30]] [[overrun]]"),
        stream=True,
        extra_headers={"x-warden-run-id": "py-budget"},
    )
    try:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
    except openai.APIError as e:
        assert code_of(e) == "budget_exceeded", e.body
        assert 0 < len(text.split()) <= 10, text
    else:
        raise AssertionError("stream was not cut: " + text)
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=user("more"), extra_headers={"x-warden-run-id": "py-budget"}
        )
    except openai.PermissionDeniedError as e:
        assert code_of(e) == "run_stopped", e.body
        return
    raise AssertionError("a stopped run went on")


@scenario
def pii_in_streamed_reply_never_reaches_the_client():
    text = ""
    try:
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=user("go [[leak]] [[reply:4]]"), max_tokens=4, stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
    except openai.APIError as e:
        assert code_of(e) == "pii_detected", e.body
        assert "jane.doe" not in text and "example.com" not in text, text
        return
    raise AssertionError("leak passed: " + text)


@scenario
def kill_switch_mid_stream():
    text = ""
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=user("slow [[reply:9]] [[slow:150]]"), stream=True, max_tokens=9
    )
    try:
        for i, chunk in enumerate(stream):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if i == 2:
                admin_mode("halted")
    except openai.APIError as e:
        assert code_of(e) == "governance_halted", e.body
        assert len(text.split()) < 9, text
    else:
        raise AssertionError("kill switch did not cut: " + text)
    finally:
        admin_mode("enforcing")


@scenario
def degraded_refuses_new_runs_and_warns_running_ones():
    h = {"x-warden-run-id": "py-running"}
    client.chat.completions.create(model="gpt-4o-mini", messages=user("hi"), max_tokens=2, extra_headers=h)
    admin_mode("degraded")
    try:
        try:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=user("hi"), max_tokens=2, extra_headers={"x-warden-run-id": "py-new"}
            )
        except openai.APIStatusError as e:
            assert e.status_code == 503 and code_of(e) == "governance_degraded", e.body
        else:
            raise AssertionError("a new run started in degraded mode")
        r = client.chat.completions.create(
            model="gpt-4o-mini", messages=user("mail jane.doe@example.com"), max_tokens=2, extra_headers=h
        )
        assert r.choices[0].message.content
    finally:
        admin_mode("enforcing")


@scenario
def bypass_passes_unenforced():
    admin_mode("bypass")
    try:
        r = client.chat.completions.create(model="gpt-4o-mini", messages=user("mail jane.doe@example.com"), max_tokens=2)
        assert r.choices[0].message.content
    finally:
        admin_mode("enforcing")


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "the forecast of a city",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
            "additionalProperties": False,
        },
    },
}
ARGS = '{"text":"the of"}'


@scenario
def streamed_tool_call_with_the_stream_helper():
    deltas = 0
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=user("weather? [[tool:get_weather]] [[reply:2]]"), tools=[WEATHER_TOOL]
    ) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                deltas += 1
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather", call
    assert call.function.arguments == ARGS, call.function.arguments
    assert call.function.parsed_arguments == {"text": "the of"}, call.function.parsed_arguments
    assert deltas >= 4, deltas
    assert final.choices[0].finish_reason == "tool_calls"


@scenario
def streamed_tool_call_with_plain_iteration():
    name, args, chunks = "", "", 0
    for chunk in client.chat.completions.create(
        model="gpt-4o-mini",
        messages=user("weather? [[tool:get_weather]] [[reply:2]]"),
        tools=[WEATHER_TOOL],
        stream=True,
    ):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name += call.function.name or ""
            if call.function.arguments:
                args += call.function.arguments
                chunks += 1
    assert name == "get_weather", name
    assert args == ARGS, args
    assert chunks >= 4, chunks


@scenario
def pii_in_streamed_tool_arguments_never_reaches_the_client():
    args = ""
    try:
        with client.chat.completions.stream(
            model="gpt-4o-mini", messages=user("go [[tool:f]] [[leak:tool]] [[reply:0]]"), tools=[WEATHER_TOOL]
        ) as stream:
            for event in stream:
                if event.type == "tool_calls.function.arguments.delta":
                    args += event.arguments_delta
    except openai.APIError as e:
        assert code_of(e) == "pii_detected", e.body
        assert "jane.doe" not in args and "example.com" not in args, args
        return
    raise AssertionError("leak passed: " + args)


failed = sum(1 for _, e in RESULTS if e is not None)
print(f"{len(RESULTS) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
