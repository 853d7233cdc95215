//! Human durations as scripts and config write them: `"500ms"`, `"30s"`, `"10m"`,
//! `"48h"`, `"3d"`, `"1w"`, compound forms like `"1h30m"`, or a bare number of seconds.
//!
//! Every duration that comes from outside (a script, a request, a config file) goes
//! through this module, and none is longer than [`MAX`]: so `now_ms() + d` can never
//! overflow, and no conversion can panic on `inf`, `NaN`, `1e30` or a negative number.

use std::fmt::Write as _;
use std::time::Duration;

/// The longest duration accepted anywhere (100 years).
pub const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A number of seconds (possibly fractional) as a duration.
///
/// # Errors
/// When `secs` is negative, not a number, infinite, or longer than [`MAX`].
pub(crate) fn from_secs_f64(secs: f64) -> Result<Duration, String> {
    if secs.is_nan() || secs < 0.0 {
        return Err(format!(
            "duration {secs} must be a positive number of seconds"
        ));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= MAX => Ok(d),
        _ if secs >= 1e15 => Err(too_long(&format!("{secs:e}"))),
        _ => Err(too_long(&secs.to_string())),
    }
}

/// A whole number of seconds as a duration.
///
/// # Errors
/// When `secs` is negative or longer than [`MAX`].
pub(crate) fn from_secs(secs: i64) -> Result<Duration, String> {
    let d = u64::try_from(secs)
        .map(Duration::from_secs)
        .map_err(|_| format!("duration {secs} must be a positive number of seconds"))?;
    if d > MAX {
        return Err(too_long(&secs.to_string()));
    }
    Ok(d)
}

/// A duration as milliseconds, for adding to a time in ms (never overflows: at most
/// [`MAX`]).
pub(crate) fn as_ms(d: Duration) -> i64 {
    i64::try_from(d.min(MAX).as_millis()).unwrap_or(i64::MAX)
}

fn too_long(text: &str) -> String {
    format!("duration {text} is longer than the 100-year limit")
}

/// Parses a duration string; the error names what was wrong.
///
/// # Errors
/// When the text is empty, has an unknown unit, or is longer than [`MAX`].
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let quoted = crate::event::quote(s);
    if let Ok(secs) = s.parse::<i64>() {
        return from_secs(secs);
    }
    if s.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '-' || c == '+')
        && let Ok(secs) = s.parse::<f64>()
    {
        return from_secs_f64(secs);
    }
    let mut total = 0.0_f64;
    let mut rest = s;
    while !rest.is_empty() {
        // ASCII digits and dots are one byte each, so these byte offsets are char
        // boundaries.
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {quoted} needs a unit (ms, s, m, h, d, w)"))?;
        if digits == 0 {
            return Err(format!(
                "duration {quoted} is not of the form 10m, 48h, 1h30m"
            ));
        }
        let (number, after) = rest.split_at(digits);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("duration {quoted} has a bad number"))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        rest = next.trim_start();
        let secs = match unit.trim() {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "week" | "weeks" => 604_800.0,
            other => {
                let other = crate::event::quote(other);
                return Err(format!("duration {quoted} has unknown unit {other}"));
            }
        };
        total += value * secs;
    }
    from_secs_f64(total).map_err(|_| too_long(&quoted))
}

/// Formats a duration compactly (`"1h30m"`, `"250ms"`).
pub(crate) fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 || !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            let _ = write!(out, "{}{unit}", secs / size);
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("10m").unwrap(), Duration::from_mins(10));
        assert_eq!(parse("48h").unwrap(), Duration::from_hours(48));
        assert_eq!(parse("3d").unwrap(), Duration::from_hours(72));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_mins(90));
        assert_eq!(parse("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("10 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("m").unwrap_err().contains("not of the form"));
    }

    #[test]
    fn refuses_what_no_duration_can_hold() {
        for text in [
            "1e30",
            "inf",
            "-inf",
            "NaN",
            "-5",
            "1e400",
            "99999999999999999999d",
            "-1.5",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
        assert!(parse("36500d").is_ok());
        assert!(parse("36501d").unwrap_err().contains("100-year"));
        assert!(from_secs_f64(f64::INFINITY).is_err());
        assert!(from_secs(i64::MIN).is_err());
        assert_eq!(as_ms(Duration::MAX), as_ms(MAX));
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format(Duration::from_mins(90)), "1h30m");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
    }
}
