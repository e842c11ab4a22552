//! `warden.v1.Mediation` on the agent port over real h2c, with a Rust gRPC client (tonic): each
//! RPC allowed and refused with its status, code and evidence; a stream cut at the run budget;
//! `Access` on every channel; cross-tenant; bad input (unknown method, malformed protobuf,
//! oversized message, missing fields) refused and recorded; a deadline. The official Python
//! `grpcio` client is in `tests/grpc_client.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::grpc::{start, Grpc};
use common::Env;
use prost::Message;
use tonic::transport::Channel;
use warden::front::grpc::{ErrorInfo, RpcStatus};
use warden::proto as pb;

trait Client {
    async fn client(&self) -> pb::mediation_client::MediationClient<Channel>;
}

impl Client for Grpc {
    async fn client(&self) -> pb::mediation_client::MediationClient<Channel> {
        let ch = tonic::transport::Endpoint::from_shared(self.env.agent_url(""))
            .unwrap()
            .connect()
            .await
            .unwrap();
        pb::mediation_client::MediationClient::new(ch)
    }
}

fn with_run<T>(msg: T, run: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("x-warden-run-id", run.parse().unwrap());
    r
}

fn chat(content: &str, max_tokens: Option<u32>) -> pb::ChatRequest {
    pb::ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![pb::ChatMessage {
            role: "user".into(),
            content: content.into(),
        }],
        max_tokens,
        ..Default::default()
    }
}

