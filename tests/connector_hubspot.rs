//! The stdlib `hubspot` module (`stdlib/hubspot.rhai`) end to end against a fake
//! HubSpot CRM v3 (`tests/common/fakes/hubspot.rs`): contact upserts by email
//! (404 then create, 409 then update), contact search, companies, deals with
//! contact associations, and HubSpot's validation errors.
//! Run with: cargo nextest run --test connector_hubspot

mod common;

use common::connector::{Scenario, call_statuses, error_of, ok_logs, run_of};
use common::fakes::{bearer, hubspot};
use serde_json::json;
use spur::run::RunStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_upsert_contact_creates_after_a_404_then_updates_by_email() {
    let script = r#"
        on_identify(|e| {
            let c = hubspot::upsert_contact("ada+test@example.com",
                #{ firstname: "Ada", employees: 12, vip: true, interests: ["crm", "ops"], skipped: () });
            log::info(`${c.id} ${c.properties.email} ${c.properties.employees}`);
            let again = hubspot::upsert_contact("ada+test@example.com", #{ lifecyclestage: "customer" });
            log::info(`${again.id} ${again.properties.firstname} ${again.properties.lifecyclestage}`);
        });
    "#;
    let t = Scenario::new(script)
        .connect(hubspot::connection())
        .start()
        .await;
    t.app
        .post("/v1/identify", &json!({"userId": "u1", "traits": {}}))
        .await;
    let runs = t.app.wait_run_count(1, 10).await;
    assert_eq!(
        ok_logs(&runs[0]),
        ["512 ada+test@example.com 12", "512 Ada customer"]
    );

    let reqs = t.fake("hubspot").received();
    let calls: Vec<_> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    let by_email = "/crm/v3/objects/contacts/ada%2Btest%40example.com";
    assert_eq!(
        calls,
        [
            ("PATCH", by_email),
            ("POST", "/crm/v3/objects/contacts"),
            ("PATCH", by_email)
        ]
    );
    assert!(reqs.iter().all(|r| bearer(r) == Some(hubspot::TOKEN)));
    assert_eq!(
        reqs[0].query.get("idProperty").map(String::as_str),
        Some("email")
    );
    assert_eq!(
        reqs[0].json,
        Some(
            json!({"properties": {"firstname": "Ada", "employees": "12", "vip": "true", "interests": "crm;ops"}})
        )
    );
    assert_eq!(
        reqs[1].json.as_ref().unwrap()["properties"]["email"],
        "ada+test@example.com"
    );
    assert_eq!(call_statuses(&runs[0]), [Some(404), Some(201), Some(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_upsert_contact_updates_when_its_create_conflicts() {
    // The fake creates RACING_EMAIL's contact just after answering the first update 404.
    let script = r#"on_track("Signed Up", |e| {
        let c = hubspot::upsert_contact("racing@example.com", #{ firstname: "Rae" });
        log::info(`${c.id} ${c.properties.firstname}`);
    });"#;
    assert!(script.contains(hubspot::RACING_EMAIL));
    let mut t = Scenario::new(script)
        .connect(hubspot::connection())
        .start()
        .await;
    let runs = t.track(&["Signed Up"]).await;
    assert_eq!(ok_logs(&runs[0]), ["512 Rae"]);
    assert_eq!(call_statuses(&runs[0]), [Some(404), Some(409), Some(200)]);
    let methods: Vec<_> = t
        .fake("hubspot")
        .received()
        .into_iter()
        .map(|r| r.method)
        .collect();
    assert_eq!(methods, ["PATCH", "POST", "PATCH"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_find_contact_returns_the_contact_or_unit() {
    let script = r#"
        on_track("Lookup", |e| {
            hubspot::upsert_contact("grace@example.com", #{ firstname: "Grace", company: "Navy" });
            let found = hubspot::find_contact("grace@example.com");
            log::info(`${found.id} ${found.properties.email} ${found.properties.firstname} ${found.properties.company}`);
            let picked = hubspot::find_contact("grace@example.com", ["company"]);
            log::info(`${picked.properties.company}`);
            log::info(`${hubspot::find_contact("nobody@example.com") == ()}`);
        });
    "#;
    let mut t = Scenario::new(script)
        .connect(hubspot::connection())
        .start()
        .await;
    let runs = t.track(&["Lookup"]).await;
    assert_eq!(
        ok_logs(&runs[0]),
        ["512 grace@example.com Grace ", "Navy", "true"]
    );
    let searches: Vec<_> = t
        .fake("hubspot")
        .received()
        .into_iter()
        .filter(|r| r.path == "/crm/v3/objects/contacts/search")
        .collect();
    assert_eq!(searches.len(), 3);
    assert!(searches.iter().all(|s| s.method == "POST"));
    assert_eq!(
        searches[0].json,
        Some(json!({
            "filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "grace@example.com"}]}],
            "properties": ["email", "firstname", "lastname"],
            "limit": 1
        }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_creates_companies_and_deals_with_contact_associations_and_updates_deals() {
    let script = r#"
        on_track("Order Completed", |e| {
            let company = hubspot::create_company(#{ name: "Acme", domain: "acme.example" });
            let contact = hubspot::upsert_contact("ada@acme.example", #{ firstname: "Ada" });
            let plain = hubspot::create_deal(#{ dealname: "Acme pilot", pipeline: "default",
                dealstage: "appointmentscheduled", amount: 1000 });
            let linked = hubspot::create_deal(#{ dealname: "Acme renewal", pipeline: "default",
                dealstage: "qualifiedtobuy", amount: 2500.5 }, contact.id);
            let won = hubspot::update_deal(linked.id, #{ dealstage: "closedwon" });
            log::info(`${company.id} ${company.properties.name} ${contact.id} ${plain.id} ${linked.id}`);
            log::info(`${won.id} ${won.properties.dealstage} ${won.properties.dealname}`);
        });
        on_track("Bad Stage", |e| { hubspot::update_deal("999", #{ dealstage: "won" }); });
    "#;
    let mut t = Scenario::new(script)
        .connect(hubspot::connection())
        .start()
        .await;
    let runs = t.track(&["Order Completed"]).await;
    assert_eq!(
        ok_logs(&runs[0]),
        ["512 Acme 513 514 515", "515 closedwon Acme renewal"]
    );
    let reqs = t.fake("hubspot").received();
    assert!(reqs.iter().all(|r| bearer(r) == Some(hubspot::TOKEN)));
    let company = &reqs[0];
    assert_eq!(
        (company.method.as_str(), company.path.as_str()),
        ("POST", "/crm/v3/objects/companies")
    );
    assert_eq!(
        company.json,
        Some(json!({"properties": {"name": "Acme", "domain": "acme.example"}}))
    );
    let deals: Vec<_> = reqs
        .iter()
        .filter(|r| r.path == "/crm/v3/objects/deals")
        .collect();
    assert_eq!(deals.len(), 2);
    assert!(deals.iter().all(|d| d.method == "POST"));
    assert_eq!(deals[0].json.as_ref().unwrap().get("associations"), None);
    assert_eq!(
        deals[1].json,
        Some(json!({
            "properties": {"dealname": "Acme renewal", "pipeline": "default", "dealstage": "qualifiedtobuy", "amount": "2500.5"},
            "associations": [{"to": {"id": "513"},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]}]
        }))
    );
    let update = reqs.last().unwrap();
    assert_eq!(
        (update.method.as_str(), update.path.as_str()),
        ("PATCH", "/crm/v3/objects/deals/515")
    );
    assert_eq!(
        update.json,
        Some(json!({"properties": {"dealstage": "closedwon"}}))
    );

    let runs = t.track(&["Bad Stage"]).await;
    let msg = error_of(run_of(&runs, "Bad Stage"), RunStatus::Failed);
    assert_eq!(
        msg,
        "hubspot: VALIDATION_ERROR: Property values were not valid: dealstage \"won\" is not a valid deal stage ID (400)"
    );
}
