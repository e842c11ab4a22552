//! What `warden policy apply|list|…` and `warden ops …` share: where the service (or one
//! sidecar's admin port) is, the admin token, gRPC errors said plainly, tables.

use std::path::PathBuf;

use clap::Args;

use super::CliError;

/// Where to send the command, and with which token.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// The policy service's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:15010")]
    pub server: String,
    /// A file holding the admin token (else `WARDEN_ADMIN_TOKEN`, else `.warden/dev/admin-token`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Where the token was looked for, for the error that says none was found.
const DEV_TOKEN: &str = ".warden/dev/admin-token";

pub fn token(file: Option<&PathBuf>) -> Result<String, CliError> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f).map_err(|source| CliError::Read {
            path: f.display().to_string(),
            source,
        })?;
        return Ok(t.trim().to_string());
    }
    if let Ok(t) = std::env::var(crate::sidecar::config::ENV_ADMIN_TOKEN) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    match std::fs::read_to_string(DEV_TOKEN) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => Err(CliError::Usage(format!(
            "no admin token: set {} or pass --token-file FILE (`warden dev` writes {DEV_TOKEN})",
            crate::sidecar::config::ENV_ADMIN_TOKEN
        ))),
    }
}

/// A gRPC request with the token and the caller's name (recorded beside the token).
pub fn request<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    let user = std::env::var("USER").unwrap_or_default();
    if let Ok(v) = user.parse() {
        if !user.is_empty() {
            r.metadata_mut().insert("x-warden-actor", v);
        }
    }
    r
}

/// A channel to the service; an address that does not answer says how to start one.
pub async fn channel(server: &str) -> Result<tonic::transport::Channel, CliError> {
    let ep = tonic::transport::Endpoint::from_shared(server.to_string())
        .map_err(|e| CliError::Usage(format!("--server `{server}`: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(3));
    ep.connect().await.map_err(|e| {
        CliError::Usage(format!(
            "cannot reach the policy service at {server} ({e}); is it running? (`warden dev` starts one; else pass --server URL)"
        ))
    })
}

/// A refusal from the service, said with its code and what to do.
pub fn status_error(s: tonic::Status) -> CliError {
    let code = s
        .metadata()
        .get("warden-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let hint = match s.code() {
        tonic::Code::Unauthenticated => {
            " (check the admin token: WARDEN_ADMIN_TOKEN or --token-file)"
        }
        tonic::Code::Unavailable => " (the service or its store is unreachable; retry)",
        _ => "",
    };
    if code.is_empty() {
        CliError::Usage(format!("{}{hint}", s.message()))
    } else {
        CliError::Usage(format!("{code}: {}{hint}", s.message()))
    }
}

/// A runtime for one command.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the runtime: {e}")))?;
    Ok(rt.block_on(f))
}

/// Rows as a table with a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// Milliseconds since the epoch as a UTC time.
pub fn when(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A snapshot hash shortened for a table.
pub fn short(hash: &str) -> String {
    match hash.strip_prefix("sha256:") {
        Some(h) if h.len() > 12 => format!("sha256:{}", &h[..12]),
        _ => hash.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns() {
        let t = table(
            &["ID", "STATUS"],
            &[
                vec!["p1".into(), "active".into()],
                vec!["p100-llm".into(), "draft".into()],
            ],
        );
        assert_eq!(t, "ID        STATUS\np1        active\np100-llm  draft\n");
        assert_eq!(short("sha256:0123456789abcdef"), "sha256:0123456789ab");
        assert_eq!(when(0), "-");
    }
}
