//! HTTPS served by the daemon itself: `[server.tls]` through the real binary, a
//! certificate renewed on disk taking effect without a restart, and the warning a
//! plain-HTTP listener beyond loopback logs.
//! Run with: cargo nextest run --test tls

mod common;

use std::path::Path;

use common::{Daemon, base_config};

/// A fresh self-signed certificate for 127.0.0.1 and localhost: (cert PEM, key PEM).
fn self_signed() -> (String, String) {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

/// A client that trusts only `cert`, opening a new connection per request.
fn trusting(cert: &str) -> reqwest::Client {
    spur::connectors::http::install_crypto_provider();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).unwrap()])
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_https_and_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = self_signed();
    write_pair(dir.path(), &first);
    std::fs::write(
        dir.path().join("spur.toml"),
        base_config(
            dir.path(),
            "[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
        ),
    )
    .unwrap();
    let daemon = Daemon::start(dir.path());
    assert!(
        daemon.base.starts_with("https://127.0.0.1:"),
        "{}",
        daemon.base
    );
    let health = format!("{}/healthz", daemon.base);
    let r = trusting(&first.0).get(&health).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Plain HTTP on the same port gets no answer.
    let plain = health.replace("https://", "http://");
    assert!(common::client().get(&plain).send().await.is_err());

    // Renewed on disk: the next connection presents the new certificate.
    let second = self_signed();
    write_pair(dir.path(), &second);
    let r = trusting(&second.0).get(&health).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        trusting(&first.0).get(&health).send().await.is_err(),
        "the old one is gone"
    );

    // A broken renewal keeps the working pair.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    let r = trusting(&second.0).get(&health).send().await.unwrap();
    assert_eq!(r.status(), 200);
    daemon.kill9();
}

#[test]
fn a_bad_certificate_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "nope").unwrap();
    std::fs::write(dir.path().join("key.pem"), "nope").unwrap();
    std::fs::write(
        dir.path().join("spur.toml"),
        base_config(
            dir.path(),
            "[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spur"))
        .arg("--config")
        .arg(dir.path().join("spur.toml"))
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.tls.cert"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_beyond_loopback_logs_a_warning_naming_the_risk() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spur.toml"),
        base_config(dir.path(), "").replace("127.0.0.1:0", "0.0.0.0:0"),
    )
    .unwrap();
    let daemon = Daemon::start_logging(dir.path(), "spur=warn");
    daemon.kill9();
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("Serving plain HTTP beyond loopback: tokens, customer data and approval links cross the network unencrypted"),
        "{log}"
    );
}
