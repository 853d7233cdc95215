//! Cron expressions: parsing, and the next fire time after a given instant.
//!
//! Grammar: 5 fields (`min hour dom month dow`), or 6 with seconds first; the aliases
//! `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight` and `@hourly`; an
//! optional `TZ=Zone ` or `CRON_TZ=Zone ` prefix (IANA name, UTC by default). Each field is a
//! list of `*`, `a`, `a-b`, `*/n`, `a-b/n` or `a/n` (from `a` to the field's maximum); months
//! and days of the week also take names (`JAN`-`DEC`, `SUN`-`SAT`, any case); `?` means `*`
//! in day-of-month and day-of-week; day-of-week 0 and 7 are both Sunday. As in Vixie cron,
//! when day-of-month and day-of-week are both restricted (neither is `*` or `?`), a day
//! matches if either does.
//!
//! Fields are matched against wall-clock time in the schedule's zone. Daylight-saving
//! transitions follow Vixie cron, which tells "interval" schedules (the seconds, minute or
//! hour field starts with `*`, e.g. `0 * * * *`, `*/15 * * * *`) from "fixed-time" ones:
//! - interval schedules follow elapsed time: a skipped wall-clock time is skipped, and a
//!   repeated one fires at both occurrences, so an hourly job fires every real hour;
//! - fixed-time schedules fire once per wall-clock time: a repeated time fires at its first
//!   occurrence only, and a time skipped by a spring-forward fires once, at the first instant
//!   after the gap.
//!
//! The search jumps field by field (month, day, hour, minute, second), never minute by
//! minute, and looks at most [`MAX_YEARS_AHEAD`] years ahead: enough for any expression that
//! can fire at all (29 February can be 8 years away, across 2100), so `None` means never.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone,
    Timelike, Utc,
};
use chrono_tz::{GapInfo, Tz};

/// How many calendar years past the start the search looks before giving up. Eight is the
/// longest wait between two fire times of any satisfiable expression (`0 0 29 2 *` from
/// 2096-03-01 next fires on 2104-02-29), so giving up means the expression never fires.
pub(crate) const MAX_YEARS_AHEAD: i32 = 8;

/// How far ahead (in hours) `next_after` looks for a fall-back that could repeat wall-clock
/// times earlier than the current one; larger than any backward shift in the tz database.
const FALL_BACK_LOOKAHEAD_HOURS: i64 = 26;

/// A parsed cron expression with its time zone.
///
/// Each field is a bit set: bit `v` is set when value `v` matches (seconds 0-59, minutes
/// 0-59, hours 0-23, days of month 1-31, months 1-12, days of week 0-6 with 0 = Sunday).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    expr: String,
    tz: Tz,
    seconds: u64,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// Both day fields are restricted, so a day matches if either one does.
    either_day: bool,
    /// Vixie's "wildcard" job: follows elapsed time across DST changes (see module docs).
    interval: bool,
}

/// Why an expression was rejected; the message names the expression and every bad field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CronError {
    pub message: String,
}

