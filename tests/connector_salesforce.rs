//! The stdlib `salesforce` module (`stdlib/salesforce.rhai`) end to end against a
//! fake Salesforce REST API (`tests/common/fakes/salesforce.rs`): upsert by external
//! ID (201 / 200 / legacy 204), duplicate matches, create, and paged SOQL queries.
//! Run with: cargo nextest run --test connector_salesforce

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::connector::{Scenario, call_statuses, error_of, ok_logs, run_of};
use common::fakes::bearer;
use common::fakes::salesforce::{self, Org};
use parking_lot::Mutex;
use serde_json::{Map, json};
use spur::run::RunStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_upsert_returns_id_and_created_for_201_200_and_204() {
    let org: Arc<Mutex<Org>> = Arc::default();
    let script = r#"
        on_track("Sync", |e| {
            let a = salesforce::upsert("Account", "External_Id__c", "ext/42", #{ Name: "Acme", Type: "New Customer" });
            let b = salesforce::upsert("Account", "External_Id__c", "ext/42", #{ Type: "Customer" });
            log::info(`${a.id} ${a.created} ${b.id} ${b.created}`);
        });
        on_track("Sync Again", |e| {
            let c = salesforce::upsert("Account", "External_Id__c", "ext/42", #{ Rating: "Hot" });
            log::info(`${c.id} ${c.created}`);
        });
    "#;
    let mut t = Scenario::new(script)
        .connect(salesforce::connection_to(&org))
        .start()
        .await;
    let runs = t.track(&["Sync"]).await;
    let id = "0018a0000000000001";
    assert_eq!(ok_logs(&runs[0]), [format!("{id} true {id} false")]);
    assert_eq!(call_statuses(&runs[0]), [Some(201), Some(200)]);

    org.lock().legacy_updates = true;
    let runs = t.track(&["Sync Again"]).await;
    let again = run_of(&runs, "Sync Again");
    assert_eq!(ok_logs(again), [format!("{id} false")]);
    assert_eq!(call_statuses(again), [Some(204), Some(200)]);

    let reqs = t.fake("salesforce").received();
    let path = "/services/data/v61.0/sobjects/Account/External_Id__c/ext%2F42";
    assert!(
        reqs.iter()
            .all(|r| r.path == path && bearer(r) == Some(salesforce::TOKEN))
    );
    let methods: Vec<_> = reqs.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["PATCH", "PATCH", "PATCH", "GET"]);
    assert_eq!(
        reqs[0].json,
        Some(json!({"Name": "Acme", "Type": "New Customer"}))
    );
    assert_eq!(reqs[3].query.get("fields").map(String::as_str), Some("Id"));
    assert_eq!(org.lock().records[0].2["Rating"], "Hot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_upsert_fails_on_duplicate_matches_and_unknown_external_id_fields() {
    let org: Arc<Mutex<Org>> = Arc::default();
    for id in ["0038a0000000000001", "0038a0000000000002"] {
        let mut fields = Map::new();
        fields.insert("Segment_Id__c".into(), json!("user-7"));
        org.lock()
            .records
            .push(("Contact".into(), id.into(), fields));
    }
    let script = r#"
        on_track("Duplicate", |e| { salesforce::upsert("Contact", "Segment_Id__c", "user-7", #{ LastName: "Hopper" }); });
        on_track("Unknown Field", |e| { salesforce::upsert("Contact", "Nope__c", "user-7", #{ LastName: "Hopper" }); });
    "#;
    let mut t = Scenario::new(script)
        .connect(salesforce::connection_to(&org))
        .start()
        .await;
    let runs = t.track(&["Duplicate", "Unknown Field"]).await;
    assert_eq!(
        error_of(run_of(&runs, "Duplicate"), RunStatus::Failed),
        "salesforce: more than one Contact has Segment_Id__c = user-7 (300)"
    );
    assert_eq!(
        error_of(run_of(&runs, "Unknown Field"), RunStatus::Failed),
        "salesforce: NOT_FOUND: The requested resource does not exist (404)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_create_returns_the_new_id() {
    let script = r#"
        on_track("Signed Up", |e| {
            let lead = salesforce::create("Lead", #{ LastName: "Lovelace", Company: "Analytical Engines", Email: "ada@example.com" });
            log::info(lead.id);
        });
        on_track("Bad Lead", |e| { salesforce::create("Lead", #{ Company: "Nobody Inc" }); });
    "#;
    let mut t = Scenario::new(script)
        .connect(salesforce::connection())
        .start()
        .await;
    let runs = t.track(&["Signed Up", "Bad Lead"]).await;
    assert_eq!(ok_logs(run_of(&runs, "Signed Up")), ["00Q8a0000000000001"]);
    assert_eq!(
        error_of(run_of(&runs, "Bad Lead"), RunStatus::Failed),
        "salesforce: REQUIRED_FIELD_MISSING: Required fields are missing: [LastName] (400)"
    );
    let reqs = t.fake("salesforce").received();
    let create = reqs
        .iter()
        .find(|r| r.json.as_ref().is_some_and(|j| j.get("LastName").is_some()))
        .unwrap();
    assert_eq!(
        (create.method.as_str(), create.path.as_str()),
        ("POST", "/services/data/v61.0/sobjects/Lead")
    );
    assert_eq!(bearer(create), Some(salesforce::TOKEN));
    assert_eq!(
        create.json,
        Some(
            json!({"LastName": "Lovelace", "Company": "Analytical Engines", "Email": "ada@example.com"})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_query_follows_next_records_url_until_done() {
    let script = r#"
        on_track("Report", |e| {
            let rows = salesforce::query("SELECT Id, Name FROM Account WHERE Name LIKE '%&%' OR Name = 'O''Brien'");
            log::info(`${rows.len()}`);
            for row in rows { log::info(`${row.Id} ${row.Name}`); }
        });
    "#;
    let mut t = Scenario::new(script)
        .connect(salesforce::connection())
        .start()
        .await;
    let runs = t.track(&["Report"]).await;
    assert_eq!(
        ok_logs(&runs[0]),
        [
            "3",
            "0018a0000000001 A&B Corp",
            "0018a0000000002 50% Off Ltd",
            "0018a0000000003 O'Brien & Sons"
        ]
    );
    let reqs = t.fake("salesforce").received();
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs.iter()
            .all(|r| r.method == "GET" && bearer(r) == Some(salesforce::TOKEN))
    );
    assert_eq!(reqs[0].path, "/services/data/v61.0/query");
    // The SOQL arrives whole: `&`, `%`, `'` and spaces were encoded.
    assert_eq!(
        reqs[0].query,
        BTreeMap::from([(
            "q".to_owned(),
            "SELECT Id, Name FROM Account WHERE Name LIKE '%&%' OR Name = 'O''Brien'".to_owned()
        )])
    );
    assert_eq!(
        reqs[1].path,
        "/services/data/v61.0/query/01gD0000002HU6KIAW-2"
    );
    assert!(reqs[1].query.is_empty());
}
