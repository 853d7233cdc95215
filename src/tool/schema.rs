//! The JSON Schema a tool declares for its arguments (and its result), checked by
//! spur before a run starts.
//!
//! spur validates the keywords agents' tool schemas use: `type` (a name or a
//! list), `properties`, `required`, `additionalProperties` (a bool or a schema),
//! `items`, `enum`, `const`, `minimum`, `maximum`, `exclusiveMinimum`,
//! `exclusiveMaximum`, `minLength`, `maxLength`, `minItems` and `maxItems`.
//! Annotations (`title`, `description`, `default`, `examples`, `format`, …) are
//! kept for clients and not checked. Any other keyword is refused when the script
//! loads, so a schema never looks stricter than what is enforced.

use serde_json::{Map, Value};

/// Keywords clients read and spur does not check.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "format",
    "deprecated",
    "readOnly",
    "writeOnly",
];

const CHECKED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
];

const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// Checks that `schema` only uses keywords spur enforces or annotations, with
/// values of the right shape; `at` names it in messages (`input.properties.id`).
///
/// # Errors
/// The first problem, naming the keyword's place.
pub(crate) fn check_schema(schema: &Value, at: &str) -> Result<(), String> {
    let Value::Object(map) = schema else {
        return Err(format!("{at} must be a map (a JSON Schema)"));
    };
    for (k, v) in map {
        let here = format!("{at}.{k}");
        if ANNOTATIONS.contains(&k.as_str()) {
            continue;
        }
        if !CHECKED.contains(&k.as_str()) {
            return Err(format!(
                "{here}: the keyword {k:?} is not supported (spur checks: {})",
                CHECKED.join(", ")
            ));
        }
        match k.as_str() {
            "type" => {
                let names: Vec<&Value> = match v {
                    Value::Array(list) => list.iter().collect(),
                    one => vec![one],
                };
                for n in names {
                    if !n.as_str().is_some_and(|n| TYPES.contains(&n)) {
                        return Err(format!(
                            "{here}: {n} is not a type (one of {})",
                            TYPES.join(", ")
                        ));
                    }
                }
            }
            "properties" => {
                let Value::Object(props) = v else {
                    return Err(format!("{here} must be a map of property schemas"));
                };
                for (name, s) in props {
                    check_schema(s, &format!("{here}.{name}"))?;
                }
            }
            "required" if !v.as_array().is_some_and(|l| l.iter().all(Value::is_string)) => {
                return Err(format!("{here} must be a list of property names"));
            }
            "additionalProperties" if !v.is_boolean() => check_schema(v, &here)?,
            "items" => check_schema(v, &here)?,
            "enum" if !v.is_array() => return Err(format!("{here} must be a list")),
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" if !v.is_number() => {
                return Err(format!("{here} must be a number"));
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" if !v.is_u64() => {
                return Err(format!("{here} must be a whole number"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Validates `value` against `schema` (already checked by [`check_schema`]).
///
/// # Errors
/// The first mismatch, naming the field: `arguments.user_id: expected string, got 42`.
pub(crate) fn validate(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let Value::Object(s) = schema else {
        return Ok(());
    };
    if let Some(t) = s.get("type") {
        let allowed: Vec<&str> = match t {
            Value::Array(l) => l.iter().filter_map(Value::as_str).collect(),
            one => one.as_str().into_iter().collect(),
        };
        if !allowed.iter().any(|t| is_type(value, t)) {
            return Err(format!(
                "{at}: expected {}, got {}",
                allowed.join(" or "),
                describe(value)
            ));
        }
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.iter().any(|o| crate::json::loose_eq(o, value))
    {
        return Err(format!(
            "{at}: {value} is not one of {}",
            Value::Array(options.clone())
        ));
    }
    if let Some(c) = s.get("const")
        && !crate::json::loose_eq(c, value)
    {
        return Err(format!("{at}: must be {c}, got {value}"));
    }
    match value {
        Value::Object(obj) => validate_object(s, obj, at),
        Value::Array(items) => {
            bound(s, "minItems", "maxItems", items.len(), at, "items")?;
            if let Some(item) = s.get("items") {
                for (i, v) in items.iter().enumerate() {
                    validate(item, v, &format!("{at}[{i}]"))?;
                }
            }
            Ok(())
        }
        Value::String(text) => bound(
            s,
            "minLength",
            "maxLength",
            text.chars().count(),
            at,
            "characters",
        ),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            let limit = |k: &str| s.get(k).and_then(Value::as_f64);
            if let Some(m) = limit("minimum").filter(|m| x < *m) {
                return Err(format!("{at}: {n} is less than the minimum {m}"));
            }
            if let Some(m) = limit("maximum").filter(|m| x > *m) {
                return Err(format!("{at}: {n} is more than the maximum {m}"));
            }
            if let Some(m) = limit("exclusiveMinimum").filter(|m| x <= *m) {
                return Err(format!("{at}: {n} must be more than {m}"));
            }
            if let Some(m) = limit("exclusiveMaximum").filter(|m| x >= *m) {
                return Err(format!("{at}: {n} must be less than {m}"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn validate_object(
    s: &Map<String, Value>,
    obj: &Map<String, Value>,
    at: &str,
) -> Result<(), String> {
    if let Some(Value::Array(required)) = s.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !obj.contains_key(name) {
                return Err(format!("{at}.{name}: is required"));
            }
        }
    }
    let props = s.get("properties").and_then(Value::as_object);
    for (name, v) in obj {
        let here = format!("{at}.{name}");
        match props.and_then(|p| p.get(name)) {
            Some(schema) => validate(schema, v, &here)?,
            None => match s.get("additionalProperties") {
                Some(Value::Bool(false)) => {
                    let known: Vec<&str> = props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    return Err(format!(
                        "{here}: is not an expected field (expected: {})",
                        known.join(", ")
                    ));
                }
                Some(schema @ Value::Object(_)) => validate(schema, v, &here)?,
                _ => {}
            },
        }
    }
    Ok(())
}

fn bound(
    s: &Map<String, Value>,
    min: &str,
    max: &str,
    n: usize,
    at: &str,
    unit: &str,
) -> Result<(), String> {
    let get = |k: &str| {
        s.get(k)
            .and_then(Value::as_u64)
            .map(|v| usize::try_from(v).unwrap_or(usize::MAX))
    };
    if let Some(m) = get(min).filter(|m| n < *m) {
        return Err(format!("{at}: has {n} {unit}, fewer than the minimum {m}"));
    }
    if let Some(m) = get(max).filter(|m| n > *m) {
        return Err(format!("{at}: has {n} {unit}, more than the maximum {m}"));
    }
    Ok(())
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_f64().is_some_and(|x| x.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

fn describe(v: &Value) -> String {
    let kind = match v {
        Value::Null => return "null".into(),
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => return "an array".into(),
        Value::Object(_) => return "an object".into(),
    };
    format!("{kind} {v}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "user_id": { "type": "string", "minLength": 1, "description": "Segment userId" },
                "amount": { "type": "number", "minimum": 0, "maximum": 500 },
                "reason": { "enum": ["damaged", "late"] },
                "tags": { "type": "array", "items": { "type": "string" }, "maxItems": 2 }
            },
            "required": ["user_id"],
            "additionalProperties": false
        })
    }

    fn check(v: Value) -> Result<(), String> {
        validate(&schema(), &v, "arguments")
    }

    #[test]
    fn valid_arguments_pass_and_each_mismatch_names_its_field() {
        check_schema(&schema(), "input").unwrap();
        check(json!({"user_id": "ada", "amount": 20, "tags": ["a"]})).unwrap();
        assert_eq!(
            check(json!({})).unwrap_err(),
            "arguments.user_id: is required"
        );
        assert_eq!(
            check(json!({"user_id": 42})).unwrap_err(),
            "arguments.user_id: expected string, got number 42"
        );
        assert_eq!(
            check(json!({"user_id": "a", "amount": 900})).unwrap_err(),
            "arguments.amount: 900 is more than the maximum 500"
        );
        assert_eq!(
            check(json!({"user_id": "a", "reason": "bored"})).unwrap_err(),
            "arguments.reason: \"bored\" is not one of [\"damaged\",\"late\"]"
        );
        assert_eq!(
            check(json!({"user_id": "a", "tags": ["x", 1]})).unwrap_err(),
            "arguments.tags[1]: expected string, got number 1"
        );
        assert_eq!(
            check(json!({"user_id": "a", "admin": true})).unwrap_err(),
            "arguments.admin: is not an expected field (expected: amount, reason, tags, user_id)"
        );
        assert_eq!(
            check(json!({"user_id": ""})).unwrap_err(),
            "arguments.user_id: has 0 characters, fewer than the minimum 1"
        );
    }

    #[test]
    fn keywords_spur_does_not_check_are_refused_when_the_script_loads() {
        let e = check_schema(
            &json!({"type": "object", "properties": {"id": {"pattern": "^u"}}}),
            "input",
        )
        .unwrap_err();
        assert!(
            e.starts_with("input.properties.id.pattern: the keyword \"pattern\" is not supported"),
            "{e}"
        );
        assert!(
            check_schema(&json!({"type": "text"}), "input")
                .unwrap_err()
                .contains("not a type")
        );
        assert!(check_schema(&json!("object"), "input").is_err());
    }
}
