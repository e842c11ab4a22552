//! A real TLS upstream for the tests: a test CA made with rcgen, leaf certificates (valid,
//! expired, for another name) signed by it or by another CA, and a TLS front on 127.0.0.1:0
//! that completes the handshake with one of them and then passes the bytes to a plain mock.
//! "The upstream never saw a request" is the mock's count; the front counts handshakes and
//! keeps each failed handshake's error (the alert the sidecar sent says why it refused).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

/// A test certificate authority.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses); `expired` puts its
    /// validity wholly in the past.
    pub fn leaf(&self, names: &[&str], expired: bool) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// Its certificate as a PEM file in `dir`.
    pub fn write(&self, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, &self.pem).unwrap();
        p
    }
}

/// A TLS server in front of a plain upstream.
pub struct Front {
    pub addr: SocketAddr,
    backend: Arc<Mutex<Option<SocketAddr>>>,
    handshakes: Arc<Mutex<usize>>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Front {
    /// A front presenting `leaf`; it passes bytes on once told where ([`Front::forward_to`]).
    pub async fn start(leaf: Leaf) -> Front {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert], leaf.key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let handshakes: Arc<Mutex<usize>> = Arc::default();
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let (b, h, f) = (backend.clone(), handshakes.clone(), failures.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, b, h, f) = (acceptor.clone(), b.clone(), h.clone(), f.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(stream).await {
                        Ok(t) => t,
                        Err(e) => {
                            f.lock().unwrap().push(e.to_string());
                            return;
                        }
                    };
                    *h.lock().unwrap() += 1;
                    let Some(to) = *b.lock().unwrap() else { return };
                    let Ok(mut plain) = TcpStream::connect(to).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Front {
            addr,
            backend,
            handshakes,
            failures,
            task,
        }
    }

    pub fn forward_to(&self, to: SocketAddr) {
        *self.backend.lock().unwrap() = Some(to);
    }

    /// Handshakes completed.
    pub fn handshakes(&self) -> usize {
        *self.handshakes.lock().unwrap()
    }

    /// The errors of the handshakes that failed.
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
}

/// Which of the contract bundle's connectors is put behind the TLS front.
#[derive(Clone, Copy, Debug)]
pub enum Channel {
    /// The LLM connector (`openai`), in front of the LLM mock.
    Llm,
    /// The HTTP connector `weather`, in front of the weather mock.
    Http,
}

/// `base_url: "http://127.0.0.1:PORT` of the `nth` connector with a base URL → `https://` on
/// `port` (the path after it kept).
fn to_https(bundle: &str, nth: usize, port: u16) -> String {
    const AT: &str = "base_url: \"http://127.0.0.1:";
    let mut from = 0;
    for _ in 0..nth {
        from += bundle[from..].find(AT).unwrap() + AT.len();
    }
    let start = from + bundle[from..].find(AT).unwrap();
    let digits = start + AT.len();
    let end = digits
        + bundle[digits..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap();
    format!(
        "{}base_url: \"https://127.0.0.1:{port}{}",
        &bundle[..start],
        &bundle[end..]
    )
}

/// A sidecar on the contract bundle with `channel`'s connector at `https://127.0.0.1:PORT`,
/// a TLS front presenting `leaf` there (passing on to that channel's mock), and `trust`'s
/// certificate in `upstream_tls.ca_files` when given.
pub async fn sidecar_behind(
    name: &str,
    leaf: Leaf,
    channel: Channel,
    trust: Option<&Ca>,
) -> (crate::common::Env, Front) {
    let front = Front::start(leaf).await;
    let port = front.addr.port();
    let nth = match channel {
        Channel::Llm => 0,
        Channel::Http => 1,
    };
    let ca_dir = crate::common::tmpdir(&format!("{name}-ca"));
    let ca_line = trust.map(|ca| {
        let p = ca.write(&ca_dir, "ca.pem");
        format!("upstream_tls: {{ ca_files: [\"{}\"] }}\n", p.display())
    });
    let env = crate::common::start_with(
        name,
        move |b| to_https(&b, nth, port),
        move |c| format!("{c}{}", ca_line.clone().unwrap_or_default()),
    )
    .await;
    front.forward_to(match channel {
        Channel::Llm => env.llm.addr,
        Channel::Http => env.weather.addr,
    });
    (env, front)
}

/// One call on `channel`: a chat completion, or a GET of the weather connector.
async fn call(env: &crate::common::Env, channel: Channel) -> crate::common::Resp {
    use crate::common::*;
    match channel {
        Channel::Llm => {
            env.chat(None, chat_body("gpt-4o-mini", "hi", false, Some(2)))
                .await
        }
        Channel::Http => {
            send(
                http::Request::get(env.agent_url("/http/weather/v1/forecast/oslo"))
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            )
            .await
        }
    }
}

/// Every TLS case of an upstream on `channel`: a certificate for 127.0.0.1 from a CA in
/// `upstream_tls.ca_files` passes; the same without the setting, an expired one, one from
/// another CA and one for another host name are `upstream_error` with their record, the TLS
/// handshake refused by the sidecar for that reason (the alert it sent), and nothing reaching
/// the upstream.
pub async fn every_case(channel: Channel) {
    let ca = Ca::new("Warden test CA");
    let other = Ca::new("Another test CA");
    let loopback = ["127.0.0.1", "localhost"];
    let cases = [
        ("valid", ca.leaf(&loopback, false), Some(&ca), None),
        (
            "private CA not configured",
            ca.leaf(&loopback, false),
            None,
            Some("UnknownCA"),
        ),
        (
            "expired",
            ca.leaf(&loopback, true),
            Some(&ca),
            Some("CertificateExpired"),
        ),
        (
            "another CA",
            other.leaf(&loopback, false),
            Some(&ca),
            Some("UnknownCA"),
        ),
        (
            "another host name",
            ca.leaf(&["upstream.example"], false),
            Some(&ca),
            Some("BadCertificate"),
        ),
    ];
    for (i, (what, leaf, trust, alert)) in cases.into_iter().enumerate() {
        let what = format!("{channel:?}: {what}");
        let (env, front) = sidecar_behind(&format!("tls-{i}"), leaf, channel, trust).await;
        let r = call(&env, channel).await;
        let seen = match channel {
            Channel::Llm => env.llm.request_count(),
            Channel::Http => env.weather.request_count(),
        };
        match alert {
            None => {
                assert_eq!(r.status, 200, "{what}: {}", r.text());
                assert_eq!(seen, 1, "{what}: the call reached the upstream over TLS");
                assert!(front.handshakes() >= 1, "{what}");
                let rec = env
                    .record_of(&r.header("x-warden-decision-id").unwrap())
                    .await;
                assert_eq!(
                    rec.outcome,
                    Some(warden::evidence::Outcome::Allowed),
                    "{what}"
                );
            }
            Some(alert) => {
                env.assert_refused_for(&what, &r, 502, "upstream_error")
                    .await;
                assert_eq!(seen, 0, "{what}: the upstream saw a request");
                assert_eq!(front.handshakes(), 0, "{what}: a handshake completed");
                // The front records a failed handshake on its own task: wait for it.
                crate::common::wait_until(
                    &format!("{what}: the front's handshake failure"),
                    Duration::from_secs(5),
                    || !front.failures().is_empty(),
                )
                .await;
                let failures = front.failures();
                assert!(
                    !failures.is_empty() && failures.iter().all(|f| f.contains(alert)),
                    "{what}: want the sidecar to refuse the certificate with {alert}: {failures:?}"
                );
            }
        }
    }
}
