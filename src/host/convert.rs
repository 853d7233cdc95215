//! JSON <-> Rhai values. Events reach scripts as maps with Segment's field names;
//! values leaving scripts (HTTP bodies, state) must be plain data.

use rhai::{Array, Dynamic, Map};
use serde_json::{Number, Value};

/// A JSON value as a Rhai value (`null` becomes `()`).
pub(crate) fn to_dynamic(v: &Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(a) => Dynamic::from_array(a.iter().map(to_dynamic).collect()),
        Value::Object(o) => Dynamic::from_map(map_to_dynamic(o)),
    }
}

/// A duration argument: whole or fractional seconds, or text like `"10m"`. The
/// error says what was wrong (never a panic, whatever the number).
///
/// # Errors
/// When the value is negative, not finite, too long or not a duration.
pub(crate) fn to_duration(d: &Dynamic) -> Result<std::time::Duration, String> {
    if let Ok(secs) = d.as_int() {
        crate::duration::from_secs(secs)
    } else if let Ok(secs) = d.as_float() {
        crate::duration::from_secs_f64(secs)
    } else {
        crate::duration::parse(&to_text(d))
    }
}

/// A JSON object as a Rhai map.
pub(crate) fn map_to_dynamic(o: &serde_json::Map<String, Value>) -> Map {
    o.iter()
        .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
        .collect()
}

/// A Rhai value as JSON; functions, timestamps and NaN are refused with a reason.
///
/// # Errors
/// A message naming the value's type.
pub(crate) fn to_json(d: &Dynamic) -> Result<Value, String> {
    let d = d.flatten_clone();
    if d.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = d.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = d.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = d.as_float() {
        return Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} cannot be represented in JSON"));
    }
    if d.is_string() || d.is_char() {
        return Ok(Value::String(d.to_string()));
    }
    if d.is_array() {
        let arr = d.cast::<Array>();
        return arr
            .iter()
            .map(to_json)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if d.is_map() {
        let map = d.cast::<Map>();
        let mut out = serde_json::Map::with_capacity(map.len());
        for (k, v) in &map {
            out.insert(k.to_string(), to_json(v).map_err(|e| format!("{k}: {e}"))?);
        }
        return Ok(Value::Object(out));
    }
    Err(format!(
        "a value of type {} cannot be converted to JSON",
        d.type_name()
    ))
}

/// A value as text for a query string or header (strings without quotes).
pub(crate) fn to_text(d: &Dynamic) -> String {
    if d.is_string() {
        d.clone().into_string().unwrap_or_default()
    } else {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_plain_data() {
        let v = json!({"a": [1, 2.5, "x", null, true], "b": {"c": {}}});
        assert_eq!(to_json(&to_dynamic(&v)).unwrap(), v);
    }

    #[test]
    fn refuses_functions() {
        let f = Dynamic::from(rhai::FnPtr::new("x").unwrap());
        assert!(to_json(&f).unwrap_err().contains("Fn"));
    }
}
