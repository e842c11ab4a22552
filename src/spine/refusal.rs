//! A refusal: a stable code, a message, and the ids that explain it. The front end that took the
//! call turns it into its wire format (`front/render.rs`, `docs/codes.md`).

use crate::codes::Code;

#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: Code,
    pub message: String,
    pub policy_id: Option<String>,
    /// For `approval_required`: the id an operator approves.
    pub approval_id: Option<String>,
    /// For `method_not_supported`: the methods the endpoint answers (the `Allow` header).
    pub allow: Option<&'static str>,
    /// The code the evidence record carries when it is not the one the agent sees: a
    /// cross-tenant attempt looks unknown on the wire (the agent cannot tell the name exists)
    /// and is recorded as `cross_tenant` (INV-003).
    pub recorded_as: Option<Code>,
}

impl Refusal {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            policy_id: None,
            approval_id: None,
            allow: None,
            recorded_as: None,
        }
    }

    /// `method_not_supported` on `path`, which answers the methods in `allow`.
    pub fn wrong_method(method: &http::Method, path: &str, allow: &'static str) -> Self {
        let mut r = Refusal::new(
            Code::MethodNotSupported,
            format!("{path} answers {allow}, not {method}"),
        );
        r.allow = Some(allow);
        r
    }

    pub fn by_policy(mut self, policy: Option<&str>) -> Self {
        self.policy_id = policy.map(str::to_string);
        self
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Refusal::new(Code::InternalError, message)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