impl Schedule {
    /// Parses `expr` (see the module docs for the grammar).
    ///
    /// # Errors
    /// When the time zone is unknown, the alias is unknown, the field count is not 5 or 6, or
    /// a field has a bad value, range, step or name. Every problem found is reported in one
    /// message, e.g. `cron "0 25 * * *": hour 25 is out of range 0-23`.
    pub fn parse(expr: &str) -> Result<Schedule, CronError> {
        let mut problems = Vec::new();
        let (tz, body) = match split_tz_prefix(expr) {
            Some((zone, body)) => {
                let tz = lookup_tz(zone).unwrap_or_else(|| {
                    problems.push(format!("unknown time zone \"{zone}\""));
                    chrono_tz::UTC
                });
                (tz, body)
            }
            None => (chrono_tz::UTC, expr.trim()),
        };
        let body = match body.strip_prefix('@') {
            Some(alias) => alias_fields(alias).unwrap_or_else(|| {
                problems.push(format!(
                    "unknown alias \"{body}\" (expected @yearly, @annually, @monthly, \
                     @weekly, @daily, @midnight or @hourly)"
                ));
                "* * * * *"
            }),
            None => body,
        };
        let fields: Vec<&str> = body.split_whitespace().collect();
        let (second, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                problems.push(format!("expected 5 fields (or 6 with seconds), got {n}"));
                return Err(CronError::new(expr, &problems));
            }
        };
        let (minute, hour, dom, month, dow) = (rest[0], rest[1], rest[2], rest[3], rest[4]);
        let mut field = |spec: &Field, text: &str| {
            parse_field(spec, text).unwrap_or_else(|problem| {
                problems.push(problem);
                0
            })
        };
        let schedule = Schedule {
            expr: expr.to_owned(),
            tz,
            seconds: field(&SECOND, second),
            minutes: field(&MINUTE, minute),
            hours: field(&HOUR, hour),
            days_of_month: field(&DAY_OF_MONTH, dom),
            months: field(&MONTH, month),
            days_of_week: field(&DAY_OF_WEEK, dow),
            either_day: is_restricted(dom) && is_restricted(dow),
            interval: [second, minute, hour].iter().any(|f| f.starts_with('*')),
        };
        if problems.is_empty() {
            Ok(schedule)
        } else {
            Err(CronError::new(expr, &problems))
        }
    }

    /// The first fire time strictly after `after`, in UTC, with no sub-second part.
    ///
    /// `None` only if the expression can never fire (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after_sec = after.naive_utc().with_nanosecond(0)?;
        // Wall-clock candidates are visited in order. The earliest instant of a wall-clock
        // time never decreases as the time increases, so the first candidate whose earliest
        // instant is after `after` ends the search; before it, only a second occurrence in a
        // fall-back overlap (interval schedules only) can still be the answer.
        let mut local = if self.interval {
            self.lowest_local_after(after_sec)?
        } else {
            self.to_local(after_sec)?
        };
        let mut best: Option<DateTime<Utc>> = None;
        while let Some(next) = self.next_local(local) {
            local = next;
            match self.instants(local) {
                (Some(first), _) if first > after => {
                    return Some(best.map_or(first, |b| b.min(first)));
                }
                (Some(first), Some(repeat)) if !self.interval || repeat > after => {
                    if self.interval {
                        best = Some(best.map_or(repeat, |b| b.min(repeat)));
                    }
                    // Later repeated times fire again later still, and times that already
                    // occurred by `after` cannot fire sooner: skip past them.
                    let reached = self.reached_by(after_sec, first.naive_utc(), repeat.naive_utc());
                    local = local.max(reached?);
                }
                _ => {}
            }
        }
        best
    }

    /// The original expression text.
    pub(crate) fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone the fields are evaluated in (UTC when there was no prefix).
    pub(crate) fn tz(&self) -> Tz {
        self.tz
    }

    /// When wall-clock time `local` fires: its first occurrence, and its repeat if the clocks
    /// fall back over it (which fires again only for interval schedules). In a spring-forward
    /// gap, a fixed-time schedule fires at the first instant after the gap; an interval
    /// schedule does not fire.
    fn instants(&self, local: NaiveDateTime) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(at) => (Some(at.with_timezone(&Utc)), None),
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                (Some(a.min(b)), Some(a.max(b)))
            }
            LocalResult::None if self.interval => (None, None),
            LocalResult::None => {
                let end = GapInfo::new(&local, &self.tz).and_then(|gap| gap.end);
                (end.map(|at| at.with_timezone(&Utc)), None)
            }
        }
    }

    /// The first matching wall-clock time strictly after `after` (whose sub-second part is
    /// ignored), looking at most [`MAX_YEARS_AHEAD`] years ahead.
    fn next_local(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let start = after
            .with_nanosecond(0)?
            .checked_add_signed(TimeDelta::seconds(1))?;
        let last_year = start.year().checked_add(MAX_YEARS_AHEAD)?;
        let (mut year, mut month, mut day) = (start.year(), start.month(), start.day());
        let (mut hour, mut minute, mut second) = (start.hour(), start.minute(), start.second());
        // Each step either accepts the current value of a field or moves to the next
        // candidate of a coarser field and resets the finer ones.
        loop {
            if year > last_year {
                return None;
            }
            let Some(m) = next_in(self.months, month) else {
                (year, month, day, hour, minute, second) = (year + 1, 1, 1, 0, 0, 0);
                continue;
            };
            if m != month {
                (month, day, hour, minute, second) = (m, 1, 0, 0, 0);
            }
            let Some(d) = self.next_day(year, month, day) else {
                (month, day, hour, minute, second) = (month + 1, 1, 0, 0, 0);
                continue;
            };
            if d != day {
                (day, hour, minute, second) = (d, 0, 0, 0);
            }
            let Some(h) = next_in(self.hours, hour) else {
                (day, hour, minute, second) = (day + 1, 0, 0, 0);
                continue;
            };
            if h != hour {
                (hour, minute, second) = (h, 0, 0);
            }
            let Some(mi) = next_in(self.minutes, minute) else {
                (hour, minute, second) = (hour + 1, 0, 0);
                continue;
            };
            if mi != minute {
                (minute, second) = (mi, 0);
            }
            let Some(s) = next_in(self.seconds, second) else {
                (minute, second) = (minute + 1, 0);
                continue;
            };
            return NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, s);
        }
    }

    /// The first day `>= from` of `year`-`month` that matches both day fields (or either,
    /// when both are restricted).
    fn next_day(&self, year: i32, month: u32, from: u32) -> Option<u32> {
        (from..=days_in_month(year, month)).find(|&day| {
            let Some(date) = NaiveDate::from_ymd_opt(year, month, day) else {
                return false;
            };
            let dom = bit(self.days_of_month, day);
            let dow = bit(self.days_of_week, date.weekday().num_days_from_sunday());
            if self.either_day {
                dom || dow
            } else {
                dom && dow
            }
        })
    }

    /// A wall-clock time below the local time of every instant after `utc`: the local time of
    /// `utc` itself, unless a fall-back soon after `utc` repeats earlier wall-clock times.
    fn lowest_local_after(&self, utc: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut lowest = self.to_local(utc)?;
        let (mut prev, mut prev_offset) = (utc, self.offset_at(utc));
        // Offsets change at most once per sampled hour (transitions are months apart).
        for hours in 1..=FALL_BACK_LOOKAHEAD_HOURS {
            let Some(at) = utc.checked_add_signed(TimeDelta::hours(hours)) else {
                break;
            };
            let offset = self.offset_at(at);
            if offset < prev_offset {
                let fall_back = self.first_with_offset(prev, at, offset);
                let repeated = fall_back.checked_add_signed(offset - TimeDelta::seconds(1))?;
                lowest = lowest.min(repeated);
            }
            (prev, prev_offset) = (at, offset);
        }
        Some(lowest)
    }

    /// The latest wall-clock time reached by `utc`, given that the clocks fall back between
    /// `early` and `late`, the two occurrences of one repeated wall-clock time.
    fn reached_by(
        &self,
        utc: NaiveDateTime,
        early: NaiveDateTime,
        late: NaiveDateTime,
    ) -> Option<NaiveDateTime> {
        let now = self.to_local(utc)?;
        let fall_back = self.first_with_offset(early, late, self.offset_at(late));
        if utc < fall_back {
            return Some(now);
        }
        let before = self.to_local(fall_back.checked_sub_signed(TimeDelta::seconds(1))?)?;
        Some(now.max(before))
    }

    /// The first whole second in `(before, at]` whose offset is `offset`, given that `at` has
    /// it and `before` has not: the instant of the transition between them.
    fn first_with_offset(
        &self,
        mut before: NaiveDateTime,
        mut at: NaiveDateTime,
        offset: TimeDelta,
    ) -> NaiveDateTime {
        while (at - before).num_seconds() > 1 {
            let mid = before + TimeDelta::seconds((at - before).num_seconds() / 2);
            if self.offset_at(mid) == offset {
                at = mid;
            } else {
                before = mid;
            }
        }
        at
    }

    fn offset_at(&self, utc: NaiveDateTime) -> TimeDelta {
        let offset = self.tz.offset_from_utc_datetime(&utc).fix();
        TimeDelta::seconds(i64::from(offset.local_minus_utc()))
    }

    fn to_local(&self, utc: NaiveDateTime) -> Option<NaiveDateTime> {
        utc.checked_add_signed(self.offset_at(utc))
    }
}

