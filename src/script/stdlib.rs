//! Connector modules written in Rhai (`stdlib/*.rhai`), embedded at build time.
//! Scripts use them as `slack::post(…)` (with or without `import "slack" as slack;`);
//! a file of the same name in the scripts dir overrides one.

/// `(import name, source)` of every built-in module.
pub(crate) const MODULES: &[(&str, &str)] = &[
    ("slack", include_str!("../../stdlib/slack.rhai")),
    ("hubspot", include_str!("../../stdlib/hubspot.rhai")),
    ("salesforce", include_str!("../../stdlib/salesforce.rhai")),
    ("asana", include_str!("../../stdlib/asana.rhai")),
    ("zendesk", include_str!("../../stdlib/zendesk.rhai")),
    ("jira", include_str!("../../stdlib/jira.rhai")),
    ("pagerduty", include_str!("../../stdlib/pagerduty.rhai")),
];

/// Whether `name` is a built-in module (so a scripts-dir file of that name overrides
/// it rather than being loaded as a handler script).
pub(crate) fn is_module(name: &str) -> bool {
    MODULES.iter().any(|(n, _)| *n == name)
}
