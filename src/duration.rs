//! Human durations as scripts and config write them: `"500ms"`, `"30s"`, `"10m"`,
//! `"48h"`, `"3d"`, `"1w"`, compound forms like `"1h30m"`, or a bare number of seconds.

use std::fmt::Write as _;
use std::time::Duration;

/// Parses a duration string; the error names what was wrong.
///
/// # Errors
/// When the text is empty, has an unknown unit, or overflows.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {text:?} needs a unit (ms, s, m, h, d, w)"))?;
        if digits == 0 {
            return Err(format!(
                "duration {text:?} is not of the form 10m, 48h, 1h30m"
            ));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {text:?} has a bad number"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = rest[unit_len..].trim_start();
        let secs = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "week" | "weeks" => 604_800.0,
            other => return Err(format!("duration {text:?} has unknown unit {other:?}")),
        };
        let part = value * secs;
        if !part.is_finite() || part > 1e12 {
            return Err(format!("duration {text:?} is too large"));
        }
        total += Duration::from_secs_f64(part);
    }
    Ok(total)
}

/// Formats a duration compactly (`"1h30m"`, `"250ms"`).
pub fn format(d: Duration) -> String {
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
    fn formats_compactly() {
        assert_eq!(format(Duration::from_mins(90)), "1h30m");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
    }
}
