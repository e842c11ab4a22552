//! Identifiers minted per call: decision, evidence, run and step ids.
//!
//! UUIDs whose random bits come from a fast per-thread generator (`fastrand`, seeded per
//! thread) instead of the operating system: three `getrandom` system calls a call were a
//! measurable share of the request path. These ids must be unique, not secret; identifiers
//! that guard something (approval ids, the dev admin token) still come from the OS.

use uuid::{Builder, Uuid};

/// A version 7 UUID (time-ordered) for now.
pub fn v7() -> Uuid {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    random[8..].copy_from_slice(&fastrand::u16(..).to_le_bytes());
    Builder::from_unix_timestamp_millis(ms, &random).into_uuid()
}

/// A version 4 (random) UUID.
pub fn v4() -> Uuid {
    Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_well_formed_and_distinct() {
        let (a, b) = (v7(), v7());
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 7);
        assert!(a.get_timestamp().is_some());
        let (c, d) = (v4(), v4());
        assert_ne!(c, d);
        assert_eq!(c.get_version_num(), 4);
        assert_eq!(c.get_variant(), uuid::Variant::RFC4122);
    }
}
