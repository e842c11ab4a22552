//! The one refusal table (`docs/codes.md`): every code with its wire mappings.
//!
//! Add a code here and in `docs/codes.md`, nowhere else.

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($( $variant:ident => $name:literal, $http:literal, $grpc:literal, $jsonrpc:literal; )*) => {
        /// A stable, machine-readable refusal code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Code { $($variant,)* }

        impl Code {
            /// Every code, in table order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The wire name, e.g. `no_allow_policy`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// HTTP status of the refusal.
            pub fn http_status(self) -> u16 {
                match self { $(Code::$variant => $http,)* }
            }

            /// gRPC status name of the refusal.
            pub fn grpc_code(self) -> &'static str {
                match self { $(Code::$variant => $grpc,)* }
            }

            /// JSON-RPC error code used on the MCP channel.
            pub fn jsonrpc_code(self) -> i32 {
                match self { $(Code::$variant => $jsonrpc,)* }
            }

            pub fn parse(s: &str) -> Option<Code> {
                match s { $($name => Some(Code::$variant),)* _ => None }
            }
        }
    };
}

codes! {
    NoAllowPolicy       => "no_allow_policy",     403, "PERMISSION_DENIED",  -32003;
    PolicyDenied        => "policy_denied",       403, "PERMISSION_DENIED",  -32003;
    BudgetExceeded      => "budget_exceeded",     429, "RESOURCE_EXHAUSTED", -32003;
    RateLimited         => "rate_limited",        429, "RESOURCE_EXHAUSTED", -32003;
    PiiDetected         => "pii_detected",        403, "PERMISSION_DENIED",  -32003;
    SecretDetected      => "secret_detected",     403, "PERMISSION_DENIED",  -32003;
    GroundingLow        => "grounding_low",       403, "PERMISSION_DENIED",  -32003;
    FactUnavailable     => "fact_unavailable",    403, "PERMISSION_DENIED",  -32003;
    RunStopped          => "run_stopped",         403, "PERMISSION_DENIED",  -32003;
    RunKilled           => "run_killed",          403, "PERMISSION_DENIED",  -32003;
    ApprovalRequired    => "approval_required",   403, "PERMISSION_DENIED",  -32003;
    GovernanceHalted    => "governance_halted",   503, "UNAVAILABLE",        -32003;
    GovernanceDegraded  => "governance_degraded", 503, "UNAVAILABLE",        -32003;
    NotReady            => "not_ready",           503, "UNAVAILABLE",        -32003;
    UnknownConnector    => "unknown_connector",   404, "NOT_FOUND",          -32602;
    UnknownTemplate     => "unknown_template",    404, "NOT_FOUND",          -32602;
    UnknownTool         => "unknown_tool",        404, "NOT_FOUND",          -32602;
    InvalidParams       => "invalid_params",      400, "INVALID_ARGUMENT",   -32602;
    CrossTenant         => "cross_tenant",        403, "PERMISSION_DENIED",  -32003;
    PathNotAllowed      => "path_not_allowed",    403, "PERMISSION_DENIED",  -32003;
    MethodNotAllowed    => "method_not_allowed",  403, "PERMISSION_DENIED",  -32003;
    BodyTooLarge        => "body_too_large",      413, "INVALID_ARGUMENT",   -32600;
    BadRequest          => "bad_request",         400, "INVALID_ARGUMENT",   -32600;
    UpstreamError       => "upstream_error",      502, "UNAVAILABLE",        -32603;
    UpstreamTimeout     => "upstream_timeout",    504, "DEADLINE_EXCEEDED",  -32603;
    InternalError       => "internal_error",      500, "INTERNAL",           -32603;
    RequestTimeout      => "request_timeout",     408, "DEADLINE_EXCEEDED",  -32600;
    Unauthorized        => "unauthorized",        401, "UNAUTHENTICATED",    -32001;
    Overloaded          => "overloaded",          503, "UNAVAILABLE",        -32003;
    UnknownRoute        => "unknown_route",       404, "UNIMPLEMENTED",      -32601;
    MethodNotSupported  => "method_not_supported", 405, "UNIMPLEMENTED",     -32601;
    UnsupportedMediaType => "unsupported_media_type", 415, "INVALID_ARGUMENT", -32600;
    UnknownRun          => "unknown_run",         404, "NOT_FOUND",          -32602;
    UnknownApproval     => "unknown_approval",    404, "NOT_FOUND",          -32602;
    NotPending          => "not_pending",         409, "FAILED_PRECONDITION", -32600;
    InvalidBundle       => "invalid_bundle",      422, "FAILED_PRECONDITION", -32602;
    AuditUnavailable    => "audit_unavailable",   503, "UNAVAILABLE",        -32603;
    InvalidJson         => "invalid_json",        400, "INVALID_ARGUMENT",   -32700;
    HeaderMismatch      => "header_mismatch",     400, "INVALID_ARGUMENT",   -32020;
    UnsupportedProtocolVersion => "unsupported_protocol_version", 400, "INVALID_ARGUMENT", -32022;
    ForbiddenOrigin     => "forbidden_origin",    403, "PERMISSION_DENIED",  -32600;
    UnknownSession      => "unknown_session",     404, "NOT_FOUND",          -32001;
    UnknownPolicy       => "unknown_policy",      404, "NOT_FOUND",          -32602;
    LifecycleNotAllowed => "lifecycle_not_allowed", 409, "FAILED_PRECONDITION", -32600;
    StoreUnavailable    => "store_unavailable",   503, "UNAVAILABLE",        -32603;
}

