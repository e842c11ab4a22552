//! Token counting with the model's real tokenizer, and whether a prompt needs counting at all.

use super::*;

/// Whether any evaluated LLM policy of `tenant` limits input tokens, total tokens or cost —
/// the only reasons to tokenize a prompt before the call.
pub fn prompt_metered(snap: &Snapshot, tenant: &str) -> bool {
    let (own, platform) = snap.candidates(tenant, crate::policy::model::Channel::Llm);
    own.iter().chain(platform).any(|&i| {
        snap.policy(i).limits.iter().any(|l| {
            matches!(
                l.metric,
                Metric::InputTokens | Metric::TotalTokens | Metric::CostUsd
            )
        })
    })
}
/// Count tokens with the model's tokenizer (o200k for unknown models).
pub fn count_tokens(model: &str, text: &str) -> u64 {
    let bpe =
        tiktoken_rs::bpe_for_model(model).unwrap_or_else(|_| tiktoken_rs::o200k_base_singleton());
    let count = || bpe.encode_with_special_tokens(text).len() as u64;
    // A long text takes milliseconds: hand this worker's other calls to another thread
    // meanwhile (the sidecar may run a single worker).
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if text.len() > LONG_TEXT && multi {
        tokio::task::block_in_place(count)
    } else {
        count()
    }
}
/// Texts longer than this are tokenized off the async worker.
pub(super) const LONG_TEXT: usize = 64 * 1024;
