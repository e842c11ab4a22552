//! Content detectors: pure functions over text that produce facts for the decision
//! (`docs/policy.md`, `detectors`).
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

/// Test support: run a body with a deadline, so an input that sends a scanner super-linear
/// fails the test instead of hanging the suite.
#[cfg(test)]
pub(crate) fn within<T: Send + 'static>(
    secs: u64,
    what: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::thread::Result::Ok(body()));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(Ok(v)) => v,
        Ok(Err(_)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{what}: the body panicked")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: not done in {secs} s (a debug build scans a megabyte in well under one): super-linear?")
        }
    }
}
