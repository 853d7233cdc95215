//! The Segment message model: validation and normalisation of what clients send
//! (`segment-spec.md` §1) and of what Segment delivers (webhooks, §2).
//!
//! An event stays a JSON object with Segment's own field names — unknown fields are
//! kept — so scripts see exactly what Segment documents. Normalising stamps
//! `receivedAt`, `originalTimestamp`, the clock-skew-corrected `timestamp`, merges a
//! batch's `context`/`integrations` into each item (the item wins) and assigns a
//! `messageId` when absent.

use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// Segment's largest accepted event, in bytes.
pub(crate) const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Segment's largest accepted batch request, in bytes.
pub(crate) const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Items past this index of a batch are rejected.
pub(crate) const MAX_BATCH_ITEMS: usize = 2500;
/// Longest accepted `messageId`.
pub(crate) const MAX_MESSAGE_ID_CHARS: usize = 100;

/// The kinds of Segment messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
    /// A user-deletion notice; only from the Webhooks destination.
    Delete,
}

impl EventType {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "track" => Self::Track,
            "identify" => Self::Identify,
            "page" => Self::Page,
            "screen" => Self::Screen,
            "group" => Self::Group,
            "alias" => Self::Alias,
            "delete" => Self::Delete,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Track => "track",
            Self::Identify => "identify",
            Self::Page => "page",
            Self::Screen => "screen",
            Self::Group => "group",
            Self::Alias => "alias",
            Self::Delete => "delete",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event was refused. Each answer carries a stable `code` and the `field` at
/// fault besides the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("`type` is required")]
    MissingType,
    #[error("`type` must be a string")]
    TypeNotString,
    /// The quoted value.
    #[error("`type` {0} is not one of track, identify, page, screen, group, alias")]
    UnknownType(String),
    #[error("`type` \"delete\" is only accepted from the Webhooks destination")]
    DeleteNotDelivered,
    #[error("`{0}` must be an object")]
    NotAnObject(&'static str),
    #[error("`{0}` must be a string")]
    NotAString(&'static str),
    #[error("`{0}` must be a string or a number")]
    InvalidId(&'static str),
    /// A field the type needs (`userId` of an alias, `groupId` of a group, …).
    #[error("{kind} requires `{field}`")]
    Missing {
        kind: EventType,
        field: &'static str,
    },
    #[error("{0} requires `userId` or `anonymousId`")]
    NoUser(EventType),
    #[error("`event` must not be empty")]
    EmptyEvent,
    #[error("`event` must be a string")]
    EventNotString,
    #[error("`messageId` must be a string")]
    MessageIdNotString,
    #[error("`messageId` has {0} characters; the limit is {MAX_MESSAGE_ID_CHARS}")]
    MessageIdTooLong(usize),
    /// A time that does not parse, with the quoted value.
    #[error("`{field}` {value} is not an ISO-8601 date-time")]
    BadTime { field: &'static str, value: String },
    #[error("`timestamp` must be an ISO-8601 string")]
    TimestampNotString,
    #[error("`timestamp` and `sentAt` are too far apart to correct the clock skew")]
    SkewTooLarge,
    /// An item of a batch over [`MAX_EVENT_BYTES`].
    #[error("event is {bytes} bytes; the limit is {MAX_EVENT_BYTES}")]
    TooLarge { field: &'static str, bytes: usize },
    /// An item of a batch that is not a JSON object (`item` names it).
    #[error("each {item} must be a JSON object")]
    ItemNotAnObject {
        field: &'static str,
        item: &'static str,
    },
}

impl InvalidEvent {
    /// The stable code answered with it (`missing_user_id`, `invalid_timestamp`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingType => "missing_type",
            Self::TypeNotString | Self::UnknownType(_) | Self::DeleteNotDelivered => "invalid_type",
            Self::NotAnObject(_) | Self::NotAString(_) => "invalid_field",
            Self::InvalidId(_) => "invalid_id",
            Self::Missing { field, .. } => match *field {
                "userId" => "missing_user_id",
                "previousId" => "missing_previous_id",
                "groupId" => "missing_group_id",
                _ => "missing_event",
            },
            Self::NoUser(_) => "no_user_anon_id",
            Self::EmptyEvent => "missing_event",
            Self::MessageIdNotString => "invalid_message_id",
            Self::MessageIdTooLong(_) => "message_id_too_long",
            Self::BadTime { .. } | Self::TimestampNotString | Self::SkewTooLarge => {
                "invalid_timestamp"
            }
            Self::TooLarge { .. } => "too_large",
            Self::EventNotString | Self::ItemNotAnObject { .. } => "invalid_event",
        }
    }

    /// The field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            Self::MissingType
            | Self::TypeNotString
            | Self::UnknownType(_)
            | Self::DeleteNotDelivered => "type",
            Self::NotAnObject(field)
            | Self::NotAString(field)
            | Self::InvalidId(field)
            | Self::Missing { field, .. }
            | Self::BadTime { field, .. }
            | Self::TooLarge { field, .. }
            | Self::ItemNotAnObject { field, .. } => field,
            Self::NoUser(_) => "userId",
            Self::EmptyEvent | Self::EventNotString => "event",
            Self::MessageIdTooLong(_) | Self::MessageIdNotString => "messageId",
            Self::TimestampNotString => "timestamp",
            Self::SkewTooLarge => "sentAt",
        }
    }
}

/// `text` quoted for an error message and cut to 40 characters (at a character
/// boundary), so an answer never echoes a huge value back.
pub(crate) fn quote(text: &str) -> String {
    const SHOWN: usize = 40;
    match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}

/// Where an event came from, which decides how much the server stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client library through the Tracking API: the server stamps times.
    Tracking,
    /// Already processed by Segment (Webhooks destination): times are kept.
    Delivered,
    /// Written back to Segment by a script: validated, `timestamp` set if absent,
    /// nothing else stamped (Segment stamps on receipt).
    Outbound,
}