/// The refusal's code, decision id and policy id, from its details; the trailers must agree.
fn refusal(s: &tonic::Status) -> (String, String, Option<String>) {
    let details = RpcStatus::decode(s.details()).unwrap();
    assert_eq!(details.code, s.code() as i32);
    assert_eq!(details.details.len(), 1);
    assert_eq!(
        details.details[0].type_url,
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    let info = ErrorInfo::decode(&details.details[0].value[..]).unwrap();
    assert_eq!(info.domain, "warden.dev");
    let meta = s.metadata();
    assert_eq!(
        meta.get("x-warden-code").unwrap().to_str().unwrap(),
        info.reason
    );
    let decision = info.metadata["decision_id"].clone();
    assert_eq!(
        meta.get("x-warden-decision-id").unwrap().to_str().unwrap(),
        decision
    );
    (
        info.reason,
        decision,
        info.metadata.get("policy_id").cloned(),
    )
}

async fn recorded(env: &Env, decision: &str, code: &str) -> warden::evidence::Record {
    let rec = env.record_of(decision).await;
    assert_eq!(
        rec.code.map(|c| c.as_str().to_string()).as_deref(),
        Some(code),
        "{rec:?}"
    );
    rec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rpc_allowed_and_refused() {
    let g = start("grpc-rpcs").await;
    let mut c = g.client().await;
    // Chat, whole.
    let r = c
        .chat_completion(with_run(chat("hi [[reply:5]]", None), "g-1"))
        .await
        .unwrap();
    let decision = r
        .metadata()
        .get("x-warden-decision-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let reply = r.into_inner();
    assert_eq!(reply.content.split_whitespace().count(), 5, "{reply:?}");
    assert_eq!(reply.usage.unwrap().completion_tokens, 5);
    let rec = g.env.record_of(&decision).await;
    assert_eq!(rec.outcome, Some(warden::evidence::Outcome::Allowed));
    assert_eq!(rec.channel, Some(warden::policy::model::Channel::Llm));
    // Refused: PII in the prompt.
    let e = c
        .chat_completion(with_run(chat("mail jane.doe@example.com", None), "g-2"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let (code, decision, policy) = refusal(&e);
    assert_eq!(code, "pii_detected");
    assert_eq!(policy.as_deref(), Some("p100-llm"));
    recorded(&g.env, &decision, "pii_detected").await;
    // Not allowed: a model no policy names.
    let mut other = chat("hi", None);
    other.model = "gpt-5".into();
    let e = c.chat_completion(other).await.unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::PermissionDenied | tonic::Code::NotFound
        ),
        "{e:?}"
    );

    // HTTP through a connector.
    let r = c
        .http_call(pb::HttpRequest {
            connector: "weather".into(),
            path: "/v1/forecast/oslo".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("oslo"), "{r:?}");
    let e = c
        .http_call(pb::HttpRequest {
            connector: "weather".into(),
            path: "/v2/secret".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let (code, decision, _) = refusal(&e);
    assert_eq!(
        (e.code(), code.as_str()),
        (tonic::Code::PermissionDenied, "path_not_allowed")
    );
    recorded(&g.env, &decision, "path_not_allowed").await;
    let e = c
        .http_call(pb::HttpRequest {
            connector: "nope".into(),
            path: "/x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(refusal(&e).0, "unknown_connector");

    // SQL template.
    let r = c
        .sql_query(pb::SqlRequest {
            template: "customer_by_id".into(),
            params_json: r#"{"id": 1}"#.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.rows, 1);
    assert!(r.json.contains("Ada Lovelace"), "{r:?}");
    let e = c
        .sql_query(pb::SqlRequest {
            template: "customer_by_id".into(),
            params_json: r#"{"id": "1 OR 1=1"}"#.into(),
        })
        .await
        .unwrap_err();
    let (code, decision, _) = refusal(&e);
    assert_eq!(
        (e.code(), code.as_str()),
        (tonic::Code::InvalidArgument, "invalid_params")
    );
    recorded(&g.env, &decision, "invalid_params").await;

    // MCP tool.
    let r = c
        .mcp_tool_call(pb::McpRequest {
            tool: "get_ticket".into(),
            arguments_json: r#"{"id": 3}"#.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.is_error && r.result_json.contains("content"), "{r:?}");
    let e = c
        .mcp_tool_call(pb::McpRequest {
            tool: "get_ticket".into(),
            arguments_json: r#"{"id": 7}"#.into(),
        })
        .await
        .unwrap_err();
    let (code, decision, _) = refusal(&e);
    assert_eq!(
        (e.code(), code.as_str()),
        (tonic::Code::PermissionDenied, "pii_detected")
    );
    recorded(&g.env, &decision, "pii_detected").await;
    let e = c
        .mcp_tool_call(pb::McpRequest {
            tool: "delete_ticket".into(),
            arguments_json: r#"{"id": 3}"#.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), refusal(&e).0.as_str()),
        (tonic::Code::NotFound, "unknown_tool")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_cut_at_the_run_budget_with_the_status_after_the_allowed_chunks() {
    let g = start("grpc-stream").await;
    let mut c = g.client().await;
    // 1,024 tokens (the clamp), then the second call of the run passes the run's 2,000.
    let mut s = c
        .stream_chat_completion(with_run(chat("a [[reply:1024]]", Some(1024)), "g-budget"))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(chunk) = s.message().await.unwrap() {
        n += usize::from(!chunk.content.is_empty());
    }
    assert_eq!(n, 1024);
    let mut s = c
        // An upstream that does not honour the clamped max_tokens (976 left) is cut there.
        .stream_chat_completion(with_run(
            chat("b [[reply:1024]] [[overrun]]", Some(1024)),
            "g-budget",
        ))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    let e = loop {
        match s.message().await {
            Ok(Some(chunk)) => n += usize::from(!chunk.content.is_empty()),
            Ok(None) => panic!("the stream ended without its refusal after {n} chunks"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    let (code, decision, policy) = refusal(&e);
    assert_eq!(code, "budget_exceeded");
    assert_eq!(policy.as_deref(), Some("p100-llm"));
    assert!(
        (970..=976).contains(&n),
        "about 2000 - 1024 tokens allowed, got {n}"
    );
    let rec = g.env.record_of(&decision).await;
    assert_eq!(rec.outcome, Some(warden::evidence::Outcome::Cut));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_on_every_channel_and_its_checks() {
    let g = start("grpc-access").await;
    let mut c = g.client().await;
    let access = |plane: &str, connector: &str, action: &str, payload: &str| pb::AccessRequest {
        plane: plane.into(),
        connector: connector.into(),
        action: action.into(),
        payload: payload.as_bytes().to_vec(),
    };
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi [[reply:3]]"}]}"#;
    let r = c
        .access(access("public-llm", "openai", "chat", chat))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.channel.as_str(), r.status), ("llm", 200));
    assert!(String::from_utf8_lossy(&r.payload).contains("chat.completion"));
    let r = c
        .access(access("public-web", "weather", "GET /v1/forecast/oslo", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.channel.as_str(), r.status), ("http", 200));
    let r = c
        .access(access("crm", "crm-db", "customer_by_id", r#"{"id":2}"#))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.channel, "sql");
    assert!(String::from_utf8_lossy(&r.payload).contains("\"rows\""));
    let r = c
        .access(access(
            "support-tools",
            "tickets",
            "search_tickets",
            r#"{"query":"printer"}"#,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.channel, "mcp");
    // The plane must be the connector's; the action must belong to it.
    let e = c
        .access(access("crm", "weather", "GET /v1/forecast/oslo", ""))
        .await
        .unwrap_err();
    let (code, decision, _) = refusal(&e);
    assert_eq!(
        (e.code(), code.as_str()),
        (tonic::Code::InvalidArgument, "invalid_params")
    );
    g.env.record_of(&decision).await;
    let e = c
        .access(access("", "crm-db", "nope", "{}"))
        .await
        .unwrap_err();
    assert_eq!(refusal(&e).0, "unknown_template");
    let e = c
        .access(access(
            "",
            "openai",
            "chat",
            r#"{"model":"gpt-5","messages":[]}"#,
        ))
        .await
        .unwrap_err();
    assert_eq!(refusal(&e).0, "invalid_params");
    // Another tenant's connector fails hard, recorded, as on /http/….
    let e = c
        .access(access("", "globex-api", "GET /x", ""))
        .await
        .unwrap_err();
    let (code, decision, _) = refusal(&e);
    assert_eq!(
        (e.code(), code.as_str()),
        (tonic::Code::PermissionDenied, "cross_tenant")
    );
    recorded(&g.env, &decision, "cross_tenant").await;
    let e = c
        .http_call(pb::HttpRequest {
            connector: "globex-api".into(),
            path: "/x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let (code, decision, _) = refusal(&e);
    assert_eq!(
        (e.code(), code.as_str()),
        (tonic::Code::PermissionDenied, "cross_tenant")
    );
    recorded(&g.env, &decision, "cross_tenant").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_its_code_and_recorded() {
    let g = start("grpc-bad").await;
    let mut c = g.client().await;
    // Missing required fields.
    let e = c.http_call(pb::HttpRequest::default()).await.unwrap_err();
    let (code, decision, _) = refusal(&e);
    assert_eq!(
        (e.code(), code.as_str()),
        (tonic::Code::InvalidArgument, "invalid_params")
    );
    recorded(&g.env, &decision, "invalid_params").await;
    let e = c
        .chat_completion(pb::ChatRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refusal(&e).0, "invalid_params");
    let e = c.sql_query(pb::SqlRequest::default()).await.unwrap_err();
    assert_eq!(refusal(&e).0, "invalid_params");
    let e = c
        .mcp_tool_call(pb::McpRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refusal(&e).0, "invalid_params");
    // Raw frames: an unknown method, a malformed protobuf, an oversized message.
    let raw = |path: &str, msg: Vec<u8>, timeout: Option<&'static str>| {
        let url = g.env.agent_url(path);
        async move {
            let mut framed = vec![0u8];
            framed.extend((msg.len() as u32).to_be_bytes());
            framed.extend(msg);
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .http2_only(true)
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            let mut req = http::Request::post(url)
                .header("content-type", "application/grpc")
                .header("te", "trailers");
            if let Some(t) = timeout {
                req = req.header("grpc-timeout", t);
            }
            let req = req
                .body(http_body_util::Full::new(bytes::Bytes::from(framed)))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let headers = resp.headers().clone();
            let collected = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap();
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let get = |k: &str| {
                headers
                    .get(k)
                    .or(trailers.get(k))
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            (
                get("grpc-status"),
                get("x-warden-code"),
                get("x-warden-decision-id"),
            )
        }
    };
    let (status, code, decision) = raw("/warden.v1.Mediation/Nope", vec![], None).await;
    assert_eq!((status.as_str(), code.as_str()), ("12", "unknown_route"));
    recorded(&g.env, &decision, "unknown_route").await;
    let (status, code, decision) = raw(
        "/warden.v1.Mediation/HttpCall",
        vec![0xff, 0xff, 0xff],
        None,
    )
    .await;
    assert_eq!((status.as_str(), code.as_str()), ("3", "bad_request"));
    recorded(&g.env, &decision, "bad_request").await;
    let (status, code, decision) =
        raw("/warden.v1.Mediation/SqlQuery", vec![b'x'; 2 << 20], None).await;
    assert_eq!((status.as_str(), code.as_str()), ("3", "body_too_large"));
    recorded(&g.env, &decision, "body_too_large").await;
    // A deadline shorter than the answer: DEADLINE_EXCEEDED from the sidecar (unary and
    // streamed), with its code.
    let slow = pb::McpRequest {
        tool: "search_tickets".into(),
        arguments_json: r#"{"query": "printer [[slow:3000]]"}"#.into(),
    };
    let t = std::time::Instant::now();
    let (status, code, decision) = raw(
        "/warden.v1.Mediation/McpToolCall",
        slow.encode_to_vec(),
        Some("300m"),
    )
    .await;
    assert_eq!((status.as_str(), code.as_str()), ("4", "request_timeout"));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The call was cut at the deadline — its upstream request dropped, not waited for — and
    // recorded so.
    let rec = recorded(&g.env, &decision, "request_timeout").await;
    assert_eq!(rec.outcome, Some(warden::evidence::Outcome::Cut), "{rec:?}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "sealed at the deadline: {:?}",
        t.elapsed()
    );
    let mut req = with_run(chat("slow [[reply:40]] [[slow:50]]", None), "g-deadline");
    req.set_timeout(Duration::from_millis(400));
    let mut s = c.stream_chat_completion(req).await;
    let e = loop {
        match &mut s {
            Err(e) => break e.clone(),
            Ok(st) => match st.get_mut().message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream outlived its deadline"),
                Err(e) => break e,
            },
        }
    };
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
}
