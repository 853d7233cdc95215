//! The stdlib `zendesk` module (`stdlib/zendesk.rhai`) end to end against a fake
//! Zendesk Support API (`tests/common/fakes/zendesk.rs`): tickets with the comment
//! nested (public or internal), Basic `email/token:…` auth, idempotency keys, and
//! Zendesk's validation errors.
//! Run with: cargo nextest run --test connector_zendesk

mod common;

use common::connector::{Scenario, error_of, ok_logs, run_of};
use common::fakes::{basic, zendesk};
use serde_json::json;
use spur::run::RunStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_create_ticket_nests_the_comment_and_returns_the_id() {
    let script = r#"
        on_track("Printer Offline", |e| {
            let ticket = zendesk::create_ticket(#{
                subject: "Printer offline", body: "It is offline.",
                requester: #{ name: "Ada", email: "ada@example.com" },
                priority: "high", tags: ["connector"], external_id: "ord-42", group_id: (),
            });
            let note = zendesk::create_ticket(#{ subject: "Note", body: "Internal only", "public": false });
            log::info(`${ticket.id} ${ticket.status} ${ticket.url} ${note.id}`);
        });
        on_track("Bad Priority", |e| { zendesk::create_ticket(#{ subject: "x", body: "y", priority: "asap" }); });
    "#;
    let mut t = Scenario::new(script)
        .connect(zendesk::connection())
        .start()
        .await;
    let runs = t.track(&["Printer Offline", "Bad Priority"]).await;
    assert_eq!(
        ok_logs(run_of(&runs, "Printer Offline")),
        ["1 new https://acme.zendesk.com/api/v2/tickets/1.json 2"]
    );
    assert_eq!(
        error_of(run_of(&runs, "Bad Priority"), RunStatus::Failed),
        "zendesk: RecordInvalid: Record validation errors; Priority: is not included in the list (422)"
    );
    let reqs: Vec<_> = t
        .fake("zendesk")
        .received()
        .into_iter()
        .filter(|r| {
            r.json
                .as_ref()
                .is_some_and(|j| j["ticket"]["priority"] != "asap")
        })
        .collect();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/v2/tickets.json")
        );
        assert_eq!(basic(r).as_deref(), Some(zendesk::BASIC));
    }
    assert_eq!(
        reqs[0].json,
        Some(
            json!({"ticket": {"subject": "Printer offline", "comment": {"body": "It is offline.", "public": true},
            "requester": {"name": "Ada", "email": "ada@example.com"}, "priority": "high",
            "tags": ["connector"], "external_id": "ord-42"}})
        )
    );
    assert_eq!(
        reqs[1].json,
        Some(
            json!({"ticket": {"subject": "Note", "comment": {"body": "Internal only", "public": false}}})
        )
    );
    // Two different tickets never share an idempotency key (when the host sends one).
    if let (Some(a), Some(b)) = (
        reqs[0].header("idempotency-key"),
        reqs[1].header("idempotency-key"),
    ) {
        assert_ne!(a, b);
    }
}
