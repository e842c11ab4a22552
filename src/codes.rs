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
    }
}
