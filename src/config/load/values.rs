//! Typed readers of single TOML values; each error says what was expected and what
//! was found, never more than the value itself.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use toml::Value;

use crate::config::Secret;

pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

pub(super) fn parse_string(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected a string, got {}", describe(other))),
    }
}

pub(super) fn parse_secret(v: &Value) -> Result<Secret, String> {
    match v {
        Value::String(s) => Ok(Secret::new(s.clone())),
        _ => Err("expected a string".into()),
    }
}

pub(super) fn parse_url(v: &Value) -> Result<String, String> {
    let s = parse_string(v)?;
    if !(s.starts_with("http://") || s.starts_with("https://")) {
        return Err(format!("expected an http:// or https:// URL, got {s:?}"));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

pub(super) fn parse_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Boolean(b) => Ok(*b),
        Value::String(s) if matches!(s.as_str(), "true" | "1" | "yes") => Ok(true),
        Value::String(s) if matches!(s.as_str(), "false" | "0" | "no") => Ok(false),
        other => Err(format!("expected true or false, got {}", describe(other))),
    }
}

pub(super) fn parse_int(v: &Value, min: i64, max: i64) -> Result<i64, String> {
    let n = match v {
        Value::Integer(n) => *n,
        Value::String(s) => s
            .replace('_', "")
            .parse::<i64>()
            .map_err(|_| format!("expected an integer, got {s:?}"))?,
        other => return Err(format!("expected an integer, got {}", describe(other))),
    };
    if n < min || n > max {
        return Err(format!("{n} is out of range ({min}..={max})"));
    }
    Ok(n)
}

pub(super) fn parse_backend(v: &Value) -> Result<crate::config::StoreBackend, String> {
    match v.as_str() {
        Some("sled") => Ok(crate::config::StoreBackend::Sled),
        Some("nats") => Ok(crate::config::StoreBackend::Nats),
        _ => Err(format!(
            "expected \"sled\" (the embedded store) or \"nats\" (a JetStream cluster), got {}",
            describe(v)
        )),
    }
}

pub(super) fn parse_sled_mode(v: &Value) -> Result<crate::config::SledMode, String> {
    match v.as_str() {
        Some("low_space") => Ok(crate::config::SledMode::LowSpace),
        Some("high_throughput") => Ok(crate::config::SledMode::HighThroughput),
        _ => Err(format!(
            "expected \"low_space\" or \"high_throughput\", got {}",
            describe(v)
        )),
    }
}

pub(super) fn parse_on_unknown(v: &Value) -> Result<crate::config::OnUnknown, String> {
    match v.as_str() {
        Some("retry") => Ok(crate::config::OnUnknown::Retry),
        Some("fail") => Ok(crate::config::OnUnknown::Fail),
        _ => Err(format!(
            "expected \"retry\" or \"fail\", got {}",
            describe(v)
        )),
    }
}

pub(super) fn parse_positive_float(v: &Value) -> Result<f64, String> {
    let n = match v {
        Value::Integer(n) => *n as f64,
        Value::Float(f) => *f,
        Value::String(s) => s
            .parse::<f64>()
            .map_err(|_| format!("expected a number, got {s:?}"))?,
        other => return Err(format!("expected a number, got {}", describe(other))),
    };
    if n.is_finite() && n > 0.0 {
        Ok(n)
    } else {
        Err(format!("expected a positive number, got {n}"))
    }
}

pub(super) fn parse_duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Integer(n) => crate::duration::from_secs(*n),
        Value::String(s) => crate::duration::parse(s),
        other => Err(format!(
            "expected a duration like \"7d\" or \"12h\", got {}",
            describe(other)
        )),
    }
}

pub(super) fn parse_addr(v: &Value) -> Result<SocketAddr, String> {
    let s = parse_string(v)?;
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| format!("expected host:port like \"127.0.0.1:8088\", got {s:?}"))
}

pub(super) fn parse_string_list(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("item {i} must be a string"))
            })
            .collect(),
        // From an environment variable: comma-separated.
        Value::String(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        other => Err(format!(
            "expected a list of strings, got {}",
            describe(other)
        )),
    }
}

pub(super) fn parse_basic(v: &Value) -> Result<(Secret, Secret), String> {
    match v {
        Value::String(s) => {
            let (u, p) = s.split_once(':').unwrap_or((s.as_str(), ""));
            Ok((Secret::new(u), Secret::new(p)))
        }
        Value::Table(t) => {
            let user = t
                .get("user")
                .and_then(Value::as_str)
                .ok_or("needs a string `user`")?;
            let password = t.get("password").and_then(Value::as_str).unwrap_or("");
            if let Some(k) = t.keys().find(|k| *k != "user" && *k != "password") {
                return Err(format!("unknown key {k:?} (known: user, password)"));
            }
            Ok((Secret::new(user), Secret::new(password)))
        }
        _ => Err("expected \"user:password\" or { user, password }".into()),
    }
}

pub(super) fn parse_headers(v: &Value) -> Result<Vec<(String, Secret)>, String> {
    let t = v
        .as_table()
        .ok_or("expected a table of header = \"value\"")?;
    t.iter()
        .map(|(k, v)| {
            let value = v
                .as_str()
                .ok_or_else(|| format!("header {k:?} must be a string"))?;
            reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("{k:?} is not a valid header name"))?;
            Ok((k.clone(), Secret::new(value)))
        })
        .collect()
}

pub(super) fn parse_call_patterns(v: &Value) -> Result<Vec<String>, String> {
    let list = parse_string_list(v)?;
    for p in &list {
        let mut parts = p.split_whitespace();
        let (Some(method), Some(_path), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "pattern {p:?} must be \"METHOD path-glob\", e.g. \"DELETE *\""
            ));
        };
        if !(method == "*" || method.chars().all(|c| c.is_ascii_uppercase())) {
            return Err(format!("pattern {p:?}: method must be upper case or *"));
        }
    }
    Ok(list)
}

pub(super) fn parse_scopes(v: &Value) -> Result<Vec<crate::config::Scope>, String> {
    parse_string_list(v)?
        .iter()
        .map(|s| {
            crate::config::Scope::parse(s).ok_or_else(|| {
                let known: Vec<&str> = crate::config::Scope::ALL
                    .iter()
                    .map(|c| c.as_str())
                    .collect();
                format!("unknown scope {s:?} (known: {})", known.join(", "))
            })
        })
        .collect()
}
