//! Engage audiences and computed traits, in both of Engage's forms, with the exact
//! payloads of `segment-spec.md` §6 (fixtures), delivered through the Webhooks
//! destination. Run with: cargo nextest run --test audiences

mod common;

use common::{TestApp, fixture};
use hmac::Mac as _;
use spur::run::RunStatus;

fn sign(body: &str) -> String {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_and_trait_handlers_fire_for_both_engage_forms() {
    let t = TestApp::builder()
        .script(
            "engage.rhai",
            r#"
            on_audience("high_intent_trail_runners", |e, entered| {
                log::info(`${e.type} ${entered} ${e.traits?.email ?? e.context?.traits?.email}`);
            });
            on_audience("someone_else", |e, entered| { log::info("wrong audience"); });
            on_trait("lifetime_order_value", |e, value| { log::info(`${e.type} ${value}`); });
            "#,
        )
        .config("[segment]\nwebhook_secret = \"s3cret\"")
        .start()
        .await;
    let files = [
        "engage-audience-entered-identify.json",
        "engage-audience-exited-identify.json",
        "engage-audience-entered-track.json",
        "engage-audience-exited-track.json",
        "engage-computed-trait-identify.json",
        "engage-computed-trait-track.json",
    ];
    for f in files {
        let body = fixture(f);
        let (status, resp) = t
            .post_raw(
                "/webhooks/segment",
                body.clone(),
                &[("x-signature", &sign(&body))],
            )
            .await;
        assert_eq!(status, 200, "{f}: {resp}");
    }
    let runs = t.wait_run_count(6, 10).await;
    assert!(runs.iter().all(|r| r.status == RunStatus::Ok), "{runs:?}");
    let mut audience: Vec<String> = runs
        .iter()
        .filter(|r| r.handler.starts_with("on_audience"))
        .map(|r| r.logs[0].message.clone())
        .collect();
    audience.sort();
    assert_eq!(
        audience,
        [
            "identify false maya.okafor@example.com",
            "identify true maya.okafor@example.com",
            "track false maya.okafor@example.com",
            "track true maya.okafor@example.com",
        ]
    );
    let mut traits: Vec<String> = runs
        .iter()
        .filter(|r| r.handler.starts_with("on_trait"))
        .map(|r| r.logs[0].message.clone())
        .collect();
    traits.sort();
    assert_eq!(traits.len(), 2);
    assert!(traits[0].starts_with("identify "), "{traits:?}");
    assert!(traits[1].starts_with("track 315.08"), "{traits:?}");
    assert!(
        !runs
            .iter()
            .any(|r| r.logs.iter().any(|l| l.message == "wrong audience"))
    );
}
