//! When a failed request to a remote model is sent again, and after how long.
//!
//! Owns the classification of failures (connect errors, timeouts and cut-off responses before
//! anything was streamed, HTTP 429 and 5xx retry; other 4xx never do), exponential backoff with
//! full jitter (a uniformly random wait below `min(cap, base × 2^n)`, which spreads the
//! retries of many agents hitting one rate limit), and the server's `Retry-After`.
//!
//! Invariant: pure. The jitter and the current time are arguments, so every decision is
//! reproducible in a test; the transport supplies randomness and the clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why one attempt failed, as far as retrying cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made or broke before a response came.
    Connect,
    /// No response (or no data) within a timeout.
    Timeout,
    /// The response body broke off, or carried an error event, before anything was decoded.
    Interrupted,
    /// An HTTP error status, with the server's `Retry-After` when it sent one.
    Status { status: u16, retry_after: Option<Duration> },
    /// Anything a second attempt would fail alike (a refused header, a malformed request).
    Fatal,
}

impl Failure {
    /// Whether a new attempt might succeed. The caller asks only while nothing was streamed:
    /// a reply that has begun is never sent twice.
    pub fn retryable(&self) -> bool {
        match self {
            Failure::Connect | Failure::Timeout | Failure::Interrupted => true,
            Failure::Status { status, .. } => *status == 429 || (500..=599).contains(status),
            Failure::Fatal => false,
        }
    }

    /// What failed, for the retry notice ("after HTTP 429").
    pub fn describe(&self) -> String {
        match self {
            Failure::Connect => "a connection error".to_owned(),
            Failure::Timeout => "a timeout".to_owned(),
            Failure::Interrupted => "a broken response".to_owned(),
            Failure::Status { status, .. } => format!("HTTP {status}"),
            Failure::Fatal => "an error".to_owned(),
        }
    }
}

/// The retry settings of one alias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first; 0 never retries.
    pub max_retries: u32,
    /// The backoff ceiling before the first retry; it doubles for each later one.
    pub base: Duration,
    /// No backoff exceeds this.
    pub cap: Duration,
    /// A `Retry-After` longer than this is not waited for: the failure is reported instead,
    /// since a run stalled for minutes without a word is worse than an error the user can read.
    pub max_retry_after: Duration,
}

/// Retries of a request unless the alias says otherwise (`max_retries`).
pub const DEFAULT_MAX_RETRIES: u32 = 3;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: DEFAULT_MAX_RETRIES,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    pub fn with_max_retries(max_retries: u32) -> Self {
        RetryPolicy { max_retries, ..RetryPolicy::default() }
    }

    /// How long to wait before sending again after `failure`, when `retries_done` retries
    /// were made already; `None` when the failure is final. `jitter` is uniform in `[0, 1)`.
    pub fn next_delay(&self, failure: &Failure, retries_done: u32, jitter: f64) -> Option<Duration> {
        if !failure.retryable() || retries_done >= self.max_retries {
            return None;
        }
        if let Failure::Status { retry_after: Some(wait), .. } = failure {
            // The server knows when it will take the request again; waiting less only buys
            // another refusal, and jitter is pointless when the server chose the time.
            return (*wait <= self.max_retry_after).then_some(*wait);
        }
        Some(self.backoff(retries_done, jitter))
    }

    /// Full jitter: uniform in `[0, min(cap, base × 2^retries_done))`.
    pub fn backoff(&self, retries_done: u32, jitter: f64) -> Duration {
        let factor = 2f64.powi(i32::try_from(retries_done.min(62)).unwrap_or(62));
        let ceiling = (self.base.as_secs_f64() * factor).min(self.cap.as_secs_f64());
        let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
        Duration::from_secs_f64(ceiling * jitter)
    }
}