impl FromStr for Schedule {
    type Err = CronError;

    fn from_str(expr: &str) -> Result<Self, Self::Err> {
        Self::parse(expr)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl CronError {
    fn new(expr: &str, problems: &[String]) -> Self {
        Self {
            message: format!("cron \"{expr}\": {}", problems.join("; ")),
        }
    }
}

/// One field's name (as error messages say it), range, and names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for `min`, `min + 1`, … (months from 1, days of the week from 0).
    names: &'static [&'static str],
    /// Whether `?` is accepted as `*`.
    question: bool,
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    question: false,
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    question: false,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    question: false,
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    question: true,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    question: false,
};
/// 0-7 where 7 is Sunday again; stored as 0-6.
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    question: true,
};

/// Parses a comma-separated list into a bit set; the error is one message for the field.
fn parse_field(spec: &Field, text: &str) -> Result<u64, String> {
    let mut mask = 0;
    for item in text.split(',') {
        mask |= parse_item(spec, item)?;
    }
    Ok(mask)
}

/// Parses one list item: `*`, `?`, `a`, `a-b`, each optionally followed by `/step`.
fn parse_item(spec: &Field, item: &str) -> Result<u64, String> {
    let name = spec.name;
    if item.is_empty() {
        return Err(format!("{name} has an empty list item"));
    }
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(parse_step(spec, step)?)),
        None => (item, None),
    };
    let (low, high) = if range == "*" || (range == "?" && spec.question) {
        (spec.min, spec.max)
    } else if range == "?" {
        return Err(format!(
            "{name} does not accept \"?\" (only day-of-month and day-of-week do)"
        ));
    } else if let Some((a, b)) = range.split_once('-') {
        if a.is_empty() || b.is_empty() {
            return Err(format!("{name} range \"{range}\" is missing a bound"));
        }
        let (low, high) = (parse_value(spec, a)?, parse_value(spec, b)?);
        if low > high {
            return Err(format!(
                "{name} range {range} is reversed (start is after end)"
            ));
        }
        (low, high)
    } else {
        let value = parse_value(spec, range)?;
        // `a/n` means from `a` to the maximum, every `n`.
        (value, if step.is_some() { spec.max } else { value })
    };
    let mut mask = 0;
    for value in (low..=high).step_by(step.unwrap_or(1)) {
        // Day-of-week 7 is Sunday, stored as 0; no other field reaches 7 with this range.
        let value = if spec.max == 7 && value == 7 {
            0
        } else {
            value
        };
        mask |= 1 << value;
    }
    Ok(mask)
}

