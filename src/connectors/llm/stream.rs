//! The streamed answer: a task reads the upstream SSE, checks every event (the budget on
//! every choice's output, the PII scanners on every string, one scanner per field), holds
//! each event back until it is safe, and feeds the agent through a channel, unmodified and
//! in order; it seals the evidence before the last event.

use super::*;
use crate::connectors::ChannelBody;
use futures_util::FutureExt;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use tokio::sync::mpsc;

pub async fn start(
    call: Call,
    chat: ChatCall,
    decision: Decision,
    prices: ModelPrice,
    body: hyper::body::Incoming,
    idle: Duration,
    max_held_bytes: usize,
) -> Result<Reply, Refusal> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    call.trace(|t| t.streaming = true);
    let sealer = call
        .sealer
        .clone()
        .ok_or_else(|| Refusal::internal("no evidence sealer"))?;
    // One task pumps the answer, then — whatever happened to the pump, even a panic —
    // seals the evidence and ends the stream.
    tokio::spawn(async move {
        let pumped = AssertUnwindSafe(pump(
            &call,
            &chat,
            &decision,
            &prices,
            body,
            idle,
            &tx,
            max_held_bytes,
        ))
        .catch_unwind()
        .await;
        let end = match pumped {
            Ok(Ok(())) => End::Done,
            Ok(Err(end)) => end,
            Err(_) => End::Cut(Refusal::internal("internal error while streaming"), 0),
        };
        let last = match end {
            End::Done => Bytes::from_static(b"data: [DONE]\n\n"),
            End::Gone => Bytes::new(),
            End::Cut(refusal, after) => {
                call.trace(|t| {
                    t.rec.outcome = Some(Outcome::Cut);
                    t.rec.cut = Some(Cut {
                        after_tokens: after,
                        code: refusal.code,
                        detail: refusal.message.clone(),
                    });
                    t.refused = Some(refusal.clone());
                });
                refusal_event(&call, &refusal)
            }
        };
        let last = match sealer.seal().await {
            Ok(()) => last,
            Err(r) => refusal_event(&call, &r),
        };
        if !last.is_empty() {
            let _ = tx.send(last).await;
        }
    });
    let mut reply = http::Response::new(ChannelBody::new(rx).boxed());
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    reply.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    Ok(reply)
}

pub enum End {
    Done,
    /// The agent went away.
    Gone,
    /// Cut with this refusal after this many output tokens reached the agent.
    Cut(Refusal, u64),
}

/// The stream's last event for a refusal, in the wire format of the front end that took the
/// call. (Every parsed call has its front end's parser; without one the stream just ends,
/// without `[DONE]`.)
fn refusal_event(call: &Call, r: &Refusal) -> Bytes {
    call.parser
        .as_ref()
        .map(|p| p.stream_refusal(r, &call.ctx.decision_id))
        .unwrap_or_default()
}

