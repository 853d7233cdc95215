//! Tools: script functions agents call. `tool("name", #{ description, input,
//! output, annotations }, |args| …)` registers one; a call is a durable run like
//! any other (trigger `tool`), so the journal, approvals, connection policies,
//! limits and dry runs apply.
//!
//! A call ([`Tools::call`]): the caller must be allowed the tool (its client's
//! `tools` patterns), the arguments must match the tool's `input` schema
//! (`schema.rs`), then the job is made durable and the caller waits for the run's
//! record. A run that parks (an approval, a sleep) answers `pending` at once with
//! its job id; `run_status` tells how it ended. Every call leaves an audit entry
//! with a digest of the arguments, never the arguments themselves.

pub(crate) mod profile;
pub(crate) mod schema;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::audit::{Audit, Entry, Outcome};
use crate::auth::Principal;
use crate::queue::{Job, Queue, Trigger};
use crate::run::{RunRecord, RunStatus, RunStore};
use crate::script::{HandlerKind, Live};

/// The built-in tool that reports on a pending call.
pub(crate) const RUN_STATUS: &str = "run_status";

/// Longest a caller waits for a run that neither finishes nor parks (a run being
/// retried with backoff); then the answer is `pending`, as for a parked run.
const CALL_WAIT: Duration = Duration::from_secs(60);

/// What `tool(name, options, f)` declared.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub input: Value,
    pub output: Option<Value>,
    /// MCP tool annotations (`readOnlyHint`, `destructiveHint`, …), as given.
    pub annotations: Option<Value>,
}

impl ToolSpec {
    /// The spec of `tool(name, options)`, `options` as JSON.
    ///
    /// # Errors
    /// A bad name, an unknown option, or a schema spur cannot enforce.
    pub(crate) fn parse(name: &str, options: &Value) -> Result<Self, String> {
        if name == RUN_STATUS || profile::Kind::of(name).is_some() {
            return Err(format!(
                "the tool name {name:?} is reserved for a built-in tool"
            ));
        }
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!(
                "tool name {name:?} must be 1-64 letters, digits, '_', '-' or '.'"
            ));
        }
        let empty = Map::new();
        let opts = match options {
            Value::Object(m) => m,
            Value::Null => &empty,
            _ => return Err("options must be a map".into()),
        };
        for k in opts.keys() {
            if !["description", "input", "output", "annotations"].contains(&k.as_str()) {
                return Err(format!(
                    "unknown option {k:?} (known: description, input, output, annotations)"
                ));
            }
        }
        let description = match opts.get("description") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("description must be a string".into()),
        };
        let input = opts
            .get("input")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"}));
        schema::check_schema(&input, "input")?;
        if input.get("type").and_then(Value::as_str) != Some("object") {
            return Err(
                "input must be an object schema: #{ type: \"object\", properties: #{ … } }".into(),
            );
        }
        let output = opts.get("output").cloned();
        if let Some(o) = &output {
            schema::check_schema(o, "output")?;
        }
        let annotations = opts.get("annotations").cloned();
        if annotations.as_ref().is_some_and(|a| !a.is_object()) {
            return Err("annotations must be a map".into());
        }
        Ok(Self {
            name: name.to_owned(),
            description,
            input,
            output,
            annotations,
        })
    }

    /// The options as stored on the handler.
    pub(crate) fn to_options(&self) -> Value {
        let mut m = Map::new();
        m.insert("description".into(), json!(self.description));
        m.insert("input".into(), self.input.clone());
        if let Some(o) = &self.output {
            m.insert("output".into(), o.clone());
        }
        if let Some(a) = &self.annotations {
            m.insert("annotations".into(), a.clone());
        }
        Value::Object(m)
    }
}

/// A tool handler's return value as JSON, checked against the tool's `output`
/// schema when it declares one.
///
/// # Errors
/// A value that is not plain data, or one that does not match `output`.
pub(crate) fn returned(
    handler: &crate::script::Handler,
    value: &rhai::Dynamic,
) -> Result<Value, String> {
    let json = crate::host::convert::to_json(value)
        .map_err(|e| format!("the tool's result is not plain data: {e}"))?;
    if let Some(output) = handler.options.as_ref().and_then(|o| o.get("output")) {
        schema::validate(output, &json, "result")
            .map_err(|e| format!("the tool's result does not match its output schema: {e}"))?;
    }
    Ok(json)
}

/// A tool a caller can see.
#[derive(Debug, Clone)]
pub(crate) struct LoadedTool {
    pub spec: ToolSpec,
    pub backing: Backing,
}