fn parse_step(spec: &Field, text: &str) -> Result<usize, String> {
    let (name, widest) = (spec.name, spec.max - spec.min);
    if text.is_empty() {
        return Err(format!("{name} step is missing after \"/\""));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{name} step \"{text}\" is not a number"));
    }
    match text.parse::<u32>() {
        Ok(step) if (1..=widest).contains(&step) => Ok(step as usize),
        _ => Err(format!("{name} step {text} is out of range 1-{widest}")),
    }
}

/// Parses a number or (for months and days of the week) a name, checking the range.
fn parse_value(spec: &Field, text: &str) -> Result<u32, String> {
    let Field {
        name,
        min,
        max,
        names,
        ..
    } = *spec;
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(value) if (min..=max).contains(&value) => Ok(value),
            _ => Err(format!("{name} {text} is out of range {min}-{max}")),
        };
    }
    if let Some(index) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(min + index as u32);
    }
    match (names.first(), names.last()) {
        (Some(first), Some(last)) => Err(format!(
            "{name} \"{text}\" is neither a name ({first}-{last}) nor a number ({min}-{max})"
        )),
        _ => Err(format!("{name} \"{text}\" is not a number")),
    }
}

/// A day field is unrestricted only when it is exactly `*` or `?`.
fn is_restricted(text: &str) -> bool {
    text != "*" && text != "?"
}

/// Splits a leading `TZ=Zone ` or `CRON_TZ=Zone ` into the zone name and the rest.
fn split_tz_prefix(expr: &str) -> Option<(&str, &str)> {
    let trimmed = expr.trim_start();
    let after = trimmed
        .strip_prefix("TZ=")
        .or_else(|| trimmed.strip_prefix("CRON_TZ="))?;
    let (zone, rest) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
    Some((zone, rest.trim()))
}

/// Looks a zone up by its IANA name, exactly first, then ignoring case.
fn lookup_tz(zone: &str) -> Option<Tz> {
    zone.parse().ok().or_else(|| {
        chrono_tz::TZ_VARIANTS
            .iter()
            .copied()
            .find(|tz| tz.name().eq_ignore_ascii_case(zone))
    })
}

fn alias_fields(alias: &str) -> Option<&'static str> {
    Some(match alias.to_ascii_lowercase().as_str() {
        "yearly" | "annually" => "0 0 1 1 *",
        "monthly" => "0 0 1 * *",
        "weekly" => "0 0 * * 0",
        "daily" | "midnight" => "0 0 * * *",
        "hourly" => "0 * * * *",
        _ => return None,
    })
}

/// The smallest set bit of `mask` that is `>= from`.
fn next_in(mask: u64, from: u32) -> Option<u32> {
    let rest = mask.checked_shr(from)? << from;
    (rest != 0).then(|| rest.trailing_zeros())
}

fn bit(mask: u64, value: u32) -> bool {
    mask.checked_shr(value).is_some_and(|m| m & 1 == 1)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if NaiveDate::from_ymd_opt(year, 2, 29).is_some() => 29,
        2 => 28,
        _ => 31,
    }
}

#[cfg(test)]
#[path = "cron_tests.rs"]
mod tests;
