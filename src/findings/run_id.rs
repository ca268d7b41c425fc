//! Run ids: `20261125-092503-smoke-3f2a`, the UTC start time, the experiment's slug and four hex
//! digits, so that run folders list in the order they ran and say what they ran.
//!
//! Invariant: pure. The time and the salt come from the caller; nothing here reads a clock or
//! a random source, so the same inputs always give the same id.

use crate::protocol::Millis;

/// The longest slug an id carries, so folder names stay readable in a terminal.
const MAX_SLUG: usize = 40;

/// The id of a run of `experiment` started at `now`. `salt` separates runs started in the same
/// second; its bits are folded into four hex digits.
pub fn new_run_id(experiment: &str, now: Millis, salt: u32) -> String {
    let secs = now / 1000;
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    // Folding keeps every bit of the salt relevant: two salts differing only in their high half
    // still give different ids.
    let tag = (salt ^ (salt >> 16)) & 0xffff;
    format!("{year:04}{month:02}{day:02}-{hour:02}{minute:02}{second:02}-{}-{tag:04x}", slugify(experiment))
}

/// Lower case `[a-z0-9]` runs joined by single dashes, at most [`MAX_SLUG`] characters; `run`
/// when nothing usable is left.
pub fn slugify(name: &str) -> String {
    let mut slug = String::with_capacity(name.len().min(MAX_SLUG));
    let mut pending_dash = false;
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if pending_dash && !slug.is_empty() {
                slug.push('-');
            }
            pending_dash = false;
            slug.push(c);
        } else {
            pending_dash = true;
        }
        if slug.len() >= MAX_SLUG {
            break;
        }
    }
    slug.truncate(MAX_SLUG);
    let trimmed = slug.trim_end_matches('-');
    if trimmed.is_empty() { "run".to_owned() } else { trimmed.to_owned() }
}

/// Year, month and day of a count of days since 1970-01-01, in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`). Written out rather than borrowed from
/// `humantime` because this one is total: no input makes it panic.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The start time a run id begins with (`20261125-092503-…`, UTC, as [`new_run_id`] writes it), to the
/// second; `None` when the name does not begin with a valid one.
pub fn started_from_id(id: &str) -> Option<Millis> {
    let stamp = id.get(..15)?;
    if !matches!(id.as_bytes().get(15), None | Some(b'-')) || stamp.as_bytes().get(8) != Some(&b'-') {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u64> {
        let text = stamp.get(range)?;
        if text.bytes().all(|b| b.is_ascii_digit()) { text.parse().ok() } else { None }
    };
    let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if year < 1970 || day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
}

/// Days from 1970-01-01 to a date from 1970 on, in the proleptic Gregorian calendar (Howard
/// Hinnant's `days_from_civil`, the inverse of the one [`new_run_id`] writes ids with).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn ids_carry_utc_time_slug_and_salt() {
        // 2026-11-25T09:25:03.120Z
        let now = 1_795_598_703_120;
        assert_eq!(crate::protocol::format_millis(now), "2026-11-25T09:25:03.120Z");
        assert_eq!(new_run_id("smoke", now, 0x3f2a), "20261125-092503-smoke-3f2a");
        assert_eq!(new_run_id("smoke", 0, 0), "19700101-000000-smoke-0000");
        // Leap day, and the end of a century year that is a leap year.
        assert_eq!(new_run_id("x", 951_782_400_000, 1), "20000229-000000-x-0001");
        assert_eq!(new_run_id("x", 978_307_199_999, 1), "20001231-235959-x-0001");
    }

    #[test]
    fn ids_sort_by_time() {
        let times = [1_795_598_703_120, 1_795_598_704_000, 1_795_600_000_000, 1_900_000_000_000];
        let ids: Vec<String> = times.iter().zip([0xffff, 0, 0x1234, 7]).map(|(&t, s)| new_run_id("b", t, s)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
    }

    #[test]
    fn high_salt_bits_still_count() {
        assert_ne!(new_run_id("a", 0, 0x0001_0000), new_run_id("a", 0, 0));
    }

    #[test]
    fn slugs_are_lowercase_dashed_and_short() {
        let long = "a".repeat(60);
        let forty = "a".repeat(40);
        let cut_at_dash = format!("{} b", "a".repeat(39));
        let thirty_nine = "a".repeat(39);
        let cases = [
            ("smoke", "smoke"),
            ("Smoke Test #2", "smoke-test-2"),
            ("  --weird__name--  ", "weird-name"),
            ("Élan vital", "lan-vital"),
            ("日本語", "run"),
            ("", "run"),
            (long.as_str(), forty.as_str()),
            // Cut at 40 must not leave a trailing dash.
            (cut_at_dash.as_str(), thirty_nine.as_str()),
        ];
        for (input, expected) in cases {
            assert_eq!(slugify(input), expected, "{input:?}");
        }
        for (input, _) in cases {
            let slug = slugify(input);
            assert!(slug.len() <= MAX_SLUG);
            assert!(slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        }
    }
}
