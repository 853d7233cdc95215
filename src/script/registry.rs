//! Registration calls (`on_track`, `every`, …): a script's top level calls them while
//! it loads, and they collect handlers into this thread's collector. Called anywhere
//! else (inside a handler), they fail with a clear message.

use std::cell::RefCell;

use rhai::{Engine, EvalAltResult, FnPtr, Map, NativeCallContext};

use super::{Handler, HandlerKind, handler_key};

thread_local! {
    static COLLECTOR: RefCell<Option<Vec<Handler>>> = const { RefCell::new(None) };
}

/// Starts collecting registrations on this thread.
pub(super) fn begin() {
    COLLECTOR.with(|c| *c.borrow_mut() = Some(Vec::new()));
}

/// Stops collecting and returns what was registered.
pub(super) fn finish() -> Vec<Handler> {
    COLLECTOR.with(|c| c.borrow_mut().take().unwrap_or_default())
}

type Res = Result<(), Box<EvalAltResult>>;

fn add(ctx: &NativeCallContext, kind: HandlerKind, func: FnPtr, options: Option<Map>) -> Res {
    add_with(ctx, kind, func, options, None)
}

fn add_with(
    ctx: &NativeCallContext,
    kind: HandlerKind,
    func: FnPtr,
    options: Option<Map>,
    source: Option<crate::source::SourceSpec>,
) -> Res {
    let line = ctx.call_position().line().unwrap_or(0);
    let options = match options {
        Some(m) => Some(
            crate::host::convert::to_json(&rhai::Dynamic::from_map(m))
                .map_err(|e| format!("{}: options must be plain values: {e}", ctx.fn_name()))?,
        ),
        None => None,
    };
    COLLECTOR.with(|c| match c.borrow_mut().as_mut() {
        Some(handlers) => {
            let key = handler_key(&kind, handlers);
            handlers.push(Handler {
                key,
                kind,
                func,
                line,
                options,
                source: source.map(std::sync::Arc::new),
            });
            Ok(())
        }
        None => Err(format!(
            "{}() registers a handler: call it at the top level of a script, not inside a handler",
            ctx.fn_name()
        )
        .into()),
    })
}

fn non_empty(
    ctx: &NativeCallContext,
    what: &str,
    value: &str,
) -> Result<String, Box<EvalAltResult>> {
    if value.trim().is_empty() {
        return Err(format!("{}(): the {what} must not be empty", ctx.fn_name()).into());
    }
    Ok(value.to_owned())
}

/// A valid cron expression, or the parser's message naming the bad field.
fn cron(ctx: &NativeCallContext, expr: &str) -> Result<String, Box<EvalAltResult>> {
    let expr = non_empty(ctx, "schedule expression", expr)?;
    crate::schedule::cron::Schedule::parse(&expr).map_err(|e| format!("every(): {e}"))?;
    Ok(expr)
}

/// `on_webhook(name, options, f)`: a source with its spec.
fn webhook(ctx: &NativeCallContext, name: &str, options: Map, f: FnPtr) -> Res {
    let spec = crate::source::SourceSpec::parse(name, options)
        .map_err(|e| format!("on_webhook(): {e}"))?;
    add_with(
        ctx,
        HandlerKind::Webhook(spec.name.clone()),
        f,
        None,
        Some(spec),
    )
}

/// `tool(name, options, f)`: a tool with its spec, checked now so a bad schema is a
/// load error naming the place.
fn tool(ctx: &NativeCallContext, name: &str, options: Map, f: FnPtr) -> Res {
    let json = crate::host::convert::to_json(&rhai::Dynamic::from_map(options))
        .map_err(|e| format!("tool({name:?}): options must be plain values: {e}"))?;
    let spec =
        crate::tool::ToolSpec::parse(name, &json).map_err(|e| format!("tool({name:?}): {e}"))?;
    let options = crate::host::convert::to_dynamic(&spec.to_options())
        .try_cast::<Map>()
        .unwrap_or_default();
    add_with(ctx, HandlerKind::Tool(spec.name), f, Some(options), None)
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn(
        "tool",
        |ctx: NativeCallContext, name: &str, options: Map, f: FnPtr| tool(&ctx, name, options, f),
    );
    engine.register_fn("tool", |ctx: NativeCallContext, name: &str, f: FnPtr| {
        tool(&ctx, name, Map::new(), f)
    });
    engine.register_fn("on_track", |ctx: NativeCallContext, f: FnPtr| {
        add(&ctx, HandlerKind::Track(None), f, None)
    });
    engine.register_fn(
        "on_track",
        |ctx: NativeCallContext, name: &str, f: FnPtr| {
            let name = non_empty(&ctx, "event name", name)?;
            add(&ctx, HandlerKind::Track(Some(name)), f, None)
        },
    );
    for (name, kind) in [
        ("on_identify", HandlerKind::Identify),
        ("on_page", HandlerKind::Page),
        ("on_screen", HandlerKind::Screen),
        ("on_group", HandlerKind::Group),
        ("on_alias", HandlerKind::Alias),
        ("on_delete", HandlerKind::Delete),
        ("on_event", HandlerKind::Event),
        ("on_approval", HandlerKind::Approval),
    ] {
        engine.register_fn(name, move |ctx: NativeCallContext, f: FnPtr| {
            add(&ctx, kind.clone(), f, None)
        });
    }
    engine.register_fn(
        "on_audience",
        |ctx: NativeCallContext, key: &str, f: FnPtr| {
            let key = non_empty(&ctx, "audience key", key)?;
            add(&ctx, HandlerKind::Audience(key), f, None)
        },
    );
    engine.register_fn("on_trait", |ctx: NativeCallContext, key: &str, f: FnPtr| {
        let key = non_empty(&ctx, "trait key", key)?;
        add(&ctx, HandlerKind::Trait(key), f, None)
    });
    engine.register_fn("every", |ctx: NativeCallContext, expr: &str, f: FnPtr| {
        let expr = cron(&ctx, expr)?;
        add(&ctx, HandlerKind::Schedule(expr), f, None)
    });
    engine.register_fn(
        "every",
        |ctx: NativeCallContext, expr: &str, options: Map, f: FnPtr| {
            let expr = cron(&ctx, expr)?;
            for (k, v) in &options {
                if k.as_str() != "catch_up" {
                    return Err(format!("every(): unknown option `{k}` (known: catch_up)").into());
                }
                if !v.is_bool() {
                    return Err("every(): `catch_up` must be true or false".into());
                }
            }
            add(&ctx, HandlerKind::Schedule(expr), f, Some(options))
        },
    );
    engine.register_fn(
        "on_webhook",
        |ctx: NativeCallContext, name: &str, f: FnPtr| webhook(&ctx, name, Map::new(), f),
    );
    engine.register_fn(
        "on_webhook",
        |ctx: NativeCallContext, name: &str, options: Map, f: FnPtr| {
            webhook(&ctx, name, options, f)
        },
    );
    // A clear message instead of "function not found" for a common slip.
    engine.register_fn("on_track", |name: &str| -> Res {
        Err(format!("on_track({name:?}) needs a handler: on_track({name:?}, |e| {{ ... }})").into())
    });
}
