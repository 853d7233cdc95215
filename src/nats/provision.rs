//! spur's stream: the settings it needs, created when absent, checked when present.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream};

use super::PARTITIONS;
use crate::config::NatsConfig;

/// Metadata key holding the partition count of the event log.
const PARTITIONS_KEY: &str = "spur.partitions";

pub(super) enum Error {
    /// What differs, one line per setting.
    Mismatch(Vec<String>),
    /// JetStream cannot answer yet (a cluster forming, a leader being elected).
    Transient(String),
    Other(String),
}

/// The stream `config` asks for: every subject of the deployment, no limit that
/// could drop a record (each message expires by its own TTL or is rolled up), and
/// the features spur writes with.
pub(super) fn wanted(config: &NatsConfig) -> stream::Config {
    stream::Config {
        name: config.prefix.clone(),
        description: Some("spur: events, dedup markers and runs (do not edit by hand)".into()),
        subjects: vec![format!("{}.>", config.prefix)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        num_replicas: config.replicas,
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: -1,
        max_age: Duration::ZERO,
        allow_atomic_publish: true,
        allow_message_ttl: true,
        allow_rollup: true,
        allow_direct: true,
        metadata: HashMap::from([(PARTITIONS_KEY.to_owned(), PARTITIONS.to_string())]),
        ..Default::default()
    }
}

/// What of `have` differs from `want` in a way spur depends on, one line each.
pub(super) fn mismatches(have: &stream::Config, want: &stream::Config) -> Vec<String> {
    settings(have)
        .into_iter()
        .zip(settings(want))
        .filter(|((_, have, _), (_, want, _))| have != want)
        .map(|((setting, have, why), (_, want, _))| {
            format!("{setting} is {have}, spur needs {want} ({why})")
        })
        .collect()
}

/// The settings spur depends on, shown as `nats stream info` names them, each with
/// why it matters.
fn settings(c: &stream::Config) -> [(&'static str, String, &'static str); 14] {
    let unlimited = |n: i64| {
        if n <= 0 {
            "unlimited".to_owned()
        } else {
            n.to_string()
        }
    };
    let drop = "a limit would drop accepted events";
    [
        (
            "subjects",
            format!("{:?}", c.subjects),
            "every subject of the deployment",
        ),
        (
            "replicas",
            c.num_replicas.max(1).to_string(),
            "[nats] replicas",
        ),
        (
            "storage",
            format!("{:?}", c.storage).to_lowercase(),
            "accepted events survive a restart",
        ),
        (
            "retention",
            format!("{:?}", c.retention).to_lowercase(),
            "records stay until they expire",
        ),
        ("max_msgs", unlimited(c.max_messages), drop),
        ("max_bytes", unlimited(c.max_bytes), drop),
        (
            "max_msgs_per_subject",
            unlimited(c.max_messages_per_subject),
            drop,
        ),
        (
            "max_age",
            match c.max_age.as_secs() {
                0 => "unlimited".to_owned(),
                secs => format!("{secs}s"),
            },
            "each record expires by its own TTL",
        ),
        (
            "allow_atomic",
            c.allow_atomic_publish.to_string(),
            "a run's writes commit together",
        ),
        (
            "allow_msg_ttl",
            c.allow_message_ttl.to_string(),
            "dedup markers expire",
        ),
        (
            "allow_rollup_hdrs",
            c.allow_rollup.to_string(),
            "state keeps its last value only",
        ),
        (
            "allow_direct",
            c.allow_direct.to_string(),
            "dedup lookups read any replica",
        ),
        (
            "subject_delete_marker_ttl",
            if c.subject_delete_marker_ttl.is_some() {
                "set"
            } else {
                "unset"
            }
            .to_owned(),
            "an expired dedup marker leaves its subject empty",
        ),
        (
            "metadata spur.partitions",
            format!("{:?}", c.metadata.get(PARTITIONS_KEY)),
            "users stay in their partition",
        ),
    ]
}

/// Creates spur's stream, or checks the one there.
pub(super) async fn stream(js: &jetstream::Context, config: &NatsConfig) -> Result<(), Error> {
    use jetstream::context::CreateStreamErrorKind;
    let want = wanted(config);
    let name = want.name.clone();
    // JetStream not ready, or a peer not known yet (a cluster forming).
    let busy = |e: &jetstream::Error| {
        [
            jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE,
            jetstream::ErrorCode::CLUSTER_NO_PEERS,
        ]
        .contains(&e.error_code())
    };
    match js.get_stream(&name).await {
        Ok(s) => {
            let problems = mismatches(&s.cached_info().config, &want);
            if problems.is_empty() {
                Ok(())
            } else {
                Err(Error::Mismatch(problems))
            }
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                js.create_stream(want).await.map(drop).map_err(|e| {
                    let transient = match e.kind() {
                        CreateStreamErrorKind::TimedOut
                        | CreateStreamErrorKind::JetStreamUnavailable => true,
                        CreateStreamErrorKind::JetStream(j) => busy(&j),
                        _ => false,
                    };
                    let reason = format!("creating stream {name:?}: {e}");
                    if transient {
                        Error::Transient(reason)
                    } else {
                        Error::Other(format!(
                            "{reason} (another stream may already take subjects {name}.>)"
                        ))
                    }
                })
            }
            GetStreamErrorKind::Request => {
                Err(Error::Transient(format!("reading stream {name:?}: {e}")))
            }
            GetStreamErrorKind::JetStream(j) if busy(&j) => {
                Err(Error::Transient(format!("reading stream {name:?}: {e}")))
            }
            _ => Err(Error::Other(format!("reading stream {name:?}: {e}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_spur_depends_on_is_named() {
        let config = NatsConfig {
            replicas: 3,
            ..NatsConfig::default()
        };
        let want = wanted(&config);
        assert!(mismatches(&want, &want).is_empty());
        let have = stream::Config {
            num_replicas: 1,
            max_age: Duration::from_secs(3600),
            allow_atomic_publish: false,
            subject_delete_marker_ttl: Some(Duration::from_secs(60)),
            metadata: HashMap::new(),
            ..want.clone()
        };
        let problems = mismatches(&have, &want);
        let all = problems.join("\n");
        for needle in [
            "replicas is 1, spur needs 3 ([nats] replicas)",
            "max_age is 3600s, spur needs unlimited",
            "allow_atomic is false, spur needs true",
            "subject_delete_marker_ttl is set, spur needs unset",
            "metadata spur.partitions is None, spur needs Some(\"64\")",
        ] {
            assert!(all.contains(needle), "{needle} in\n{all}");
        }
        assert_eq!(problems.len(), 5, "{all}");
    }
}
