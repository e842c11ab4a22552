//! Snapshots on disk, by hash: the sidecar's last-known-good cache and what `evidence replay`
//! reads to judge a recorded call again by the snapshot that judged it.
//!
//! A stored snapshot is the bundle source (all files joined into one YAML stream), written as
//! `<hex>.yaml`, or — for a snapshot from the policy service — its sources and policy lifecycle
//! ([`super::overlay::Bundle`]) as `<hex>.json`; loading compiles it again and refuses it
//! unless it hashes to its name.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{compile_sources, Snapshot, Source};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("stored snapshot {hash} does not compile: {first}")]
    Invalid { hash: String, first: String },
    #[error("stored snapshot file for {expected} hashes to {actual}")]
    HashMismatch { expected: String, actual: String },
    #[error("no snapshot {0} in the store")]
    Missing(String),
}

/// A directory of snapshots by hash.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

const LAST_KNOWN_GOOD: &str = "last-known-good";

fn file_stem(hash: &str) -> &str {
    hash.strip_prefix("sha256:").unwrap_or(hash)
}

impl SnapshotStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SnapshotStore { dir: dir.into() }
    }

    fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    fn path_of(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{}.yaml", file_stem(hash)))
    }

    /// Join bundle sources into one YAML stream.
    pub fn join(sources: &[Source]) -> String {
        let mut out = String::new();
        for s in sources {
            if !out.is_empty() {
                out.push_str("---\n");
            }
            out.push_str(&format!("# source: {}\n", s.name));
            out.push_str(&s.text);
            if !s.text.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// Store the sources of `snap` (atomically: temp file, fsync, rename) and return its path.
    pub fn save(&self, snap: &Snapshot, sources: &[Source]) -> Result<PathBuf, StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Self::io(&self.dir, e))?;
        let text = Self::join(sources);
        // The joined text must be the same snapshot, or the store would lie.
        let again = compile_sources(&[Source {
            name: "joined".into(),
            text: text.clone(),
        }])
        .map_err(|e| StoreError::Invalid {
            hash: snap.hash().to_string(),
            first: e.first().map(|e| e.to_string()).unwrap_or_default(),
        })?;
        if again.hash() != snap.hash() {
            return Err(StoreError::HashMismatch {
                expected: snap.hash().to_string(),
                actual: again.hash().to_string(),
            });
        }
        let path = self.path_of(snap.hash());
        write_atomic(&path, text.as_bytes()).map_err(|e| Self::io(&path, e))?;
        Ok(path)
    }

    /// Store a policy-service snapshot (atomically) after checking it compiles to `snap`.
    pub fn save_bundle(
        &self,
        snap: &Snapshot,
        bundle: &super::overlay::Bundle,
    ) -> Result<PathBuf, StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Self::io(&self.dir, e))?;
        let path = self.dir.join(format!("{}.json", file_stem(snap.hash())));
        let text = serde_json::to_vec(bundle).map_err(|e| StoreError::Invalid {
            hash: snap.hash().to_string(),
            first: e.to_string(),
        })?;
        write_atomic(&path, &text).map_err(|e| Self::io(&path, e))?;
        Ok(path)
    }

    fn load_bundle(&self, hash: &str, path: &Path) -> Result<Snapshot, StoreError> {
        let bytes = std::fs::read(path).map_err(|e| Self::io(path, e))?;
        let invalid = |first: String| StoreError::Invalid {
            hash: hash.to_string(),
            first,
        };
        let bundle: super::overlay::Bundle =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        let snap = bundle
            .compile()
            .map_err(|e| invalid(e.first().map(|e| e.to_string()).unwrap_or_default()))?;
        if &**snap.hash() != hash {
            return Err(StoreError::HashMismatch {
                expected: hash.to_string(),
                actual: snap.hash().to_string(),
            });
        }
        Ok(snap)
    }

    /// Load and verify a snapshot by hash.
    pub fn load(&self, hash: &str) -> Result<Snapshot, StoreError> {
        let json = self.dir.join(format!("{}.json", file_stem(hash)));
        if json.exists() {
            return self.load_bundle(hash, &json);
        }
        let path = self.path_of(hash);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(hash.to_string()))
            }
            Err(e) => return Err(Self::io(&path, e)),
        };
        let snap = compile_sources(&[Source {
            name: path.display().to_string().into(),
            text,
        }])
        .map_err(|e| StoreError::Invalid {
            hash: hash.to_string(),
            first: e.first().map(|e| e.to_string()).unwrap_or_default(),
        })?;
        if &**snap.hash() != hash {
            return Err(StoreError::HashMismatch {
                expected: hash.to_string(),
                actual: snap.hash().to_string(),
            });
        }
        Ok(snap)
    }

    /// Remember `hash` as the last snapshot that was verified and served.
    pub fn set_last_known_good(&self, hash: &str) -> Result<(), StoreError> {
        let path = self.dir.join(LAST_KNOWN_GOOD);
        write_atomic(&path, hash.as_bytes()).map_err(|e| Self::io(&path, e))
    }

    /// The last-known-good snapshot, verified, if there is one.
    pub fn last_known_good(&self) -> Result<Option<Snapshot>, StoreError> {
        let path = self.dir.join(LAST_KNOWN_GOOD);
        match std::fs::read_to_string(&path) {
            Ok(h) => self.load(h.trim()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(&path, e)),
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: &str = include_str!("../../examples/contract/bundle.yaml");

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("warden-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_load_and_last_known_good() {
        let dir = tmp("lkg");
        let store = SnapshotStore::new(&dir);
        assert!(store.last_known_good().unwrap().is_none());
        let docs: Vec<&str> = CONTRACT.split("---\n").collect();
        let sources = vec![
            Source {
                name: "a.yaml".into(),
                text: docs[..4].join("---\n"),
            },
            Source {
                name: "b.yaml".into(),
                text: docs[4..].join("---\n"),
            },
        ];
        let snap = compile_sources(&sources).unwrap();
        store.save(&snap, &sources).unwrap();
        store.set_last_known_good(snap.hash()).unwrap();
        let back = store.last_known_good().unwrap().unwrap();
        assert_eq!(back.hash(), snap.hash());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_tampered_store_file_is_refused() {
        let dir = tmp("tamper");
        let store = SnapshotStore::new(&dir);
        let sources = vec![Source {
            name: "c.yaml".into(),
            text: CONTRACT.into(),
        }];
        let snap = compile_sources(&sources).unwrap();
        let path = store.save(&snap, &sources).unwrap();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("max: 2000", "max: 9999999");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            store.load(snap.hash()),
            Err(StoreError::HashMismatch { .. })
        ));
        assert!(matches!(
            store.load("sha256:00"),
            Err(StoreError::Missing(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
