//! HTTPS served by the daemon itself (`[server.tls] cert`, `key`; rustls).
//!
//! Handshakes run in their own tasks (at most [`HANDSHAKE_TIME`] each), so a slow
//! or silent client never holds up the others; only finished handshakes reach the
//! HTTP server. The certificate and key files are looked at before each new
//! connection: when either changed on disk (a renewal), they are loaded again, and
//! a pair that does not load is logged and the previous one kept.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a TLS handshake may take.
const HANDSHAKE_TIME: Duration = Duration::from_secs(10);

/// The certificate and key, reloaded when their files change.
struct Certs {
    cert: PathBuf,
    key: PathBuf,
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
    acceptor: ArcSwap<TlsAcceptor>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    crate::connectors::http::install_crypto_provider();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("server.tls.cert: reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "server.tls.cert: {} is not a PEM certificate chain",
                cert.display()
            )
        })?;
    anyhow::ensure!(
        !chain.is_empty(),
        "server.tls.cert: {} holds no certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("server.tls.key: {} holds no PEM private key", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("server.tls: the key does not match the certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Certs {
    fn open(cert: PathBuf, key: PathBuf) -> anyhow::Result<Self> {
        let acceptor = load(&cert, &key)?;
        Ok(Self {
            seen: Mutex::new((modified(&cert), modified(&key))),
            acceptor: ArcSwap::from_pointee(acceptor),
            cert,
            key,
        })
    }

    /// The acceptor for the next connection, reloaded first if the files changed.
    fn current(&self) -> Arc<TlsAcceptor> {
        let now = (modified(&self.cert), modified(&self.key));
        let changed = {
            let mut seen = self.seen.lock();
            let changed = *seen != now;
            *seen = now;
            changed
        };
        if changed {
            match load(&self.cert, &self.key) {
                Ok(a) => {
                    self.acceptor.store(Arc::new(a));
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded.");
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "TLS certificate not reloaded; the previous one stays.");
                }
            }
        }
        self.acceptor.load_full()
    }
}

/// A listener whose connections are TLS streams, for `axum::serve`.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS on `tcp` with the pair at `cert` and `key`.
    ///
    /// # Errors
    /// When the files do not hold a usable certificate chain and key.
    pub(crate) fn new(tcp: TcpListener, cert: PathBuf, key: PathBuf) -> anyhow::Result<Self> {
        let certs = Arc::new(Certs::open(cert, key)?);
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "Accepting a connection failed.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let acceptor = certs.current();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIME, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed."),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out."),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task ended (the runtime shuts down): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
