//! Tests for cron parsing and fire times. Instants are written as RFC 3339 UTC strings;
//! Berlin springs forward on 2026-03-29 (02:00 CET -> 03:00 CEST, 01:00Z) and falls back on
//! 2026-10-25 (03:00 CEST -> 02:00 CET, 01:00Z); New York on 2026-03-08 (07:00Z) and
//! 2026-11-01 (06:00Z).

use chrono::SecondsFormat;

use super::*;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn show(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The next `n` fire times of `expr` after `after`.
fn fires(expr: &str, after: &str, n: usize) -> Vec<String> {
    let schedule = Schedule::parse(expr).unwrap();
    let mut cursor = at(after);
    let mut out = Vec::new();
    for _ in 0..n {
        cursor = schedule.next_after(cursor).unwrap();
        out.push(show(cursor));
    }
    out
}

fn next(expr: &str, after: &str) -> Option<String> {
    Schedule::parse(expr)
        .unwrap()
        .next_after(at(after))
        .map(show)
}

fn error(expr: &str) -> String {
    Schedule::parse(expr).unwrap_err().to_string()
}

#[test]
fn cron_five_field_fires_at_the_next_matching_minute() {
    assert_eq!(
        fires("30 9 * * *", "2026-05-01T08:00:00Z", 2),
        ["2026-05-01T09:30:00Z", "2026-05-02T09:30:00Z"]
    );
}

#[test]
fn cron_six_field_expression_reads_seconds_first() {
    assert_eq!(
        fires("15,45 30 9 * * *", "2026-05-01T09:30:15Z", 3),
        [
            "2026-05-01T09:30:45Z",
            "2026-05-02T09:30:15Z",
            "2026-05-02T09:30:45Z"
        ]
    );
    assert_eq!(
        fires("*/20 * * * * *", "2026-05-01T09:30:41Z", 2),
        ["2026-05-01T09:31:00Z", "2026-05-01T09:31:20Z"]
    );
}

#[test]
fn cron_next_after_is_strictly_after_and_whole_seconds() {
    assert_eq!(
        next("* * * * *", "2026-05-01T10:00:00Z").unwrap(),
        "2026-05-01T10:01:00Z"
    );
    assert_eq!(
        next("* * * * *", "2026-05-01T09:59:59.999Z").unwrap(),
        "2026-05-01T10:00:00Z"
    );
    assert_eq!(
        next("* * * * * *", "2026-05-01T10:00:00.5Z").unwrap(),
        "2026-05-01T10:00:01Z"
    );
    let fired = Schedule::parse("0 0 * * *")
        .unwrap()
        .next_after(at("2026-05-01T10:00:00.123456789Z"))
        .unwrap();
    assert_eq!(fired.nanosecond(), 0);
}

#[test]
fn cron_aliases_expand_to_their_five_field_forms() {
    let after = "2026-05-13T10:20:30Z"; // a Wednesday
    let cases = [
        ("@yearly", "2027-01-01T00:00:00Z"),
        ("@annually", "2027-01-01T00:00:00Z"),
        ("@monthly", "2026-06-01T00:00:00Z"),
        ("@weekly", "2026-05-17T00:00:00Z"),
        ("@daily", "2026-05-14T00:00:00Z"),
        ("@midnight", "2026-05-14T00:00:00Z"),
        ("@hourly", "2026-05-13T11:00:00Z"),
        ("@DAILY", "2026-05-14T00:00:00Z"),
        ("TZ=Europe/Berlin @daily", "2026-05-13T22:00:00Z"),
    ];
    for (expr, want) in cases {
        assert_eq!(next(expr, after).unwrap(), want, "{expr}");
    }
}

#[test]
fn cron_month_and_day_names_are_case_insensitive() {
    assert_eq!(
        next("0 12 1 mar *", "2026-05-01T00:00:00Z").unwrap(),
        "2027-03-01T12:00:00Z"
    );
    assert_eq!(
        next("0 12 * Jan-Feb Sun", "2026-05-01T00:00:00Z").unwrap(),
        "2027-01-03T12:00:00Z"
    );
    assert_eq!(
        fires("0 8 * * SAT,sun", "2026-05-01T00:00:00Z", 3),
        [
            "2026-05-02T08:00:00Z",
            "2026-05-03T08:00:00Z",
            "2026-05-09T08:00:00Z"
        ]
    );
}

#[test]
fn cron_steps_ranges_and_lists() {
    assert_eq!(
        fires("*/15 * * * *", "2026-05-01T10:07:00Z", 3),
        [
            "2026-05-01T10:15:00Z",
            "2026-05-01T10:30:00Z",
            "2026-05-01T10:45:00Z"
        ]
    );
    assert_eq!(
        fires("10-20/5 8 * * *", "2026-05-01T00:00:00Z", 4),
        [
            "2026-05-01T08:10:00Z",
            "2026-05-01T08:15:00Z",
            "2026-05-01T08:20:00Z",
            "2026-05-02T08:10:00Z"
        ]
    );
    assert_eq!(
        fires("0 1,13,22 * * *", "2026-05-01T12:00:00Z", 3),
        [
            "2026-05-01T13:00:00Z",
            "2026-05-01T22:00:00Z",
            "2026-05-02T01:00:00Z"
        ]
    );
    // `a/n` runs from `a` to the maximum; lists mix ranges and single values.
    assert_eq!(
        fires("0 20/2 * * *", "2026-05-01T00:00:00Z", 3),
        [
            "2026-05-01T20:00:00Z",
            "2026-05-01T22:00:00Z",
            "2026-05-02T20:00:00Z"
        ]
    );
    assert_eq!(
        fires("0 0 1-2,15 */4 *", "2026-05-01T12:00:00Z", 4), // January, May, September
        [
            "2026-05-02T00:00:00Z",
            "2026-05-15T00:00:00Z",
            "2026-09-01T00:00:00Z",
            "2026-09-02T00:00:00Z"
        ]
    );
}

#[test]
fn cron_day_of_week_seven_and_zero_are_sunday_and_question_mark_is_star() {
    let sunday = "2026-05-03T09:00:00Z";
    assert_eq!(next("0 9 * * 7", "2026-05-01T00:00:00Z").unwrap(), sunday);
    assert_eq!(next("0 9 * * 0", "2026-05-01T00:00:00Z").unwrap(), sunday);
    assert_eq!(next("0 9 ? * 5-7", "2026-05-02T10:00:00Z").unwrap(), sunday); // Fri-Sun
    assert_eq!(
        next("0 9 * * ?", "2026-05-02T00:00:00Z").unwrap(),
        "2026-05-02T09:00:00Z"
    );
}

#[test]
fn cron_day_of_month_or_day_of_week_when_both_are_restricted() {
    // The 13th, or any Friday.
    assert_eq!(
        fires("0 0 13 * FRI", "2026-02-01T00:00:00Z", 5),
        [
            "2026-02-06T00:00:00Z",
            "2026-02-13T00:00:00Z", // both
            "2026-02-20T00:00:00Z",
            "2026-02-27T00:00:00Z",
            "2026-03-06T00:00:00Z"
        ]
    );
    assert_eq!(
        fires("0 0 1 * MON", "2026-05-30T00:00:00Z", 2),
        ["2026-06-01T00:00:00Z", "2026-06-08T00:00:00Z"]
    );
    // Only one restricted: that one decides alone.
    assert_eq!(
        next("0 0 13 * *", "2026-02-01T00:00:00Z").unwrap(),
        "2026-02-13T00:00:00Z"
    );
    assert_eq!(
        next("0 0 ? * FRI", "2026-02-07T00:00:00Z").unwrap(),
        "2026-02-13T00:00:00Z"
    );
}

#[test]
fn cron_weekday_schedule_skips_the_weekend() {
    assert_eq!(
        fires("0 9 * * MON-FRI", "2026-05-01T09:00:00Z", 2), // Friday
        ["2026-05-04T09:00:00Z", "2026-05-05T09:00:00Z"]
    );
}

#[test]
fn cron_leap_day_fires_only_in_leap_years() {
    assert_eq!(
        fires("0 0 29 2 *", "2026-01-01T00:00:00Z", 2),
        ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
    );
    // 2100 is not a leap year: the longest wait of any satisfiable expression.
    assert_eq!(
        next("0 0 29 2 *", "2096-03-01T00:00:00Z").unwrap(),
        "2104-02-29T00:00:00Z"
    );
}

#[test]
fn cron_impossible_dates_never_fire() {
    assert_eq!(next("0 0 30 2 *", "2026-01-01T00:00:00Z"), None);
    assert_eq!(next("0 0 31 4,6,9,11 *", "2026-01-01T00:00:00Z"), None);
    // With a day-of-week too, the OR rule makes it fire on Mondays in February.
    assert_eq!(
        next("0 0 30 2 MON", "2026-01-01T00:00:00Z").unwrap(),
        "2026-02-02T00:00:00Z"
    );
}

#[test]
fn cron_time_zone_prefix_evaluates_fields_in_that_zone() {
    let berlin = Schedule::parse("TZ=Europe/Berlin 0 9 * * *").unwrap();
    assert_eq!(berlin.tz(), chrono_tz::Europe::Berlin);
    assert_eq!(berlin.expr(), "TZ=Europe/Berlin 0 9 * * *");
    assert_eq!(
        show(berlin.next_after(at("2026-01-15T00:00:00Z")).unwrap()),
        "2026-01-15T08:00:00Z"
    );
    assert_eq!(
        show(berlin.next_after(at("2026-07-15T00:00:00Z")).unwrap()),
        "2026-07-15T07:00:00Z"
    );

    let new_york = "CRON_TZ=America/New_York 0 9 * * MON";
    assert_eq!(
        next(new_york, "2026-01-01T00:00:00Z").unwrap(),
        "2026-01-05T14:00:00Z"
    );
    assert_eq!(
        next(new_york, "2026-07-01T00:00:00Z").unwrap(),
        "2026-07-06T13:00:00Z"
    );
    // The local date decides the day: Monday 21:00 in New York is Tuesday in UTC.
    assert_eq!(
        next("TZ=America/New_York 0 21 * * MON", "2026-07-01T00:00:00Z").unwrap(),
        "2026-07-07T01:00:00Z"
    );

    let utc = Schedule::parse("0 9 * * *").unwrap();
    assert_eq!(utc.tz(), chrono_tz::UTC);
    assert_eq!(
        Schedule::parse("TZ=europe/berlin 0 9 * * *").unwrap().tz(),
        chrono_tz::Europe::Berlin
    );
}

#[test]
fn cron_spring_forward_gap_fires_once_after_the_gap() {
    // 02:30 does not exist in Berlin on 2026-03-29: fire at 03:00 CEST (01:00Z), once.
    assert_eq!(
        fires("TZ=Europe/Berlin 30 2 * * *", "2026-03-28T00:00:00Z", 3),
        [
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z"
        ]
    );
    // Several times inside the gap still fire only once.
    assert_eq!(
        fires("TZ=Europe/Berlin 0 0,30 2 * * *", "2026-03-28T23:00:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"]
    );
    // A fixed time right after the gap is that same instant, fired once.
    assert_eq!(
        fires("TZ=Europe/Berlin 0 2,3 * * *", "2026-03-28T23:00:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"]
    );
    assert_eq!(
        fires("TZ=America/New_York 30 2 * * *", "2026-03-07T12:00:00Z", 2),
        ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]
    );
}

