//! The stdlib `slack` module (`stdlib/slack.rhai`) end to end against a fake Slack
//! Web API (`tests/common/fakes/slack.rs`): chat.postMessage with Block Kit,
//! chat.update, `ok:false` errors, rate limits, and a module of the team's own
//! overriding the stdlib one.
//! Run with: cargo nextest run --test connector_slack

mod common;

use common::connector::{Scenario, error_of, ok_logs, run_of};
use common::fakes::slack;
use serde_json::json;
use spur::run::RunStatus;
use spur::testing::Reply;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_post_sends_chat_post_message_and_returns_the_ts() {
    let script = r##"
        import "slack" as slack;
        on_track("Order Completed", |e| {
            let m = slack::post("#sales", "Order #42 placed");
            log::info(`${m.ok} ${m.channel} ${m.ts} ${m.message.text}`);
            let reply = slack::post(#{
                channel: m.channel,
                text: "Approval needed: refund #42",
                blocks: [
                    #{ type: "section", text: #{ type: "mrkdwn", text: "*Refund #42* needs approval" } },
                    #{ type: "actions", block_id: "decision", elements: [
                        #{ type: "button", action_id: "approve", style: "primary",
                           text: #{ type: "plain_text", text: "Approve" }, value: "req_42:approve" },
                        #{ type: "button", action_id: "reject", style: "danger",
                           text: #{ type: "plain_text", text: "Reject" }, value: "req_42:reject" } ] }
                ],
                thread_ts: m.ts,
                unfurl_links: (),
            });
            log::info(`${reply.ts} ${reply.message.thread_ts}`);
        });
    "##;
    let mut t = Scenario::new(script)
        .connect(slack::connection())
        .start()
        .await;
    let runs = t.track(&["Order Completed"]).await;

    let reqs = t.fake("slack").received();
    let first = &reqs[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/api/chat.postMessage");
    assert_eq!(first.header("authorization"), Some("Bearer xoxb-test"));
    assert_eq!(
        first.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        first.json,
        Some(json!({"channel": "#sales", "text": "Order #42 placed"}))
    );
    let body = reqs[1].json.clone().expect("JSON body");
    assert_eq!(body["channel"], "C123");
    assert_eq!(body["thread_ts"], "1700000000.000001");
    assert_eq!(body["blocks"][1]["elements"][0]["action_id"], "approve");
    assert_eq!(body.get("unfurl_links"), None, "absent fields are left out");

    assert_eq!(
        ok_logs(&runs[0]),
        [
            "true C123 1700000000.000001 Order #42 placed",
            "1700000000.000002 1700000000.000001"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_in_the_scripts_dir_overrides_the_stdlib_module_of_that_name() {
    // A team's own slack module: every post goes to one channel, prefixed.
    let module = r#"
        fn post(channel, text) {
            let r = http::request(#{ connection: "slack", method: "POST", path: "/chat.postMessage",
                json: #{ channel: "C123", text: `[${channel}] ${text}` } });
            r.json
        }
    "#;
    let script = r##"on_track("Go", |e| { log::info(slack::post("#anywhere", "hi").ts); });"##;
    let mut t = Scenario::new(script)
        .script("slack.rhai", module)
        .connect(slack::connection())
        .start()
        .await;
    let runs = t.track(&["Go"]).await;
    assert_eq!(ok_logs(&runs[0]), ["1700000000.000001"]);
    assert_eq!(
        t.fake("slack").received()[0].json,
        Some(json!({"channel": "C123", "text": "[#anywhere] hi"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_update_edits_the_posted_message_by_channel_and_ts() {
    let script = r##"
        on_track("Approved", |e| {
            let m = slack::post(#{ channel: "#sales", text: "Refund #42?",
                blocks: [#{ type: "section", text: #{ type: "mrkdwn", text: "Refund #42?" } }] });
            let a = slack::update(m.channel, m.ts, "Approved by ada");
            log::info(`${a.ts == m.ts} ${a.text} ${a.message.blocks.len()}`);
            let b = slack::update(m.channel, m.ts, #{ text: "Closed", blocks: [] });
            log::info(`${b.text} ${b.message.blocks.len()}`);
        });
    "##;
    let mut t = Scenario::new(script)
        .connect(slack::connection())
        .start()
        .await;
    let runs = t.track(&["Approved"]).await;
    assert_eq!(ok_logs(&runs[0]), ["true Approved by ada 1", "Closed 0"]);

    let updates: Vec<_> = t
        .fake("slack")
        .received()
        .into_iter()
        .filter(|r| r.path == "/api/chat.update")
        .collect();
    assert_eq!(updates.len(), 2);
    assert!(
        updates
            .iter()
            .all(|u| u.method == "POST" && u.header("authorization") == Some("Bearer xoxb-test"))
    );
    assert_eq!(
        updates[0].json,
        Some(json!({"channel": "C123", "ts": "1700000000.000001", "text": "Approved by ada"}))
    );
    assert_eq!(
        updates[1].json,
        Some(json!({"channel": "C123", "ts": "1700000000.000001", "text": "Closed", "blocks": []}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_ok_false_fails_the_run_with_slacks_error_code() {
    let script = r##"
        on_track("Unknown Channel", |e| { slack::post("#nope", "hello"); });
        on_track("Unknown Message", |e| { slack::update("C123", "1.000001", "edited"); });
        on_track("Empty", |e| { slack::post(#{ channel: "C123" }); });
    "##;
    let mut t = Scenario::new(script)
        .connect(slack::connection())
        .start()
        .await;
    let runs = t
        .track(&["Unknown Channel", "Unknown Message", "Empty"])
        .await;

    let failed = run_of(&runs, "Unknown Channel");
    assert_eq!(
        error_of(failed, RunStatus::Failed),
        "slack: channel_not_found (200)"
    );
    assert_eq!(
        failed.reason.as_deref(),
        Some("slack: channel_not_found (200)")
    );
    assert_eq!(failed.calls.len(), 1, "a permanent error is not retried");
    assert_eq!(
        error_of(run_of(&runs, "Unknown Message"), RunStatus::Failed),
        "slack: message_not_found (200)"
    );
    assert_eq!(
        error_of(run_of(&runs, "Empty"), RunStatus::Failed),
        "slack: no_text (200)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_rate_limit_after_the_hosts_retries_leaves_the_run_retrying() {
    let ratelimited = slack::connection()
        .answering(|_| {
            Reply::json(429, &json!({"ok": false, "error": "ratelimited"}))
                .header("retry-after", "0")
        })
        .with("max_attempts = 2");
    let mut t = Scenario::new(r#"on_track("Go", |e| { slack::post("C123", "hi"); });"#)
        .connect(ratelimited)
        .start()
        .await;
    let runs = t.track(&["Go"]).await;
    let run = &runs[0];
    assert!(
        error_of(run, RunStatus::Retrying).starts_with("slack: ratelimited (429)"),
        "{run:#?}"
    );
    let attempts: Vec<_> = run.calls.iter().map(|c| (c.status, c.attempt)).collect();
    assert_eq!(attempts, [(Some(429), 1), (Some(429), 2)]);
    assert!(run.next_attempt_at.is_some());
}