fn event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// Read SSE lines from the upstream body.
struct Lines {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Lines {
    async fn next(&mut self, idle: Duration) -> Result<Option<String>, Refusal> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let s = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                return Ok(Some(s));
            }
            match tokio::time::timeout(idle, self.body.frame()).await {
                Err(_) => {
                    return Err(Refusal::new(
                        Code::UpstreamTimeout,
                        "upstream stream stalled",
                    ))
                }
                Ok(None) => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let s = String::from_utf8_lossy(&self.buf).to_string();
                    self.buf.clear();
                    return Ok(Some(s));
                }
                Ok(Some(Err(e))) => {
                    return Err(Refusal::new(
                        Code::UpstreamError,
                        format!("upstream stream failed: {e}"),
                    ))
                }
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                        if self.buf.len() > 1 << 20 {
                            return Err(Refusal::new(
                                Code::UpstreamError,
                                "upstream SSE line too long",
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// Most distinct fields (JSON paths) one streamed answer may carry.
const MAX_FIELDS: usize = 1024;

/// Most events held back at once, waiting for the detectors.
const MAX_HELD_EVENTS: usize = 4096;

/// One streamed field of a choice (a JSON path under `choices[]`, array positions as the
/// stream names them, e.g. `/choices/#0/delta/tool_calls/#1/function/arguments`). Like
/// the SDKs, which append each string of a delta to the same field of the choice, its
/// text goes through one scanner, so a match split across events is found.
struct Field {
    scanner: StreamScanner,
    /// The secrets scanner over the same text, and how much of it it declared safe.
    secrets: SecretScanner,
    sec_emitted: usize,
    /// Bytes pushed into the scanner, and how many of them it declared safe.
    pushed: usize,
    emitted: usize,
    /// Its choice (index into `Pump::choices`), and the last event that continued it.
    choice: usize,
    last: u64,
    /// The last [`WINDOW`] bytes pushed, and how far they were judged as a whole text when
    /// the field stopped (a later event of its choice did not continue it).
    window: String,
    settled: usize,
}

/// What [`Pump::scan`] found in one event: the (field, end) pairs it still waits on, the
/// PII kinds and the secret kinds.
type Scanned = (Vec<(usize, usize)>, u8, u16);

impl Field {
    /// How far its text is safe to send: past both scanners.
    fn safe(&self) -> usize {
        self.emitted.min(self.sec_emitted)
    }
}

/// Bytes of a field's recent text kept to judge it whole when it stops: more than the
/// scanners hold back (the secrets scanner's 512 bytes) plus the longest address.
const WINDOW: usize = 1024;

/// An event waiting until every field it touched is past where a match may start.
struct Held {
    bytes: Bytes,
    /// (field, end of this event's text in that field) not yet declared safe.
    needs: Vec<(usize, usize)>,
    /// Output tokens charged for this event.
    tokens: u64,
    /// Its `choices[0].delta.content`, for the record.
    content: String,
}

/// The state of one streamed answer as it passes.
struct Pump<'a> {
    call: &'a Call,
    chat: &'a ChatCall,
    decision: &'a Decision,
    prices: &'a ModelPrice,
    tx: &'a mpsc::Sender<Bytes>,
    /// Field path -> index into `slots`.
    fields: HashMap<String, usize>,
    slots: Vec<Field>,
    /// Choice path (`/choices/#N`) -> index into `choices`: the last event touching it.
    choice_ids: HashMap<String, usize>,
    choices: Vec<u64>,
    /// Events seen so far.
    seq: u64,
    /// Events not sent yet, in order, and their bytes.
    held: VecDeque<Held>,
    held_bytes: usize,
    max_held_bytes: usize,
    /// Scratch buffer for field paths.
    path: String,
    /// PII kinds a policy let through (warn): they no longer stop or hold the stream;
    /// every other kind still does.
    allowed: u8,
    /// Secret kinds a policy let through (warn), likewise.
    sec_allowed: u16,
    /// The `choices[0].delta.content` the agent has received.
    text: String,
    /// Output tokens charged (everything the upstream sent), and those the agent received.
    out_tokens: u64,
    sent_tokens: u64,
    /// Output tokens the call holds; a blocking limit bounds the answer (`bounded`), so
    /// passing what is held means drawing more or being cut.
    reserved: u64,
    bounded: bool,
}

impl Pump<'_> {
    /// Record what the agent received: `out` output tokens, on a prompt of `input` tokens.
    fn record(&self, input: u64, out: u64) {
        let (text, prices, decision) = (&self.text, self.prices, self.decision);
        self.call.trace(|t| {
            t.rec.input_tokens = input;
            t.rec.output_tokens = out;
            t.rec.cost_usd = cost(prices, input, out);
            t.rec.response_hash = Some(content_hash(text.as_bytes()));
            if decision.inspection.responses {
                t.content.get_or_insert_with(Content::default).response = Some(text.to_string());
            }
        })
    }

    /// End the stream with a refusal, recording what the agent received; the events held
    /// back are never sent.
    fn cut(&self, r: Refusal) -> End {
        self.record(self.chat.prompt_count(), self.out_tokens);
        End::Cut(r, self.sent_tokens)
    }

    /// A refusing decision taken mid-stream: apply it to the run and cut.
    fn enforce(&self, d: Decision, fallback: Code) -> End {
        let r = match (&self.call.run, self.call.guard()) {
            (Some(_), Ok(guard)) => guard.enforce(self.call, &d),
            _ => Refusal::new(fallback, "refused mid-stream"),
        };
        self.cut(r)
    }

    /// PII was found in the answer: cut if a policy blocks it (judged with every kind
    /// found so far), else let those kinds through and scan on for the others.
    fn pii(&mut self, found: u8) -> Result<(), End> {
        let mut found = found & !self.allowed;
        while found != 0 {
            let all = self.allowed | found;
            let sec = Some(self.sec_allowed);
            match recheck(self.call, self.prices, self.out_tokens, Some(all), sec) {
                Ok(Some(d)) => return Err(self.enforce(d, Code::PiiDetected)),
                Ok(None) => self.allowed = all,
                Err(r) => return Err(self.cut(r)),
            }
            // Resume every field past the allowed kinds; another kind may still be there.
            found = 0;
            for f in &mut self.slots {
                f.scanner.allow(all);
                let p = f.scanner.push("");
                f.emitted += p.emit.len();
                found |= p.found & !all;
            }
        }
        Ok(())
    }

    /// A secret was found in the answer: cut if a policy blocks it (judged with every
    /// kind found so far), else let those kinds through and scan on for the others.
    fn secrets(&mut self, found: u16) -> Result<(), End> {
        let mut found = found & !self.sec_allowed;
        while found != 0 {
            let all = self.sec_allowed | found;
            let pii = Some(self.allowed);
            match recheck(self.call, self.prices, self.out_tokens, pii, Some(all)) {
                Ok(Some(d)) => return Err(self.enforce(d, Code::SecretDetected)),
                Ok(None) => self.sec_allowed = all,
                Err(r) => return Err(self.cut(r)),
            }
            found = 0;
            for f in &mut self.slots {
                f.secrets.allow(all);
                let p = f.secrets.push("");
                f.sec_emitted += p.emit.len();
                found |= p.found & !all;
            }
        }
        Ok(())
    }

    async fn send(&mut self, h: Held) -> Result<(), End> {
        if self.tx.send(h.bytes).await.is_err() {
            self.record(self.chat.prompt_count(), self.out_tokens);
            return Err(End::Gone);
        }
        self.sent_tokens += h.tokens;
        self.text.push_str(&h.content);
        Ok(())
    }

    /// Send the held events, in order, as far as every field they touched is safe (all of
    /// them once the detectors are done: `all`).
    async fn release(&mut self, all: bool) -> Result<(), End> {
        while let Some(front) = self.held.front() {
            // A field waits until its scanner has passed the event's text, or until it
            // stopped and its text was judged whole (`settle`).
            let slots = &self.slots;
            let safe = all
                || front.needs.iter().all(|&(f, end)| {
                    let f = &slots[f];
                    f.safe().max(f.settled) >= end
                });
            if !safe {
                break;
            }
            let Some(h) = self.held.pop_front() else {
                break;
            };
            self.held_bytes -= h.bytes.len();
            self.send(h).await?;
        }
        Ok(())
    }

    /// The answer is complete: the final scans, then every held event.
    async fn finish(&mut self) -> Result<(), End> {
        let mut found = 0;
        for f in &mut self.slots {
            let rest = f.scanner.finish();
            f.emitted += rest.emit.len();
            found |= rest.found;
        }
        while found & !self.allowed != 0 {
            self.pii(found)?;
            // A kind allowed at the very end leaves text its scanner has not judged
            // whole yet: finish it again.
            found = 0;
            for f in &mut self.slots {
                found |= f.scanner.finish().found;
            }
        }
        let mut sec = 0;
        for f in &mut self.slots {
            let rest = f.secrets.finish();
            f.sec_emitted += rest.emit.len();
            sec |= rest.found;
        }
        while sec & !self.sec_allowed != 0 {
            self.secrets(sec)?;
            sec = 0;
            for f in &mut self.slots {
                sec |= f.secrets.finish().found;
            }
        }
        self.release(true).await
    }

    /// Count `tokens` more output tokens against the call's budget; past a blocking limit
    /// the stream is cut (same step: the agent gets nothing past the limit).
    fn charge(&mut self, tokens: u64) -> Result<(), End> {
        let next_out = self.out_tokens + tokens;
        if self.bounded && next_out > self.reserved {
            // Past what the call reserved: draw more from the run's shared headroom, or cut.
            match recheck(self.call, self.prices, next_out, None, None) {
                Ok(Some(d)) => return Err(self.enforce(d, Code::BudgetExceeded)),
                Ok(None) => self.reserved = next_out,
                Err(r) => return Err(self.cut(r)),
            }
        }
        self.out_tokens = next_out;
        Ok(())
    }

    /// Push every string of `v` into its field's scanner: the fields the event still
    /// waits on, and the PII and secret kinds found (in a field, or in an object key).
    fn scan(&mut self, v: &Value) -> Result<Scanned, Refusal> {
        let mut needs = Vec::new();
        let (mut found, mut in_keys) = (0u8, 0u8);
        let (mut sec, mut sec_keys) = (0u16, 0u16);
        let mut overflow = false;
        self.seq += 1;
        let seq = self.seq;
        let (fields, slots) = (&mut self.fields, &mut self.slots);
        let (choice_ids, choices) = (&mut self.choice_ids, &mut self.choices);
        let mut path = std::mem::take(&mut self.path);
        path.clear();
        crate::detect::json::fields(
            v,
            &mut path,
            &mut |p, s| {
                if s.is_empty() {
                    return;
                }
                // Outside `choices[]` (id, model, object, ...) a string is a whole value,
                // repeated or replaced by each event (the SDKs keep the latest).
                let Some(choice) = choice_of(p) else {
                    found |= crate::detect::pii::kinds(s);
                    sec |= crate::detect::secrets::kinds(s);
                    return;
                };
                let c = match choice_ids.get(choice) {
                    Some(&c) => c,
                    None => {
                        choice_ids.insert(choice.to_string(), choices.len());
                        choices.push(0);
                        choices.len() - 1
                    }
                };
                choices[c] = seq;
                let i = match fields.get(p) {
                    Some(&i) => i,
                    None if slots.len() >= MAX_FIELDS => {
                        overflow = true;
                        return;
                    }
                    None => {
                        fields.insert(p.to_string(), slots.len());
                        slots.push(Field {
                            scanner: StreamScanner::new(),
                            secrets: SecretScanner::new(),
                            sec_emitted: 0,
                            pushed: 0,
                            emitted: 0,
                            choice: c,
                            last: 0,
                            window: String::new(),
                            settled: 0,
                        });
                        slots.len() - 1
                    }
                };
                let f = &mut slots[i];
                f.last = seq;
                f.window.push_str(s);
                if f.window.len() > WINDOW {
                    let mut cut = f.window.len() - WINDOW;
                    while !f.window.is_char_boundary(cut) {
                        cut += 1;
                    }
                    f.window.drain(..cut);
                }
                let pushed = f.scanner.push(s);
                f.pushed += s.len();
                f.emitted += pushed.emit.len();
                found |= pushed.found;
                let pushed = f.secrets.push(s);
                f.sec_emitted += pushed.emit.len();
                sec |= pushed.found;
                if f.safe() < f.pushed {
                    needs.push((i, f.pushed));
                }
            },
            &mut |k| {
                in_keys |= crate::detect::pii::kinds(k);
                sec_keys |= crate::detect::secrets::kinds(k);
            },
        );
        found |= in_keys;
        sec |= sec_keys;
        self.path = path;
        if overflow {
            return Err(Refusal::new(
                Code::BodyTooLarge,
                format!("streamed answer has more than {MAX_FIELDS} fields"),
            ));
        }
        Ok((needs, found, sec))
    }

    /// Judge whole the held text of every field that stopped: a later event of its choice
    /// did not continue it (a `role`, a tool call's `name`, a refusal before the finish
    /// chunk). Such a field must not hold the stream back until its end; its scanner keeps
    /// its context, so should it resume, a match across the pause is still found.
    fn settle(&mut self) -> (u8, u16) {
        let (mut found, mut sec) = (0, 0);
        for h in &self.held {
            for &(i, _) in &h.needs {
                let f = &mut self.slots[i];
                if f.last < self.choices[f.choice] && f.settled < f.pushed {
                    found |= crate::detect::pii::kinds(&f.window);
                    sec |= crate::detect::secrets::kinds(&f.window);
                    f.settled = f.pushed;
                }
            }
        }
        (found, sec)
    }

    /// One upstream event: budget check of every choice's output, the detectors on every
    /// string, then it waits until it is safe to send.
    async fn event(&mut self, v: &Value) -> Result<(), End> {
        let mut tokens = 0;
        let choices = v.get("choices").and_then(Value::as_array);
        for c in choices.into_iter().flatten() {
            output_strings(c.get("delta").unwrap_or(&Value::Null), &mut |s| {
                tokens += count_tokens(&self.chat.model, s)
            });
        }
        if tokens > 0 {
            self.charge(tokens)?;
        }
        let content = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
            .filter(|_| {
                v.pointer("/choices/0/index")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    == 0
            })
            .unwrap_or("")
            .to_string();
        let bytes = event(v);
        let (needs, mut found, mut sec) = self.scan(v).map_err(|r| self.cut(r))?;
        self.held_bytes += bytes.len();
        self.held.push_back(Held {
            bytes,
            needs,
            tokens,
            content,
        });
        let (settled, settled_sec) = self.settle();
        found |= settled;
        sec |= settled_sec;
        found &= !self.allowed;
        sec &= !self.sec_allowed;
        if found != 0 || sec != 0 {
            // What the scanners passed before the match is clean: it goes out before a
            // cut (the push that finds a match also emits the text before it).
            self.release(false).await?;
        }
        if found != 0 {
            // Cut, or the kinds are let through and every field scans on.
            self.pii(found)?;
        }
        if sec != 0 {
            self.secrets(sec)?;
        }
        if self.held.len() > MAX_HELD_EVENTS || self.held_bytes > self.max_held_bytes {
            return Err(self.cut(Refusal::new(
                Code::BodyTooLarge,
                format!(
                    "streamed answer held back past {} events or {} bytes awaiting the detectors",
                    MAX_HELD_EVENTS, self.max_held_bytes
                ),
            )));
        }
        self.release(false).await
    }
}

/// The choice a field path belongs to (`/choices/#0` of `/choices/#0/delta/content`).
pub(super) fn choice_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/choices/")?;
    let end = rest.find('/').map_or(path.len(), |i| "/choices/".len() + i);
    path.get(..end)
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    call: &Call,
    chat: &ChatCall,
    decision: &Decision,
    prices: &ModelPrice,
    body: hyper::body::Incoming,
    idle: Duration,
    tx: &mpsc::Sender<Bytes>,
    max_held_bytes: usize,
) -> Result<(), End> {
    let mut lines = Lines {
        body,
        buf: Vec::new(),
    };
    let mut p = Pump {
        call,
        chat,
        decision,
        prices,
        tx,
        fields: HashMap::new(),
        slots: Vec::new(),
        choice_ids: HashMap::new(),
        choices: Vec::new(),
        seq: 0,
        held: VecDeque::new(),
        held_bytes: 0,
        max_held_bytes,
        path: String::new(),
        allowed: 0,
        sec_allowed: 0,
        text: String::new(),
        out_tokens: 0,
        sent_tokens: 0,
        reserved: chat.reserved_output,
        bounded: bounded(decision),
    };
    let mut reported: Option<(u64, u64)> = None;
    let cut = crate::connectors::cut_signal(call);
    tokio::pin!(cut);
    loop {
        let line = tokio::select! {
            biased;
            r = &mut cut => return Err(p.cut(r)),
            l = lines.next(idle) => l,
        };
        let line = match line {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(r) => return Err(p.cut(r)),
        };
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data == "[DONE]" {
            break;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return Err(p.cut(Refusal::new(
                Code::UpstreamError,
                "upstream sent an invalid SSE event",
            )));
        };
        if let (Some(pt), Some(ct)) = (
            v.pointer("/usage/prompt_tokens").and_then(Value::as_u64),
            v.pointer("/usage/completion_tokens")
                .and_then(Value::as_u64),
        ) {
            reported = Some((pt, ct));
        }
        let usage_only = v
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|c| c.is_empty());
        if usage_only && !chat.include_usage {
            // The sidecar asked for it; the agent did not.
            continue;
        }
        p.event(&v).await?;
    }
    p.finish().await?;
    let out = reported.map(|(_, c)| c).unwrap_or(p.out_tokens);
    let input = reported
        .map(|(i, _)| i)
        .unwrap_or_else(|| chat.prompt_count());
    p.record(input, out);
    Ok(())
}