/// Request-level values that apply to every item of a batch.
#[derive(Debug, Default, Clone)]
pub struct BatchDefaults<'a> {
    pub context: Option<&'a Map<String, Value>>,
    pub integrations: Option<&'a Map<String, Value>>,
    pub sent_at: Option<&'a Value>,
}

/// A validated, normalised event ready to store.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventType,
    pub message_id: String,
    pub body: Map<String, Value>,
}

impl Event {
    /// The ordering key of DESIGN.md §7: `userId`, else `anonymousId`.
    pub(crate) fn user_key(&self) -> Option<&str> {
        user_key(&self.body)
    }

    /// The track event's name.
    pub fn name(&self) -> Option<&str> {
        self.body.get("event").and_then(Value::as_str)
    }
}

/// `userId`, else `anonymousId`, of an event body.
pub(crate) fn user_key(body: &Map<String, Value>) -> Option<&str> {
    ["userId", "anonymousId"].iter().find_map(|k| {
        body.get(*k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    })
}

/// Validates and normalises one message.
///
/// `implied` is the type given by a single-event path (`/v1/track`); batch items and
/// deliveries must carry their own `type`.
///
/// # Errors
/// `InvalidEvent` naming the field at fault.
pub fn normalize(
    mut body: Map<String, Value>,
    implied: Option<EventType>,
    defaults: &BatchDefaults<'_>,
    origin: Origin,
    now: DateTime<Utc>,
) -> Result<Event, InvalidEvent> {
    let kind = match implied {
        Some(t) => t,
        None => match body.get("type") {
            Some(Value::String(s)) => match EventType::parse(s) {
                Some(EventType::Delete) if origin != Origin::Delivered => {
                    return Err(InvalidEvent::DeleteNotDelivered);
                }
                Some(t) => t,
                None => {
                    return Err(InvalidEvent::UnknownType(quote(s)));
                }
            },
            Some(_) => return Err(InvalidEvent::TypeNotString),
            None => return Err(InvalidEvent::MissingType),
        },
    };
    body.insert("type".into(), Value::String(kind.as_str().into()));

    merge_defaults(&mut body, "context", defaults.context)?;
    merge_defaults(&mut body, "integrations", defaults.integrations)?;
    for key in ["properties", "traits"] {
        if let Some(v) = body.get(key)
            && !(v.is_object() || v.is_null())
        {
            return Err(InvalidEvent::NotAnObject(key));
        }
    }

    let has_user = normalize_id(&mut body, "userId")?;
    let has_anon = normalize_id(&mut body, "anonymousId")?;
    match kind {
        EventType::Alias => {
            if !has_user {
                return Err(missing(kind, "userId"));
            }
            if !normalize_id(&mut body, "previousId")? {
                return Err(missing(kind, "previousId"));
            }
        }
        EventType::Delete if !has_user => return Err(missing(kind, "userId")),
        _ if !has_user && !has_anon => return Err(InvalidEvent::NoUser(kind)),
        _ => {}
    }
    match kind {
        EventType::Track => match body.get("event") {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::String(_)) => return Err(InvalidEvent::EmptyEvent),
            Some(_) => return Err(InvalidEvent::EventNotString),
            None => return Err(missing(kind, "event")),
        },
        EventType::Group if !normalize_id(&mut body, "groupId")? => {
            return Err(missing(kind, "groupId"));
        }
        EventType::Page | EventType::Screen => {
            for key in ["name", "category"] {
                if let Some(v) = body.get(key)
                    && !(v.is_string() || v.is_null())
                {
                    return Err(InvalidEvent::NotAString(key));
                }
            }
        }
        _ => {}
    }

    let message_id = match body.get("messageId") {
        Some(Value::String(s)) if s.chars().count() > MAX_MESSAGE_ID_CHARS => {
            return Err(InvalidEvent::MessageIdTooLong(s.chars().count()));
        }
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_) | Value::Null) | None => {
            let id = format!("spur-{}", uuid::Uuid::new_v4());
            body.insert("messageId".into(), Value::String(id.clone()));
            id
        }
        Some(_) => return Err(InvalidEvent::MessageIdNotString),
    };

    stamp_times(&mut body, defaults, origin, now)?;
    Ok(Event {
        kind,
        message_id,
        body,
    })
}

