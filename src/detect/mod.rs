//! Content detectors: pure functions over text that produce facts for the decision
//! (DESIGN §4, `detectors`).
//!
//! Detectors do no I/O and keep no clock: the same text always gives the same facts, so a
//! decision that used them can be replayed. [`pii`] finds the "regex facts" (email, phone,
//! card, SSN, IBAN) that block by default, in whole texts and in streamed answers; [`text`] turns
//! a body into the texts they read (content coding, charset, JSON and other escapes), or says it
//! cannot be read (the fact is then unavailable, never clean).

pub mod json;
pub mod pii;
pub mod secrets;
pub mod text;
