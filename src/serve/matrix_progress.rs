//! The headless view of a matrix run (`troupe run` on an experiment with several trials): a
//! redrawn line with trials done of total, the pass rate so far, what is running and an ETA;
//! and, without a terminal, a line per finished trial.
//!
//! Invariant: pure; time comes in as an argument.

use crate::experiment::record::TrialRecord;
use crate::experiment::update::MatrixUpdate;
use crate::protocol::Millis;

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

#[derive(Debug, Default)]
pub struct MatrixProgress {
    /// Trials in this run's share (recorded before + to run now).
    share: u32,
    /// Recorded before this session (`--resume`).
    recorded_before: u32,
    done: u32,
    passed: u32,
    errors: u32,
    running: u32,
    started: Option<Millis>,
}

impl MatrixProgress {
    pub fn apply(&mut self, update: &MatrixUpdate, now: Millis) {
        match update {
            MatrixUpdate::Planned { to_run, recorded, .. } => {
                self.recorded_before = *recorded;
                self.share = to_run + recorded;
                self.started = Some(now);
            }
            MatrixUpdate::TrialStarted { .. } => self.running += 1,
            MatrixUpdate::TrialFinished { record } => {
                self.running = self.running.saturating_sub(1);
                self.done += 1;
                self.passed += u32::from(record.pass);
                self.errors += u32::from(record.status == "error");
            }
            MatrixUpdate::Event { .. } | MatrixUpdate::Status(_) => {}
        }
    }

    /// `⠋ 12/40 trials · 7 passed (58 %) · 2 running · ETA 3m10s`.
    pub fn line(&self, now: Millis, frame: usize) -> String {
        let spinner = SPINNER[frame % SPINNER.len()];
        let done = self.recorded_before + self.done;
        let mut line = format!("{spinner} {done}/{} trials", self.share);
        if self.done > 0 {
            let rate = f64::from(self.passed) / f64::from(self.done) * 100.0;
            line.push_str(&format!(" · {} passed ({rate:.0} %)", self.passed));
        }
        if self.errors > 0 {
            line.push_str(&format!(" · {} could not run", self.errors));
        }
        line.push_str(&format!(" · {} running", self.running));
        if let Some(eta) = self.eta_ms(now) {
            line.push_str(&format!(" · ETA {}", short_duration(eta)));
        }
        line
    }

    /// The time left at the pace of the trials finished in this session.
    fn eta_ms(&self, now: Millis) -> Option<u64> {
        let started = self.started?;
        if self.done == 0 {
            return None;
        }
        let left = self.share.saturating_sub(self.recorded_before + self.done);
        let per_trial = now.saturating_sub(started) / u64::from(self.done);
        Some(per_trial * u64::from(left))
    }
}

/// A finished trial as a log line: `pass  experts/t1/2  1,234 tokens  3.2 s`.
pub fn trial_line(record: &TrialRecord) -> String {
    let verdict = match (record.pass, record.status.as_str()) {
        (_, "error") => "error",
        (true, _) => "pass",
        (false, _) => "FAIL",
    };
    let mut line = format!(
        "{verdict:<5} {}  {} tokens  {:.1} s",
        record.key,
        record.input_tokens + record.output_tokens,
        record.wall_ms as f64 / 1000.0
    );
    if let Some(failed) = record.checks.iter().find(|c| !c.pass) {
        line.push_str(&format!("  [{}: {}]", failed.name, crate::protocol::shorten(&failed.detail, 100)));
    } else if let Some(error) = &record.error {
        line.push_str(&format!("  [{}]", crate::protocol::shorten(error, 100)));
    }
    line
}

fn short_duration(ms: u64) -> String {
    let secs = ms / 1000;
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_trials_passes_and_estimates_the_rest() {
        let mut p = MatrixProgress::default();
        let planned = MatrixUpdate::Planned { dir: "d".into(), total: 10, to_run: 8, recorded: 2, concurrency: 2 };
        p.apply(&planned, 1_000);
        assert_eq!(p.line(1_000, 0), "⠋ 2/10 trials · 0 running");
        let record = |pass| {
            let mut r: TrialRecord = serde_json::from_value(serde_json::json!({
                "index": 0, "key": "v/t/1", "variant": "v", "task_id": "t", "repetition": 1, "seed": 1,
                "status": "completed", "pass": pass, "score": 1.0, "checks": [], "input_tokens": 1,
                "output_tokens": 1, "cost": null, "wall_ms": 1, "subtasks": 0, "depth": 0, "tool_errors": 0,
                "limit_hits": 0, "turns": 1, "answer": null, "error": null, "folder": "trials/x"
            }))
            .unwrap();
            r.pass = pass;
            r
        };
        p.apply(&MatrixUpdate::Status("x".into()), 1_000);
        p.apply(&MatrixUpdate::TrialFinished { record: record(true) }, 3_000);
        p.apply(&MatrixUpdate::TrialFinished { record: record(false) }, 5_000);
        // 2 trials in 4 s: 6 left at 2 s each.
        assert_eq!(p.line(5_000, 1), "⠙ 4/10 trials · 1 passed (50 %) · 0 running · ETA 12s");
    }
}