fn missing(kind: EventType, field: &'static str) -> InvalidEvent {
    InvalidEvent::Missing { kind, field }
}

fn time_of(field: &'static str, text: &str) -> Result<DateTime<Utc>, InvalidEvent> {
    parse_time(text).ok_or_else(|| InvalidEvent::BadTime {
        field,
        value: quote(text),
    })
}

/// Merges request-level defaults into an item's object field; the item's keys win.
fn merge_defaults(
    body: &mut Map<String, Value>,
    key: &'static str,
    defaults: Option<&Map<String, Value>>,
) -> Result<(), InvalidEvent> {
    match body.get_mut(key) {
        Some(Value::Object(own)) => {
            if let Some(d) = defaults {
                for (k, v) in d {
                    own.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        Some(Value::Null) | None => {
            if let Some(d) = defaults {
                body.insert(key.to_owned(), Value::Object(d.clone()));
            }
        }
        Some(_) => return Err(InvalidEvent::NotAnObject(key)),
    }
    Ok(())
}

/// Accepts a string or a number (stored as a string); `null` or `""` counts as absent.
fn normalize_id(body: &mut Map<String, Value>, key: &'static str) -> Result<bool, InvalidEvent> {
    let Some(v) = body.get_mut(key) else {
        return Ok(false);
    };
    match v {
        Value::Null => Ok(false),
        Value::String(s) => Ok(!s.is_empty()),
        Value::Number(n) => {
            if n.as_u64().is_some_and(|u| u > (1 << 53))
                || n.as_i64().is_some_and(|i| i < -(1 << 53))
            {
                tracing::warn!(field = key, value = %n, "Numeric id above 2^53 may have lost precision.");
            }
            *v = Value::String(n.to_string());
            Ok(true)
        }
        _ => Err(InvalidEvent::InvalidId(key)),
    }
}

fn stamp_times(
    body: &mut Map<String, Value>,
    defaults: &BatchDefaults<'_>,
    origin: Origin,
    now: DateTime<Utc>,
) -> Result<(), InvalidEvent> {
    let received = format_time(now);
    if origin == Origin::Outbound {
        if !body.get("timestamp").is_some_and(Value::is_string) {
            body.insert("timestamp".into(), Value::String(received));
        }
        return Ok(());
    }
    if origin == Origin::Delivered {
        body.entry("receivedAt")
            .or_insert_with(|| Value::String(received.clone()));
        if !body.get("timestamp").is_some_and(Value::is_string) {
            let ts = body
                .get("receivedAt")
                .cloned()
                .unwrap_or(Value::String(received));
            body.insert("timestamp".into(), ts);
        }
        return Ok(());
    }
    let original = match body.get("timestamp") {
        Some(Value::String(s)) => Some(time_of("timestamp", s)?),
        Some(Value::Null) | None => None,
        Some(_) => return Err(InvalidEvent::TimestampNotString),
    };
    if !body.contains_key("sentAt")
        && let Some(s) = defaults.sent_at
    {
        body.insert("sentAt".into(), s.clone());
    }
    let sent = match body.get("sentAt") {
        Some(Value::String(s)) => Some(time_of("sentAt", s)?),
        _ => None,
    };
    let timestamp = match (original, sent) {
        // Clock-skew correction: the device's clock was off by `sent - orig`'s error.
        (Some(orig), Some(sent)) => now
            .checked_add_signed(orig.signed_duration_since(sent))
            .ok_or(InvalidEvent::SkewTooLarge)?,
        (Some(orig), None) => orig,
        (None, _) => now,
    };
    if original.is_none() {
        body.insert("originalTimestamp".into(), Value::String(received.clone()));
    } else if let Some(ts) = body.get("timestamp").cloned() {
        body.insert("originalTimestamp".into(), ts);
    }
    body.insert("timestamp".into(), Value::String(format_time(timestamp)));
    body.insert("receivedAt".into(), Value::String(received));
    Ok(())
}

/// RFC 3339 with milliseconds and `Z`, as Segment writes times.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses ISO-8601 leniently: offsets or `Z`, any fraction, a space for `T`,
/// unpadded months and days (`2015-2-02T00:30:08.276Z`), or a bare date. Any text
/// is safe to pass (no byte slicing inside a character).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let s = s.trim().replacen(' ', "T", 1);
    let (date, rest) = s.split_once('T').unwrap_or((&s, ""));
    let mut parts = date.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let padded = format!("{y}-{m:0>2}-{d:0>2}");
    if rest.is_empty() {
        let day = NaiveDate::parse_from_str(&padded, "%Y-%m-%d").ok()?;
        return Some(day.and_hms_opt(0, 0, 0)?.and_utc());
    }
    // A sign after the first character is an offset (`12:00+02:00`).
    let mut after_first = rest.chars();
    after_first.next();
    let after_first = after_first.as_str();
    let has_zone = rest.ends_with('Z') || after_first.contains(['+', '-']);
    let full = if has_zone {
        format!("{padded}T{rest}")
    } else {
        format!("{padded}T{rest}Z")
    };
    DateTime::parse_from_rfc3339(&full)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