/// The numeric gRPC status codes (`google.rpc.Code`), by the names the table uses.
pub fn grpc_status_number(name: &str) -> Option<i32> {
    Some(match name {
        "OK" => 0,
        "CANCELLED" => 1,
        "UNKNOWN" => 2,
        "INVALID_ARGUMENT" => 3,
        "DEADLINE_EXCEEDED" => 4,
        "NOT_FOUND" => 5,
        "ALREADY_EXISTS" => 6,
        "PERMISSION_DENIED" => 7,
        "RESOURCE_EXHAUSTED" => 8,
        "FAILED_PRECONDITION" => 9,
        "ABORTED" => 10,
        "OUT_OF_RANGE" => 11,
        "UNIMPLEMENTED" => 12,
        "INTERNAL" => 13,
        "UNAVAILABLE" => 14,
        "DATA_LOSS" => 15,
        "UNAUTHENTICATED" => 16,
        _ => return None,
    })
}

impl Code {
    /// The numeric gRPC status of the refusal.
    pub fn grpc_status(self) -> i32 {
        grpc_status_number(self.grpc_code()).unwrap_or(13)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {c}");
            assert_eq!(Code::parse(c.as_str()), Some(*c));
            let json = serde_json::to_string(c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
    }

    #[test]
    fn every_code_is_documented() {
        let doc = include_str!("../docs/codes.md");
        for c in Code::ALL {
            assert!(
                doc.contains(&format!("`{}`", c.as_str())),
                "{c} missing from docs/codes.md"
            );
        }
    }

    #[test]
    fn statuses_follow_design_section_10() {
        assert_eq!(Code::BadRequest.http_status(), 400);
        assert_eq!(Code::NoAllowPolicy.http_status(), 403);
        assert_eq!(Code::UnknownTool.http_status(), 404);
        assert_eq!(Code::BodyTooLarge.http_status(), 413);
        assert_eq!(Code::BudgetExceeded.http_status(), 429);
        assert_eq!(Code::UpstreamError.http_status(), 502);
        assert_eq!(Code::GovernanceDegraded.http_status(), 503);
        assert_eq!(Code::UpstreamTimeout.http_status(), 504);
        assert_eq!(Code::UnknownTool.jsonrpc_code(), -32602);
        assert_eq!(Code::PolicyDenied.jsonrpc_code(), -32003);
        assert_eq!(Code::UnknownRoute.http_status(), 404);
        assert_eq!(Code::MethodNotSupported.http_status(), 405);
        assert_eq!(Code::UnsupportedMediaType.http_status(), 415);
        assert_eq!(Code::UnknownRoute.jsonrpc_code(), -32601);
    }

    #[test]
    fn every_grpc_name_is_a_real_status() {
        for c in Code::ALL {
            assert!(
                grpc_status_number(c.grpc_code()).is_some(),
                "{c}: {}",
                c.grpc_code()
            );
        }
        assert_eq!(Code::PolicyDenied.grpc_status(), 7);
        assert_eq!(Code::Unauthorized.grpc_status(), 16);
        assert_eq!(Code::UpstreamTimeout.grpc_status(), 4);
        assert_eq!(Code::UnknownRoute.grpc_status(), 12);
    }
}
