//! Schedules on an injected clock (`Schedules::poll(now)`: no waiting), plus one
//! real-time run through the binary; those that hold on every store on both. Run with: cargo nextest run --test schedules

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::{Backend, Daemon, TestStore, base_config};
use serde_json::Value;
use spur::app::Storage;
use spur::queue::Queue;
use spur::schedule::Schedules;
use spur::script::{EngineOptions, Live, SourceFile, load_sources};
use spur::store::Store;
use spur::testing::FakeHttp;

common::on_both_backends!(
    five_and_six_field_expressions_and_aliases_fire_at_their_times,
    missed_ticks_fire_once_after_downtime_unless_opted_out,
    a_tick_never_fires_twice_across_restarts_and_reloads,
    a_one_second_schedule_fires_in_real_time_through_the_binary,
);

fn t(s: &str) -> DateTime<Utc> {
    spur::event::parse_time(s).unwrap()
}

struct Harness {
    live: Arc<Live>,
    queue: Queue,
    opts: EngineOptions,
}

impl Harness {
    /// The schedule engine and a queue on `dir`, on the backend `store` selects.
    async fn new(dir: &Path, store: &TestStore, script: &str) -> Self {
        let text = base_config(dir, &store.config);
        let cfg = spur::config::load_from_str(&text, None, &BTreeMap::new()).unwrap();
        let clock = spur::clock::ManualClock::at(Utc::now());
        let storage = Storage::open(&cfg, clock).await.unwrap();
        let host =
            spur::app::build_host(&cfg, &storage, None, tokio::runtime::Handle::current()).unwrap();
        let opts = EngineOptions {
            limits: cfg.limits.clone(),
            host,
        };
        let live = Arc::new(Live::new(Self::compile(&opts, script)));
        let queue = storage
            .queue(Arc::clone(&live) as Arc<dyn spur::queue::Dispatch>)
            .unwrap();
        Self { live, queue, opts }
    }

    fn compile(opts: &EngineOptions, script: &str) -> spur::script::ScriptSet {
        let set = load_sources(
            vec![SourceFile {
                name: "cron".into(),
                path: "cron.rhai".into(),
                text: script.into(),
            }],
            Vec::new(),
            opts,
        );
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        set
    }

    fn schedules(&self, now: DateTime<Utc>) -> Schedules {
        let mut s = Schedules::new(self.queue.clone());
        s.load(&self.live.get(), now).unwrap();
        s
    }

    /// Waits (bounded) for `n` queued jobs (on NATS a tick's job reaches the
    /// scheduler through its partition), then checks there are no more.
    async fn assert_queued(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.queue.stats().queued < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(self.queue.stats().queued, n);
    }
}

