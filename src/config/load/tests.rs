use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::config::Auth;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn defaults_are_zero_config_loopback() {
    let c = load_from_str("", None, &env(&[])).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8088");
    assert_eq!(c.server.data_dir, PathBuf::from(".spur"));
    assert_eq!(c.limits.timeout_ms, 30_000);
}

#[test]
fn interpolates_and_overrides_set_by_env() {
    let text = r#"
        [segment]
        webhook_secret = "${HOOK}"
        write_key = "${WK:-fallback}"
        [connections.slack]
        base_url = "https://slack.com/api"
        bearer = "${SLACK}"
    "#;
    let c = load_from_str(
        text,
        None,
        &env(&[
            ("HOOK", "h1"),
            ("SLACK", "xoxb"),
            ("SPUR_SERVER_LISTEN", "127.0.0.1:9999"),
        ]),
    )
    .unwrap();
    assert_eq!(c.segment.webhook_secret.unwrap().expose(), "h1");
    assert_eq!(c.segment.write_key.unwrap().expose(), "fallback");
    assert_eq!(c.server.listen.port(), 9999);
    assert!(matches!(&c.connections["slack"].auth, Auth::Bearer(t) if t.expose() == "xoxb"));
}

#[test]
fn reports_every_problem_with_file_and_key() {
    let text = r#"
        [server]
        listen = "nowhere"
        colour = "blue"
        [limits]
        timeout_ms = "soon"
        [segment]
        webhook_secret = "${MISSING}"
        [bogus]
        [store]
        backend = "postgres"
    "#;
    let err = load_from_str(
        text,
        Some(Path::new("spur.toml")),
        &env(&[("SPUR_RETRY_MAX_ATTEMPTS", "lots")]),
    )
    .unwrap_err();
    let all = err.to_string();
    for needle in [
        "spur.toml: server.listen: expected host:port",
        "spur.toml: server.colour: unknown key",
        "spur.toml: limits.timeout_ms: expected an integer",
        "spur.toml: segment.webhook_secret: environment variable MISSING is not set",
        "spur.toml: bogus: unknown section",
        "spur.toml: store.backend: expected \"sled\"",
        "SPUR_RETRY_MAX_ATTEMPTS (retry.max_attempts): expected an integer",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert_eq!(err.problems.len(), 7, "{all}");
}

#[test]
fn refuses_public_listen_without_admin_token() {
    let err = load_from_str("[server]\nlisten = \"0.0.0.0:8088\"", None, &env(&[])).unwrap_err();
    assert!(err.to_string().contains("set admin.token"));
    let ok = load_from_str(
        "[server]\nlisten = \"0.0.0.0:8088\"\n[admin]\ntoken = \"t\"",
        None,
        &env(&[]),
    );
    assert!(ok.is_ok());
}

#[test]
fn connection_needs_base_url_and_valid_patterns() {
    let err = load_from_str(
        "[connections.x]\nbearer = \"t\"\nrequire_approval = [\"delete\"]",
        None,
        &env(&[]),
    )
    .unwrap_err();
    let all = err.to_string();
    assert!(all.contains("connections.x.base_url: is required"), "{all}");
    assert!(all.contains("connections.x.require_approval"), "{all}");
}

#[test]
fn approval_email_needs_a_sender_and_encryption_beyond_this_machine() {
    let c = load_from_str(
        "[approvals.email]\nhost = \"smtp.example.com\"\nfrom = \"spur <a@example.com>\"\nuser = \"u\"\npassword = \"p\"\nto = [\"dpo@example.com\"]",
        None,
        &env(&[]),
    )
    .unwrap();
    let e = c.approvals.email.unwrap();
    assert_eq!(
        (e.port, e.security),
        (587, crate::config::SmtpSecurity::StartTls)
    );
    assert_eq!(e.to, ["dpo@example.com"]);
    let err = load_from_str(
        "[approvals.email]\nhost = \"smtp.example.com\"\nsecurity = \"none\"\nto = [\"not-an-address\"]\nuser = \"u\"",
        None,
        &env(&[]),
    )
    .unwrap_err()
    .to_string();
    for problem in [
        "approvals.email.from: is required",
        "approvals.email.security: \"none\" sends the password",
        "approvals.email.to: \"not-an-address\" is not an email address",
        "approvals.email.password: user and password go together",
    ] {
        assert!(err.contains(problem), "{problem} in {err}");
    }
    // To a relay on this machine, plain SMTP is allowed.
    let c = load_from_str(
        "[approvals.email]\nhost = \"127.0.0.1\"\nsecurity = \"none\"\nfrom = \"a@example.com\"",
        None,
        &env(&[]),
    )
    .unwrap();
    assert_eq!(c.approvals.email.unwrap().port, 25);
}

#[test]
fn nats_settings_are_read_and_checked_before_any_connection() {
    use crate::config::{NatsAuth, StoreBackend};
    let c = load_from_str(
        "[store]\nbackend = \"nats\"\n[nats]\nservers = [\"nats://a:4222\", \"tls://b:4222\"]\nreplicas = 3\nprefix = \"acme-prod\"\nuser = \"spur\"\npassword = \"hunter2\"\n[nats.tls]\nca = \"/etc/ca.pem\"",
        None,
        &env(&[]),
    )
    .unwrap();
    assert_eq!(c.store, StoreBackend::Nats);
    assert_eq!(c.nats.servers, ["nats://a:4222", "tls://b:4222"]);
    assert_eq!((c.nats.replicas, c.nats.prefix.as_str()), (3, "acme-prod"));
    assert!(matches!(&c.nats.auth, NatsAuth::UserPassword { user, .. } if user == "spur"));
    assert_eq!(
        c.nats.tls.as_ref().unwrap().ca.as_deref(),
        Some(Path::new("/etc/ca.pem"))
    );
    assert!(c.secrets().contains(&"hunter2".to_owned()));
    // From the environment: the usual comma-separated list.
    let c = load_from_str(
        "",
        None,
        &env(&[("SPUR_NATS_SERVERS", "nats://a:4222, nats://b:4222")]),
    )
    .unwrap();
    assert_eq!(c.nats.servers, ["nats://a:4222", "nats://b:4222"]);

    let err = load_from_str(
        "[nats]\nservers = [\"ws://a:80\"]\nreplicas = 7\nprefix = \"a.b\"\ntoken = \"t\"\ncreds = \"x.creds\"\nuser = \"u\"\n[nats.tls]\ncert = \"c.pem\"",
        None,
        &env(&[]),
    )
    .unwrap_err()
    .to_string();
    for problem in [
        "nats.servers: \"ws://a:80\": expected a nats:// or tls:// URL",
        "nats.replicas: 7 is out of range (1..=5)",
        "nats.prefix: \"a.b\": expected 1 to 32 letters, digits, '_' or '-'",
        "nats.token: creds, token and user/password exclude each other",
        "nats.password: user and password go together",
        "nats.tls.key: cert and key go together",
    ] {
        assert!(err.contains(problem), "{problem} in {err}");
    }
}