#[test]
fn cron_spring_forward_keeps_interval_schedules_on_elapsed_time() {
    // 01:00 CET, then 03:00 CEST one real hour later: the missing 02:00 is not made up.
    assert_eq!(
        fires("TZ=Europe/Berlin 0 * * * *", "2026-03-28T23:30:00Z", 3),
        [
            "2026-03-29T00:00:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T02:00:00Z"
        ]
    );
    assert_eq!(
        fires("TZ=Europe/Berlin */30 * * * *", "2026-03-29T00:15:00Z", 3),
        [
            "2026-03-29T00:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z"
        ]
    );
}

#[test]
fn cron_fall_back_overlap_fires_a_fixed_time_once() {
    // 02:30 happens at 00:30Z (CEST) and again at 01:30Z (CET): only the first fires.
    assert_eq!(
        fires("TZ=Europe/Berlin 30 2 * * *", "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
    // Asked from inside the repeated hour, it does not fire again either.
    assert_eq!(
        next("TZ=Europe/Berlin 30 2 * * *", "2026-10-25T01:10:00Z").unwrap(),
        "2026-10-26T01:30:00Z"
    );
    assert_eq!(
        fires("TZ=America/New_York 30 1 * * *", "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );
}

#[test]
fn cron_fall_back_overlap_fires_interval_schedules_in_both_hours() {
    assert_eq!(
        fires("TZ=Europe/Berlin 0 * * * *", "2026-10-24T22:30:00Z", 4),
        [
            "2026-10-24T23:00:00Z", // 01:00 CEST
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T01:00:00Z", // 02:00 CET
            "2026-10-25T02:00:00Z"  // 03:00 CET
        ]
    );
    let quarters = fires("TZ=Europe/Berlin */15 * * * *", "2026-10-24T23:50:00Z", 9);
    let want: Vec<String> = (0..9)
        .map(|i| show(at("2026-10-25T00:00:00Z") + TimeDelta::minutes(15 * i)))
        .collect();
    assert_eq!(quarters, want);
    // From inside the repeated hour the next quarter is 15 real minutes away.
    assert_eq!(
        next("TZ=Europe/Berlin */15 * * * *", "2026-10-25T01:10:00Z").unwrap(),
        "2026-10-25T01:15:00Z"
    );
    assert_eq!(
        fires("TZ=America/New_York 30 * * * *", "2026-11-01T05:00:00Z", 3),
        [
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T07:30:00Z"
        ]
    );
}

#[test]
fn cron_hourly_fires_every_real_hour_through_a_whole_year_of_transitions() {
    for zone in ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"] {
        let schedule = Schedule::parse(&format!("TZ={zone} 0 * * * *")).unwrap();
        let mut cursor = at("2026-01-01T00:00:00Z");
        for _ in 0..24 * 366 {
            let fired = schedule.next_after(cursor).unwrap();
            let minutes = (fired - cursor).num_minutes();
            // Lord Howe shifts by 30 minutes: across a change its hours are 90 minutes apart.
            let allowed: &[i64] = if zone == "Australia/Lord_Howe" {
                &[60, 90]
            } else {
                &[60]
            };
            assert!(allowed.contains(&minutes), "{zone}: {cursor} -> {fired}");
            cursor = fired;
        }
    }
}

#[test]
fn cron_daily_fires_once_per_local_day_through_a_year_of_transitions() {
    for expr in [
        "TZ=Europe/Berlin 30 2 * * *",
        "TZ=America/New_York 30 1 * * *",
    ] {
        let schedule = Schedule::parse(expr).unwrap();
        let mut cursor = at("2026-01-01T12:00:00Z");
        let mut count = 0;
        while let Some(fired) = schedule.next_after(cursor) {
            if fired >= at("2027-01-01T12:00:00Z") {
                break;
            }
            let local = fired.with_timezone(&schedule.tz()).date_naive();
            assert_ne!(
                local,
                cursor.with_timezone(&schedule.tz()).date_naive(),
                "{expr}"
            );
            count += 1;
            cursor = fired;
        }
        assert_eq!(count, 365, "{expr}");
    }
}

#[test]
fn cron_error_names_the_field_count() {
    assert_eq!(
        error("* * *"),
        "cron \"* * *\": expected 5 fields (or 6 with seconds), got 3"
    );
    assert_eq!(
        error(""),
        "cron \"\": expected 5 fields (or 6 with seconds), got 0"
    );
    assert_eq!(
        error("0 0 0 1 1 * 2026"),
        "cron \"0 0 0 1 1 * 2026\": expected 5 fields (or 6 with seconds), got 7"
    );
}

#[test]
fn cron_error_names_out_of_range_values() {
    assert_eq!(
        error("0 25 * * *"),
        "cron \"0 25 * * *\": hour 25 is out of range 0-23"
    );
    assert_eq!(
        error("60 * * * *"),
        "cron \"60 * * * *\": minute 60 is out of range 0-59"
    );
    assert_eq!(
        error("0 0 0 * *"),
        "cron \"0 0 0 * *\": day-of-month 0 is out of range 1-31"
    );
    assert_eq!(
        error("0 0 * 13 *"),
        "cron \"0 0 * 13 *\": month 13 is out of range 1-12"
    );
    assert_eq!(
        error("0 0 * * 8"),
        "cron \"0 0 * * 8\": day-of-week 8 is out of range 0-7"
    );
    assert_eq!(
        error("60 * * * * *"),
        "cron \"60 * * * * *\": second 60 is out of range 0-59"
    );
    assert_eq!(
        error("1-99999999999 * * * *"),
        "cron \"1-99999999999 * * * *\": minute 99999999999 is out of range 0-59"
    );
    // Every bad field is reported, not just the first.
    assert_eq!(
        error("61 25 * * *"),
        "cron \"61 25 * * *\": minute 61 is out of range 0-59; hour 25 is out of range 0-23"
    );
}

#[test]
fn cron_error_names_bad_steps_ranges_and_lists() {
    assert_eq!(
        error("*/0 * * * *"),
        "cron \"*/0 * * * *\": minute step 0 is out of range 1-59"
    );
    assert_eq!(
        error("*/x * * * *"),
        "cron \"*/x * * * *\": minute step \"x\" is not a number"
    );
    assert_eq!(
        error("0 */24 * * *"),
        "cron \"0 */24 * * *\": hour step 24 is out of range 1-23"
    );
    assert_eq!(
        error("0 0 */ * *"),
        "cron \"0 0 */ * *\": day-of-month step is missing after \"/\""
    );
    assert_eq!(
        error("0 5-2 * * *"),
        "cron \"0 5-2 * * *\": hour range 5-2 is reversed (start is after end)"
    );
    assert_eq!(
        error("1,,2 * * * *"),
        "cron \"1,,2 * * * *\": minute has an empty list item"
    );
    assert_eq!(
        error("0 x * * *"),
        "cron \"0 x * * *\": hour \"x\" is not a number"
    );
    assert_eq!(
        error("-5 * * * *"),
        "cron \"-5 * * * *\": minute range \"-5\" is missing a bound"
    );
    assert_eq!(
        error("0 ? * * *"),
        "cron \"0 ? * * *\": hour does not accept \"?\" (only day-of-month and day-of-week do)"
    );
}

#[test]
fn cron_error_names_unknown_names_aliases_and_zones() {
    assert_eq!(
        error("0 0 1 FOO *"),
        "cron \"0 0 1 FOO *\": month \"FOO\" is neither a name (JAN-DEC) nor a number (1-12)"
    );
    assert_eq!(
        error("0 0 * * FUN"),
        "cron \"0 0 * * FUN\": day-of-week \"FUN\" is neither a name (SUN-SAT) nor a number (0-7)"
    );
    assert_eq!(
        error("0 0 MON * *"),
        "cron \"0 0 MON * *\": day-of-month \"MON\" is not a number"
    );
    assert_eq!(
        error("@fortnightly"),
        "cron \"@fortnightly\": unknown alias \"@fortnightly\" (expected @yearly, @annually, \
         @monthly, @weekly, @daily, @midnight or @hourly)"
    );
    assert!(error("@every 5m").contains("unknown alias \"@every 5m\""));
    assert_eq!(
        error("TZ=Europe/Nowhere 0 9 * * *"),
        "cron \"TZ=Europe/Nowhere 0 9 * * *\": unknown time zone \"Europe/Nowhere\""
    );
    assert_eq!(
        error("CRON_TZ=Mars/Olympus 0 25 * * *"),
        "cron \"CRON_TZ=Mars/Olympus 0 25 * * *\": unknown time zone \"Mars/Olympus\"; \
         hour 25 is out of range 0-23"
    );
}

#[test]
fn cron_schedule_round_trips_through_from_str_and_display() {
    let schedule: Schedule = "TZ=Europe/Berlin 0 9 * * MON-FRI".parse().unwrap();
    assert_eq!(schedule.to_string(), "TZ=Europe/Berlin 0 9 * * MON-FRI");
    assert_eq!(schedule, Schedule::parse(schedule.expr()).unwrap());
}

#[test]
fn cron_every_second_schedule_ticks_each_real_second_across_a_fall_back() {
    let schedule = Schedule::parse("TZ=Europe/Berlin * * * * * *").unwrap();
    // Exactly at the fall-back instant (01:00Z, 03:00 CEST becoming 02:00 CET).
    assert_eq!(
        show(schedule.next_after(at("2026-10-25T01:00:00Z")).unwrap()),
        "2026-10-25T01:00:01Z"
    );
    let mut cursor = at("2026-10-24T23:30:00Z");
    while cursor < at("2026-10-25T02:30:00Z") {
        let fired = schedule.next_after(cursor).unwrap();
        assert_eq!(fired - cursor, TimeDelta::seconds(1), "after {cursor}");
        cursor = fired;
    }
}

#[test]
fn cron_fixed_times_in_a_repeated_hour_fire_once_each() {
    // Every minute of the 02:00 hour, a fixed-time schedule (no field starts with `*`).
    let schedule = Schedule::parse("TZ=Europe/Berlin 0-59 2 * * *").unwrap();
    let mut cursor = at("2026-10-24T23:59:00Z");
    let mut fired = Vec::new();
    while let Some(next) = schedule.next_after(cursor) {
        if next > at("2026-10-25T12:00:00Z") {
            break;
        }
        fired.push(next);
        cursor = next;
    }
    assert_eq!(fired.len(), 60);
    assert_eq!(show(fired[0]), "2026-10-25T00:00:00Z");
    assert_eq!(show(fired[59]), "2026-10-25T00:59:00Z");
    // Asked from inside the repeat, the next one is tomorrow.
    assert_eq!(
        show(schedule.next_after(at("2026-10-25T01:30:00Z")).unwrap()),
        "2026-10-26T01:00:00Z"
    );
}