/// What answers a tool's calls.
#[derive(Debug, Clone)]
pub(crate) enum Backing {
    /// A script's `tool(...)` handler, as a durable run.
    Script { script: String, handler: String },
    /// A built-in profile tool, answered directly.
    Profile(profile::Kind),
}

/// The tools of the live scripts, sorted by name (the order `tools/list` gives);
/// a name defined twice keeps its first definition in script order.
pub(crate) fn loaded(scripts: &Live) -> Vec<LoadedTool> {
    let set = scripts.get();
    let mut out: Vec<LoadedTool> = Vec::new();
    for script in &set.scripts {
        for h in &script.handlers {
            let HandlerKind::Tool(name) = &h.kind else {
                continue;
            };
            if out.iter().any(|t| &t.spec.name == name) {
                continue;
            }
            let options = h.options.clone().unwrap_or(Value::Null);
            if let Ok(spec) = ToolSpec::parse(name, &options) {
                out.push(LoadedTool {
                    spec,
                    backing: Backing::Script {
                        script: script.name.clone(),
                        handler: h.key.clone(),
                    },
                });
            }
        }
    }
    out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    out
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CallOutcome {
    /// The run finished (or a built-in tool answered, with no run): the result.
    Done { result: Value, run_id: Option<u64> },
    /// The run failed (an error, `fail`, a refused approval): the tool's own
    /// failure, reported to the agent as such.
    Failed {
        message: String,
        run_id: Option<u64>,
    },
    /// The run parked (an approval, a sleep) or is still being retried.
    Pending { job_id: u64, waiting_for: Value },
}

/// Why a call did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// No such tool, or not one this caller may see (the same answer, so a
    /// client cannot probe for tools it is not given).
    UnknownTool(String),
    /// The arguments do not match the input schema; the message names the field.
    InvalidArguments(String),
    /// The store failed.
    Internal(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownTool(name) => write!(f, "unknown tool {name:?}"),
            Self::InvalidArguments(m) => write!(f, "invalid arguments: {m}"),
            Self::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

/// What tool calls need.
#[derive(Clone)]
pub(crate) struct Tools {
    pub scripts: Arc<Live>,
    pub queue: Queue,
    pub runs: RunStore,
    pub audit: Audit,
    /// The built-in profile tools, when `[agents.profile]` is configured.
    pub profile: Option<profile::ProfileTools>,
}

impl Tools {
    /// The tools `caller` may see (the scripts' and the built-in profile tools), by
    /// name.
    pub(crate) fn visible(&self, caller: &Principal) -> Vec<LoadedTool> {
        let mut all = loaded(&self.scripts);
        if self.profile.is_some() {
            all.extend(profile::Kind::ALL.into_iter().map(|k| LoadedTool {
                spec: k.spec(),
                backing: Backing::Profile(k),
            }));
        }
        all.retain(|t| caller.may_use_tool(&t.spec.name));
        all.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        all
    }

    /// Calls `name` with `arguments` as `caller`.
    ///
    /// # Errors
    /// See [`CallError`]; each is audited.
    pub(crate) async fn call(
        &self,
        caller: &Principal,
        name: &str,
        arguments: Value,
    ) -> Result<CallOutcome, CallError> {
        let digest = crate::audit::digest(&arguments);
        let entry = |outcome, detail: Value| {
            Entry::new(&caller.name, "tool.call", name)
                .outcome(outcome)
                .detail(detail)
        };
        let Some(tool) = self
            .visible(caller)
            .into_iter()
            .find(|t| t.spec.name == name)
        else {
            self.audit.append_soon(entry(
                Outcome::Refused,
                json!({"arguments": digest, "error": "unknown or not allowed"}),
            ));
            return Err(CallError::UnknownTool(name.to_owned()));
        };
        if let Err(e) = schema::validate(&tool.spec.input, &arguments, "arguments") {
            self.audit.append_soon(entry(
                Outcome::Failed,
                json!({"arguments": digest, "error": e}),
            ));
            return Err(CallError::InvalidArguments(e));
        }
        let internal = |e: &dyn std::fmt::Display| CallError::Internal(e.to_string());
        let (outcome, job_id) = match &tool.backing {
            Backing::Profile(kind) => {
                let answer = match &self.profile {
                    Some(p) => p.call(*kind, &arguments).await,
                    None => Err("the profile tools are not configured".into()),
                };
                let outcome = match answer {
                    Ok(result) => CallOutcome::Done {
                        result,
                        run_id: None,
                    },
                    Err(message) => CallOutcome::Failed {
                        message,
                        run_id: None,
                    },
                };
                (outcome, None)
            }
            Backing::Script { script, handler } => {
                let mut records = self.runs.subscribe();
                let job = Job::new(
                    Trigger::Tool {
                        tool: name.to_owned(),
                        client: caller.name.clone(),
                        arguments,
                    },
                    script.clone(),
                    handler.clone(),
                    None,
                    self.queue.clock().now_ms(),
                );
                let job_id = *self
                    .queue
                    .enqueue(vec![job])
                    .await
                    .map_err(|e| internal(&e))?
                    .first()
                    .ok_or_else(|| CallError::Internal("the job was not queued".into()))?;
                (
                    await_run(&mut records, &self.runs, job_id).await,
                    Some(job_id),
                )
            }
        };
        let (audit_outcome, run_id, error) = match &outcome {
            CallOutcome::Done { run_id, .. } => (Outcome::Ok, *run_id, None),
            CallOutcome::Failed { run_id, message } => (Outcome::Failed, *run_id, Some(message)),
            CallOutcome::Pending { .. } => (Outcome::Pending, None, None),
        };
        let mut detail =
            json!({ "arguments": digest, "job_id": job_id, "run_id": run_id, "error": error });
        if let Value::Object(m) = &mut detail {
            m.retain(|_, v| !v.is_null());
        }
        self.audit
            .append(entry(audit_outcome, detail))
            .await
            .map_err(|e| internal(&e))?;
        Ok(outcome)
    }

    /// How the call that made job `job_id` stands, for `run_status`: its last
    /// run record's outcome, if `caller` made it.
    pub(crate) fn status(&self, caller: &Principal, job_id: u64) -> Option<CallOutcome> {
        let last = last_record(&self.runs, job_id)?;
        (last.trigger == "tool" && last.client.as_deref() == Some(caller.name.as_str()))
            .then(|| outcome_of(&last))
    }
}

/// Waits for the first record of `job_id` that ends the call or parks it.
async fn await_run(
    records: &mut tokio::sync::broadcast::Receiver<Arc<RunRecord>>,
    runs: &RunStore,
    job_id: u64,
) -> CallOutcome {
    let pending = || CallOutcome::Pending {
        job_id,
        waiting_for: json!({"for": "retry"}),
    };
    let wait = async {
        loop {
            match records.recv().await {
                Ok(r) if r.job_id == job_id && r.status != RunStatus::Retrying => {
                    return outcome_of(&r);
                }
                Ok(_) => {}
                // Missed some records: look the job's up.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if let Some(r) =
                        last_record(runs, job_id).filter(|r| r.status != RunStatus::Retrying)
                    {
                        return outcome_of(&r);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return pending(),
            }
        }
    };
    tokio::time::timeout(CALL_WAIT, wait)
        .await
        .unwrap_or_else(|_| pending())
}

/// The newest run record of job `job_id`.
fn last_record(runs: &RunStore, job_id: u64) -> Option<RunRecord> {
    let filter = crate::run::RunFilter {
        job_id: Some(job_id),
        ..crate::run::RunFilter::default()
    };
    runs.list(&filter, 1).ok()?.into_iter().next()
}

fn outcome_of(r: &RunRecord) -> CallOutcome {
    match r.status {
        RunStatus::Ok | RunStatus::Skipped => CallOutcome::Done {
            result: r.result.clone().unwrap_or(Value::Null),
            run_id: Some(r.id),
        },
        RunStatus::Failed | RunStatus::Dead => CallOutcome::Failed {
            message: r
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .or_else(|| r.reason.clone())
                .unwrap_or_else(|| "the run failed".into()),
            run_id: Some(r.id),
        },
        RunStatus::Waiting | RunStatus::Retrying => CallOutcome::Pending {
            job_id: r.job_id,
            waiting_for: r.waiting_for.clone().unwrap_or(json!({"for": "retry"})),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_checks_its_name_options_and_schemas() {
        let ok = ToolSpec::parse(
            "lookup_customer",
            &json!({"description": "d", "input": {"type": "object", "properties": {"id": {"type": "string"}}}}),
        )
        .unwrap();
        assert_eq!(ok.description, "d");
        assert_eq!(
            ToolSpec::parse("x", &Value::Null).unwrap().input,
            json!({"type": "object"})
        );
        assert!(
            ToolSpec::parse("bad name", &Value::Null)
                .unwrap_err()
                .contains("must be 1-64")
        );
        assert!(
            ToolSpec::parse("x", &json!({"inputs": {}}))
                .unwrap_err()
                .contains("unknown option \"inputs\"")
        );
        assert!(
            ToolSpec::parse("x", &json!({"input": {"type": "string"}}))
                .unwrap_err()
                .contains("object schema")
        );
        assert!(
            ToolSpec::parse("x", &json!({"input": {"type": "object", "oneOf": []}}))
                .unwrap_err()
                .contains("input.oneOf")
        );
    }
}