/// A `Retry-After` header's wait: delay-seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`), measured from `now`. A date in the past means "now".
/// `None` when the value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // Some servers send fractions ("1.5") though the header allows whole seconds only.
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(1e9)));
    }
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(parse_http_date(value)?))?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the one
/// format RFC 9110 lets servers send; the obsolete RFC 850 and asctime forms are not read.
fn parse_http_date(value: &str) -> Option<u64> {
    let (_weekday, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split_ascii_whitespace().collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let day: u64 = day.parse().ok()?;
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|name| name == month)? as u64
        + 1;
    let year: u64 = year.parse().ok()?;
    let mut clock = time.split(':').map(|part| part.parse::<u64>().ok());
    let (Some(Some(hour)), Some(Some(minute)), Some(Some(second)), None) =
        (clock.next(), clock.next(), clock.next(), clock.next())
    else {
        return None;
    };
    if !(1..=31).contains(&day) || year < 1970 || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`, for years from 1970 on).
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let year = if month <= 2 { year.checked_sub(1)? } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn status(status: u16) -> Failure {
        Failure::Status { status, retry_after: None }
    }

    #[test]
    fn which_failures_retry() {
        let policy = RetryPolicy::default();
        for failure in [Failure::Connect, Failure::Timeout, Failure::Interrupted, status(429), status(500), status(503)]
        {
            assert!(policy.next_delay(&failure, 0, 0.5).is_some(), "{failure:?} retries");
        }
        for failure in [status(400), status(401), status(403), status(404), status(422), Failure::Fatal, status(600)] {
            assert_eq!(policy.next_delay(&failure, 0, 0.5), None, "{failure:?} does not retry");
        }
    }

    #[test]
    fn retries_stop_at_max_retries() {
        let policy = RetryPolicy::with_max_retries(2);
        assert!(policy.next_delay(&Failure::Connect, 1, 0.5).is_some());
        assert_eq!(policy.next_delay(&Failure::Connect, 2, 0.5), None);
        assert_eq!(RetryPolicy::with_max_retries(0).next_delay(&status(503), 0, 0.5), None);
    }

    #[test]
    fn backoff_doubles_under_full_jitter_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let ceilings: Vec<f64> = (0..9).map(|n| policy.backoff(n, 0.999_999).as_secs_f64()).collect();
        let expected = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0];
        for (got, want) in ceilings.iter().zip(expected) {
            assert!((got - want).abs() < 1e-3, "{ceilings:?}");
        }
        assert_eq!(policy.backoff(3, 0.0), Duration::ZERO);
        assert_eq!(policy.backoff(3, 0.25), Duration::from_secs(1));
        // Huge retry counts and odd jitter values stay in range.
        assert_eq!(policy.backoff(u32::MAX, 0.5), Duration::from_secs(15));
        assert_eq!(policy.backoff(0, f64::NAN), Duration::ZERO);
        assert_eq!(policy.backoff(0, 7.0), Duration::from_millis(500));
    }

    #[test]
    fn retry_after_wins_over_backoff_and_too_long_a_wait_gives_up() {
        let policy = RetryPolicy::default();
        let limited = |seconds| Failure::Status { status: 429, retry_after: Some(Duration::from_secs(seconds)) };
        assert_eq!(policy.next_delay(&limited(7), 0, 0.0), Some(Duration::from_secs(7)));
        assert_eq!(policy.next_delay(&limited(120), 2, 0.0), Some(Duration::from_secs(120)));
        assert_eq!(policy.next_delay(&limited(3_600), 0, 0.0), None);
        // Still bounded by the number of retries, and ignored on a status that does not retry.
        assert_eq!(policy.next_delay(&limited(1), 3, 0.0), None);
        let bad = Failure::Status { status: 400, retry_after: Some(Duration::from_secs(1)) };
        assert_eq!(policy.next_delay(&bad, 0, 0.0), None);
    }

    #[test]
    fn retry_after_as_seconds_or_http_date() {
        // 2015-10-21T07:28:00Z
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("1.5", now), Some(Duration::from_millis(1_500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        for junk in ["", "-1", "soon", "Wed, 21 Oct 2015 07:28:30 PST", "Wed, 32 Oct 2015 07:28:30 GMT", "NaN"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn http_dates_match_known_timestamps() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951_825_600));
        assert_eq!(parse_http_date("Sat, 01 Jan 2050 00:00:00 GMT"), Some(2_524_608_000));
    }

    #[test]
    fn notices_name_the_failure() {
        assert_eq!(status(429).describe(), "HTTP 429");
        assert_eq!(Failure::Timeout.describe(), "a timeout");
    }
}
