//! `log::debug/info/warn/error(msg)` and `print`: captured into the run record.

use rhai::{Dynamic, Engine, Module};

use super::ctx::with_run;
use crate::run::{LogLevel, LogLine};

/// Records a line for the current run (or logs it when no run is active).
pub(crate) fn emit(level: LogLevel, message: &str) {
    let captured = with_run(|ctx| {
        if ctx.echo {
            println!("  [{}] {message}", format!("{level:?}").to_lowercase());
        }
        if ctx.logs.len() < ctx.max_logs {
            let message = if message.len() > 8192 {
                let mut cut = 8192;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("{}… ({} bytes)", &message[..cut], message.len())
            } else {
                message.to_owned()
            };
            ctx.logs.push(LogLine { level, message });
        } else {
            ctx.dropped_logs += 1;
        }
    });
    if captured.is_none() {
        match level {
            LogLevel::Debug => tracing::debug!(target: "script", "{message}"),
            LogLevel::Info => tracing::info!(target: "script", "{message}"),
            LogLevel::Warn => tracing::warn!(target: "script", "{message}"),
            LogLevel::Error => tracing::error!(target: "script", "{message}"),
        }
    }
}

pub(super) fn register(engine: &mut Engine) {
    let mut m = Module::new();
    for (name, level) in [
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
    ] {
        m.set_native_fn(name, move |msg: Dynamic| {
            emit(level, &msg.to_string());
            Ok(())
        });
    }
    engine.register_static_module("log", m.into());
}
