//! Credential references (`env:NAME`, `file:PATH`), resolved by the sidecar and never shown
//! to the agent.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredError {
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    #[error("cannot read credential file `{path}`: {why}")]
    File { path: String, why: String },
    #[error("`{0}` is not a credential reference (use env:NAME or file:PATH)")]
    NotAReference(String),
}

/// Resolve a reference. Files are read relative to `base` when relative; one trailing newline
/// is dropped (mounted secrets usually end in one).
pub fn resolve(reference: &str, base: &Path) -> Result<String, CredError> {
    if let Some(name) = reference.strip_prefix("env:") {
        return std::env::var(name).map_err(|_| CredError::MissingEnv(name.to_string()));
    }
    if let Some(file) = reference.strip_prefix("file:") {
        let path = base.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| CredError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        return Ok(text.to_string());
    }
    Err(CredError::NotAReference(reference.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_file_references() {
        std::env::set_var("WARDEN_TEST_CRED_X", "s3cret");
        assert_eq!(
            resolve("env:WARDEN_TEST_CRED_X", Path::new(".")).unwrap(),
            "s3cret"
        );
        assert!(matches!(
            resolve("env:WARDEN_TEST_NOPE_Y", Path::new(".")),
            Err(CredError::MissingEnv(_))
        ));
        let dir = std::env::temp_dir().join(format!("warden-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k"), "abc\n").unwrap();
        assert_eq!(resolve("file:k", &dir).unwrap(), "abc");
        assert!(matches!(
            resolve("file:none", &dir),
            Err(CredError::File { .. })
        ));
        assert!(matches!(
            resolve("sk-123", &dir),
            Err(CredError::NotAReference(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
