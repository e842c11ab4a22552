//! What evidence may hold of a prompt or a response: the text as the call's `inspection`
//! allows it. Where `pii` (or `secrets`) is not allowed, every span the PII (or secrets)
//! detector finds is replaced by a typed placeholder, `[pii:email:<12 hex>]` or
//! `[secret:openai_key:<12 hex>]`: the kind, and the first 12 hex digits of
//! HMAC-SHA256(key, normalised value), so that two records of one value can be correlated
//! without the record revealing it (nor letting a reader test guesses without the key).
//!
//! The key is the sidecar's own: 32 random bytes from the operating system, created once in
//! the spool directory as `redaction.key` (mode 0600) and read back on every start, so hashes
//! stay comparable across restarts of one sidecar. It never leaves the host and is in no
//! record.

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::detect::{pii, secrets};
use crate::policy::model::Inspection;

/// The key file's name inside the spool directory.
pub const KEY_FILE: &str = "redaction.key";

/// A redaction key (HMAC-SHA256 key).
pub type Key = [u8; 32];

/// `text` with every span its `inspection` does not allow in clear replaced by a placeholder.
pub fn redact(text: &str, inspection: &Inspection, key: &Key) -> String {
    let mut spans: Vec<(usize, usize, String)> = Vec::new();
    if !inspection.pii {
        for h in pii::scan(text) {
            let v = &text[h.start..h.end];
            let tag = tag(key, &normalise_pii(v));
            spans.push((h.start, h.end, format!("[pii:{}:{tag}]", h.kind.as_str())));
        }
    }
    if !inspection.secrets {
        for h in secrets::scan(text) {
            let v = &text[h.start..h.end];
            let tag = tag(key, v.trim());
            spans.push((
                h.start,
                h.end,
                format!("[secret:{}:{tag}]", h.kind.as_str()),
            ));
        }
    }
    if spans.is_empty() {
        return text.to_string();
    }
    // Earliest first, the longer of two that start together; an overlapping span joins the
    // one before it (the text it covers is dropped either way).
    spans.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, placeholder) in spans {
        if start < at {
            at = at.max(end);
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(&placeholder);
        at = end;
    }
    out.push_str(&text[at.min(text.len())..]);
    out
}

/// One value as its kind's equal values share it: lower case, and for everything but an
/// address only its letters and digits (`+1 (555) 010-9999` and `15550109999` are one phone).
fn normalise_pii(v: &str) -> String {
    let v = v.trim().to_lowercase();
    if v.contains('@') {
        v
    } else {
        v.chars().filter(|c| c.is_alphanumeric()).collect()
    }
}

/// The first 12 hex digits of HMAC-SHA256(key, value).
fn tag(key: &Key, value: &str) -> String {
    let mac = hmac_sha256(key, value.as_bytes());
    mac[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 (RFC 2104) over a 32-byte key: two SHA-256 passes.
pub fn hmac_sha256(key: &Key, msg: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize();
    outer.into()
}

/// The spool directory's redaction key, created (32 bytes from `/dev/urandom`, mode 0600)
/// when there is none yet.
pub fn load_or_create(dir: &Path) -> std::io::Result<Key> {
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            return bytes.as_slice().try_into().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not 32 bytes", path.display()),
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let tmp = dir.join(format!("{KEY_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = opts.open(&tmp)?;
    f.write_all(&key)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insp(pii: bool, secrets: bool) -> Inspection {
        Inspection {
            prompts: true,
            responses: true,
            pii,
            secrets,
        }
    }

    #[test]
    fn hmac_matches_rfc4231_shape() {
        // RFC 4231 test case 2 uses a 4-byte key; with a 32-byte key check against a known
        // value computed independently: HMAC-SHA256(0x0b * 32, "Hi There").
        let key = [0x0bu8; 32];
        let mac = hmac_sha256(&key, b"Hi There");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    #[test]
    fn pii_off_replaces_addresses_with_one_tag_per_value() {
        let key = [7u8; 32];
        let t = "mail jane.doe@example.com or JANE.DOE@example.com, not bob@example.org";
        let r = redact(t, &insp(false, true), &key);
        assert!(!r.contains("jane.doe"), "{r}");
        assert!(!r.contains("bob@"), "{r}");
        let tags: Vec<&str> = r.matches("[pii:email:").collect();
        assert_eq!(tags.len(), 3, "{r}");
        let a = &r[r.find("[pii:email:").unwrap()..][..24];
        assert_eq!(r.matches(a).count(), 2, "{r}");
        assert!(r.starts_with("mail [pii:email:"));
        assert_eq!(redact(t, &insp(true, true), &key), t);
    }

    #[test]
    fn secrets_off_replaces_keys_and_keys_differ() {
        let t = "key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD end";
        let r = redact(t, &insp(true, false), &[1u8; 32]);
        assert!(!r.contains("sk-proj-abc"), "{r}");
        assert!(r.contains("[secret:openai_key:"), "{r}");
        assert!(r.ends_with(" end"));
        let other = redact(t, &insp(true, false), &[2u8; 32]);
        assert_ne!(r, other, "the tag depends on the key");
        assert_eq!(redact(t, &insp(true, true), &[1u8; 32]), t);
    }

    #[test]
    fn key_is_created_once_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("warden-redact-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = load_or_create(&dir).unwrap();
        let b = load_or_create(&dir).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, [0u8; 32]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
