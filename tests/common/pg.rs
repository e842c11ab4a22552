//! A throwaway PostgreSQL cluster for the tests: `initdb` + `pg_ctl` into a temp dir, on a free
//! loopback port, stopped and removed when dropped. The binaries come from PATH or
//! `/usr/lib/postgresql/*/bin`. When none is installed and we are root with apt, the
//! `postgresql` package is installed (once, under a lock); otherwise the test says exactly what
//! to install — and with `WARDEN_REQUIRE_POSTGRES=1` (CI) it fails rather than skips.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pg {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    user: Option<&'static str>,
}

fn find_bin() -> Option<PathBuf> {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !p.is_empty() {
            return Path::new(&p).parent().map(Path::to_path_buf);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn install() {
    let lock = std::fs::File::create(std::env::temp_dir().join("warden-pg-install.lock")).unwrap();
    lock.lock().unwrap();
    if find_bin().is_some() {
        return;
    }
    eprintln!("installing PostgreSQL for the tests (apt-get install postgresql, once)");
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "postgresql"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
}

fn run(bin: &Path, user: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut c = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    c.args(args).output().unwrap()
}

impl Pg {
    /// A running cluster, or `None` (after a loud notice) when PostgreSQL is not installed
    /// and cannot be; panics instead when `WARDEN_REQUIRE_POSTGRES=1`.
    pub fn start() -> Option<Pg> {
        let mut bin = find_bin();
        if bin.is_none() && is_root() && Path::new("/usr/bin/apt-get").exists() {
            install();
            bin = find_bin();
        }
        let Some(bin) = bin else {
            let msg = "PostgreSQL is not installed: install the `postgresql` package \
                       (Debian/Ubuntu: apt-get install postgresql) to run the SQL tests";
            if std::env::var("WARDEN_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("{msg} (WARDEN_REQUIRE_POSTGRES=1)");
            }
            eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
            return None;
        };
        // PostgreSQL refuses to run as root: run it as `postgres` then.
        let user = is_root().then_some("postgres");
        let dir = std::env::temp_dir().join(format!("warden-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(u) = user {
            assert!(Command::new("chown")
                .args([&format!("{u}:{u}"), dir.to_str().unwrap()])
                .status()
                .unwrap()
                .success());
        }
        let data = dir.join("data");
        let out = run(
            &bin.join("initdb"),
            user,
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            dir.display()
        );
        let out = run(
            &bin.join("pg_ctl"),
            user,
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                dir.join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        Some(Pg {
            dir,
            port,
            bin,
            user,
        })
    }

    /// A URL for `user` (trust auth: any password is accepted, which lets a test check that a
    /// password never shows).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:pw-must-not-leak@127.0.0.1:{}/{db}",
            self.port
        )
    }

    pub fn stop(&self) {
        let data = self.dir.join("data");
        let _ = run(
            &self.bin.join("pg_ctl"),
            self.user,
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    pub fn restart(&self) {
        let data = self.dir.join("data");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let out = run(
            &self.bin.join("pg_ctl"),
            self.user,
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        assert!(out.status.success(), "pg_ctl restart");
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