async fn five_and_six_field_expressions_and_aliases_fire_at_their_times(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.start(dir.path());
    let h = Harness::new(
        dir.path(),
        &store,
        r#"
        every("*/15 * * * *", |t| {});
        every("30 * * * * *", |t| {});
        every("@daily", |t| {});
        every("0 9 * * MON-FRI", |t| {});
        "#,
    )
    .await;
    let start = t("2026-11-27T23:50:00Z"); // a Friday
    let mut s = h.schedules(start);
    let mut fired: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut now = start;
    // Walk a weekend and a Monday morning in big steps, polling at each due time.
    while now < t("2026-11-30T09:30:00Z") {
        now = s.next_due().unwrap();
        for f in s.poll(now).await.unwrap() {
            assert!(!f.missed);
            fired
                .entry(f.handler)
                .or_default()
                .push(spur::event::format_time(f.at));
        }
    }
    assert_eq!(
        fired["every(@daily)#0"],
        [
            "2026-11-28T00:00:00.000Z",
            "2026-11-29T00:00:00.000Z",
            "2026-11-30T00:00:00.000Z"
        ]
    );
    assert_eq!(
        fired["every(0 9 * * MON-FRI)#0"],
        ["2026-11-30T09:00:00.000Z"],
        "not on the weekend"
    );
    assert_eq!(
        fired["every(*/15 * * * *)#0"][0],
        "2026-11-28T00:00:00.000Z"
    );
    assert_eq!(
        fired["every(30 * * * * *)#0"][0],
        "2026-11-27T23:50:30.000Z"
    );
    assert_eq!(
        fired["every(30 * * * * *)#0"][1],
        "2026-11-27T23:51:30.000Z"
    );
    // Each tick is one job.
    h.assert_queued(fired.values().map(Vec::len).sum::<usize>())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_zone_schedules_follow_dst() {
    let dir = tempfile::tempdir().unwrap();
    let store = Backend::Sled.start(dir.path());
    let h = Harness::new(
        dir.path(),
        &store,
        r#"every("TZ=Europe/Berlin 30 2 * * *", |t| {});"#,
    )
    .await;
    let mut s = h.schedules(t("2026-03-28T12:00:00Z"));
    let at = |d: DateTime<Utc>| {
        d.with_timezone(&chrono_tz::Europe::Berlin)
            .format("%F %T %Z")
            .to_string()
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        let due = s.next_due().unwrap();
        for f in s.poll(due).await.unwrap() {
            seen.push(at(f.at));
        }
    }
    // 02:30 does not exist on 29 March (clocks jump to 03:00): fired once, at 03:00.
    assert_eq!(
        seen,
        [
            "2026-03-29 03:00:00 CEST",
            "2026-03-30 02:30:00 CEST",
            "2026-03-31 02:30:00 CEST"
        ]
    );
}

async fn missed_ticks_fire_once_after_downtime_unless_opted_out(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.start(dir.path());
    let h = Harness::new(
        dir.path(),
        &store,
        r#"every("0 * * * *", |t| {}); every("0 * * * *", #{ catch_up: false }, |t| {});"#,
    )
    .await;
    let mut s = h.schedules(t("2026-11-29T00:30:00Z"));
    // Down from 00:30 to 10:15: ten hourly ticks missed.
    let fired = s.poll(t("2026-11-29T10:15:00Z")).await.unwrap();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert!(fired[0].missed);
    assert_eq!(fired[0].handler, "every(0 * * * *)#0");
    assert_eq!(
        fired[0].at,
        t("2026-11-29T10:00:00Z"),
        "the latest missed tick"
    );
    assert_eq!(
        s.next_due(),
        Some(t("2026-11-29T11:00:00Z")),
        "both resume on schedule"
    );
    h.assert_queued(1).await;
    let fired = s.poll(t("2026-11-29T11:00:00.200Z")).await.unwrap();
    assert_eq!(fired.len(), 2, "on time again: both fire");
}

async fn a_tick_never_fires_twice_across_restarts_and_reloads(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.start(dir.path());
    let script = r#"every("0 */2 * * *", |t| {});"#;
    let fired_at = {
        let h = Harness::new(dir.path(), &store, script).await;
        let mut s = h.schedules(t("2026-11-29T00:10:00Z"));
        assert_eq!(s.next_due(), Some(t("2026-11-29T02:00:00Z")));
        // Reload with an unrelated change keeps the next-fire time.
        h.live.swap(Harness::compile(
            &h.opts,
            &format!("{script}\non_track(|e| {{}});"),
        ));
        s.load(&h.live.get(), t("2026-11-29T01:00:00Z")).unwrap();
        assert_eq!(
            s.next_due(),
            Some(t("2026-11-29T02:00:00Z")),
            "reload keeps next-fire times"
        );
        let fired = s.poll(t("2026-11-29T02:00:00Z")).await.unwrap();
        assert_eq!(fired.len(), 1);
        h.queue.sync().await.unwrap();
        h.queue.shutdown();
        fired[0].at
    };
    // "Restart" (the tick's job was never run), polled at the same moment: on sled
    // the same data dir; on NATS another node of the cluster.
    let next = tempfile::tempdir().unwrap();
    let again = match backend {
        Backend::Sled => dir.path(),
        Backend::Nats => next.path(),
    };
    let h = Harness::new(again, &store, script).await;
    // The tick's job survived, pending.
    h.assert_queued(1).await;
    let mut s = h.schedules(t("2026-11-29T02:00:00Z"));
    assert!(
        s.poll(t("2026-11-29T02:00:00Z")).await.unwrap().is_empty(),
        "not fired twice"
    );
    assert_eq!(s.next_due(), Some(t("2026-11-29T04:00:00Z")));
    assert_eq!(
        fired_at,
        Utc.with_ymd_and_hms(2026, 11, 29, 2, 0, 0).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_expressions_are_load_errors_with_line_and_column() {
    let storage = Storage::sled(Store::temporary().unwrap()).unwrap();
    let cfg = spur::config::Config::default();
    let host =
        spur::app::build_host(&cfg, &storage, None, tokio::runtime::Handle::current()).unwrap();
    let opts = EngineOptions {
        limits: cfg.limits.clone(),
        host,
    };
    let set = load_sources(
        vec![SourceFile {
            name: "bad".into(),
            path: "bad.rhai".into(),
            text: "every(\"0 9 * * *\", |t| {});\nevery(\"0 25 * * *\", |t| {});\nevery(\"@hourly\", #{ catchup: true }, |t| {});".into(),
        }],
        Vec::new(),
        &opts,
    );
    assert_eq!(set.errors.len(), 1, "{:?}", set.errors);
    let e = &set.errors[0];
    assert_eq!((e.line, e.column), (2, 1));
    assert!(e.message.contains("hour 25 is out of range 0-23"), "{e}");
}

async fn a_one_second_schedule_fires_in_real_time_through_the_binary(backend: Backend) {
    let mut sink = FakeHttp::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let store = backend.start(dir.path());
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/heartbeat.rhai"),
        format!(
            r#"every("* * * * * *", |tick| {{ http::post("{}/beat", #{{ at: tick.at }}); }});"#,
            sink.base_url
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("spur.toml"),
        base_config(dir.path(), &store.config_with("")),
    )
    .unwrap();
    let daemon = Daemon::start(dir.path());
    // The measurement itself is a real-time window (DESIGN: fire on time).
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let beats = sink.received().len();
    assert!((4..=7).contains(&beats), "{beats} ticks in 5.5 s");
    let ats: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.json.as_ref().unwrap()["at"].as_str().unwrap().to_owned())
        .collect();
    let mut unique = ats.clone();
    unique.dedup();
    assert_eq!(unique, ats, "each second fired once");
    let schedules: Value = daemon.get("/api/schedules").await;
    assert_eq!(schedules["schedules"][0]["expr"], "* * * * * *");
    assert!(schedules["schedules"][0]["next_fire_at"].is_string());
    assert_eq!(sink.next(5).await.path, "/beat");
}
