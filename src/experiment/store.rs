//! A matrix's folder on disk: `matrix.json` (the plan), `trials.jsonl` (a line per finished
//! trial, appended and synced as each ends), and the outputs written from them: `summary.json`,
//! `report.md`, `charts/*.svg`.
//!
//! Invariant: a line in `trials.jsonl` is appended only once its trial's folder is complete, and
//! synced before the next, so after `kill -9` every recorded trial is whole; a torn last line is
//! the only damage a kill can do, and reading skips it (that trial runs again on `--resume`).
//! Outputs are written atomically and only from the folder's own files.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::migrate::{Changes, is_trial_folder, upgrade_matrix};
use super::plan::{Shard, TrialSpec};
use super::record::{MatrixInfo, TrialRecord};
use super::summary::Summary;
use crate::fsutil::write_atomic;

pub const MATRIX_FILE: &str = "matrix.json";
pub const TRIALS_FILE: &str = "trials.jsonl";
pub const SUMMARY_FILE: &str = "summary.json";
pub const REPORT_FILE: &str = "report.md";
pub const CHARTS_DIR: &str = "charts";

/// Bumped when `matrix.json` or `trials.jsonl` change incompatibly.
pub const FORMAT: u32 = 1;

/// Why a matrix folder could not be read or written. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}, line {line}: {message}\n  = hint: the line is not a trial record; remove it (that trial runs again with --resume)", path.display())]
    BadRecord { path: PathBuf, line: usize, message: String },
    #[error("{}: {message}", path.display())]
    BadMatrix { path: PathBuf, message: String },
    #[error("{0}")]
    Findings(#[from] crate::findings::FindingsError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io { action, path, source }
}

/// `matrix.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatrixFile {
    pub format: u32,
    pub run_id: String,
    /// The experiment file, relative to the workbench.
    pub experiment_file: String,
    pub info: MatrixInfo,
    /// The share of the trials this folder runs; `None` for all of them.
    pub shard: Option<Shard>,
    /// Every trial of the matrix (all shards), so shards and merges can be checked against it.
    pub trials: Vec<TrialSpec>,
    pub troupe_version: String,
}

pub fn write_matrix(dir: &Path, matrix: &MatrixFile) -> Result<(), StoreError> {
    let path = dir.join(MATRIX_FILE);
    let text = serde_json::to_string_pretty(matrix).unwrap_or_default();
    write_atomic(&path, text.as_bytes()).map_err(io("write", &path))
}

pub fn read_matrix(dir: &Path) -> Result<MatrixFile, StoreError> {
    read_matrix_upgraded(dir).map(|(matrix, _)| matrix)
}

/// `matrix.json` as this troupe reads it, and what reading it upgraded (empty for a file in
/// the current form): every format troupe ever wrote is read ([`super::migrate`]), a newer one
/// is refused naming the version that wrote it, and every trial folder it names must lie inside
/// the matrix folder.
pub fn read_matrix_upgraded(dir: &Path) -> Result<(MatrixFile, Changes), StoreError> {
    let path = dir.join(MATRIX_FILE);
    let bad = |message: String| StoreError::BadMatrix { path: path.clone(), message };
    let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a troupe matrix: {e}")))?;
    let changes = upgrade_matrix(&mut value, FORMAT).map_err(|e| bad(e.to_string()))?;
    let matrix: MatrixFile = serde_json::from_value(value).map_err(|e| bad(format!("not a troupe matrix: {e}")))?;
    if let Some(trial) = matrix.trials.iter().find(|t| !is_trial_folder(&t.folder)) {
        return Err(bad(format!(
            "trial {} names the folder {:?}, which is not a folder of its own under trials/; a matrix folder never points outside itself, so this one was edited by hand and is refused",
            trial.key, trial.folder
        )));
    }
    Ok((matrix, changes))
}

/// `troupe migrate`: writes `matrix.json` back in the current form, atomically, and says what
/// changed (nothing when it already was current; then the file is not touched).
pub fn migrate_matrix(dir: &Path) -> Result<Changes, StoreError> {
    let (matrix, changes) = read_matrix_upgraded(dir)?;
    if !changes.is_empty() {
        write_matrix(dir, &matrix)?;
    }
    Ok(changes)
}

/// Appends records to `trials.jsonl`, one synced line each.
pub struct TrialLog {
    file: std::fs::File,
    path: PathBuf,
}

impl TrialLog {
    pub fn open(dir: &Path) -> Result<TrialLog, StoreError> {
        let path = dir.join(TRIALS_FILE);
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io("open", &path))?;
        // A kill between the bytes of a line leaves it without its newline: end it, so the next
        // record starts on a line of its own and only the torn one is lost.
        let len = file.metadata().map_err(io("read", &path))?.len();
        if len > 0 && !ends_with_newline(&path)? {
            file.write_all(b"\n").map_err(io("append to", &path))?;
        }
        Ok(TrialLog { file, path })
    }

    pub fn append(&mut self, record: &TrialRecord) -> Result<(), StoreError> {
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        self.file.write_all(&line).map_err(io("append to", &self.path))?;
        self.file.sync_data().map_err(io("sync", &self.path))
    }
}

fn ends_with_newline(path: &Path) -> Result<bool, StoreError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(io("read", path))?;
    file.seek(SeekFrom::End(-1)).map_err(io("read", path))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last).map_err(io("read", path))?;
    Ok(last[0] == b'\n')
}

/// The records of `trials.jsonl`, one per key (a later line for the same key wins), in matrix
/// order. A line that does not parse is an error, except a torn line that a kill cut short.
pub fn read_records(dir: &Path) -> Result<Vec<TrialRecord>, StoreError> {
    let path = dir.join(TRIALS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read", &path)(e)),
    };
    // By key: a trial recorded twice (a resumed matrix's duplicate) keeps its later line.
    let mut records: std::collections::HashMap<String, TrialRecord> = std::collections::HashMap::new();
    for (i, line) in text.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<TrialRecord>(line) {
            Ok(record) if !is_trial_folder(&record.folder) => {
                let message = format!(
                    "trial {} names the folder {:?}, which is not a folder of its own under trials/; a matrix folder never points outside itself, so this line was edited by hand",
                    record.key, record.folder
                );
                return Err(StoreError::BadRecord { path: path.clone(), line: i + 1, message });
            }
            Ok(record) => {
                records.insert(record.key.clone(), record);
            }
            // Torn: no newline after it (the end of the file), or a line ended by a later open.
            Err(e) if e.is_eof() => continue,
            Err(e) => return Err(StoreError::BadRecord { path: path.clone(), line: i + 1, message: e.to_string() }),
        }
    }
    let mut records: Vec<TrialRecord> = records.into_values().collect();
    records.sort_by_key(|r| r.index);
    Ok(records)
}

/// Writes `summary.json`, `report.md` and the charts of a matrix from its records.
pub fn write_outputs(dir: &Path, info: &MatrixInfo, records: &[TrialRecord]) -> Result<Summary, StoreError> {
    let summary = super::summary::summarize(info, records);
    write_summary(dir, &summary)?;
    let report = super::report::render_report(info, &summary, records);
    let path = dir.join(REPORT_FILE);
    write_atomic(&path, report.as_bytes()).map_err(io("write", &path))?;
    let charts = dir.join(CHARTS_DIR);
    std::fs::create_dir_all(&charts).map_err(io("create", &charts))?;
    for (name, svg) in
        [("pass_rate.svg", super::charts::pass_rate_svg(&summary)), ("tokens.svg", super::charts::tokens_svg(&summary))]
    {
        let path = charts.join(name);
        write_atomic(&path, svg.as_bytes()).map_err(io("write", &path))?;
    }
    Ok(summary)
}

pub fn write_summary(dir: &Path, summary: &Summary) -> Result<(), StoreError> {
    let path = dir.join(SUMMARY_FILE);
    let text = serde_json::to_string_pretty(summary).unwrap_or_default();
    write_atomic(&path, text.as_bytes()).map_err(io("write", &path))
}

/// `troupe rerender` of a matrix folder: the summary, report and charts again from
/// `trials.jsonl`, and each recorded trial's transcript and report from its `events.jsonl`, all
/// written under `out` (the folder itself, or another to compare with). A run of one trial
/// (folder `.`) gets its own transcript and report with its checks.
pub fn rerender_matrix(dir: &Path, out: &Path) -> Result<(), StoreError> {
    let matrix = read_matrix(dir)?;
    let records = read_records(dir)?;
    std::fs::create_dir_all(out).map_err(io("create", out))?;
    if matrix.trials.len() > 1 {
        write_outputs(out, &matrix.info, &records)?;
    }
    for record in &records {
        crate::findings::rerender_into(&dir.join(&record.folder), &out.join(&record.folder))?;
        if record.folder == "." {
            append_checks(out, record)?;
        }
    }
    Ok(())
}

/// The checks of a run of one trial, appended to its own `report.md`.
pub fn append_checks(dir: &Path, record: &TrialRecord) -> Result<(), StoreError> {
    if record.checks.is_empty() {
        return Ok(());
    }
    let path = dir.join(REPORT_FILE);
    let mut text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
    let passed = record.checks.iter().filter(|c| c.pass).count();
    text.push_str(&format!("\n## Checks\n\n{passed} of {} passed.\n\n", record.checks.len()));
    text.push_str("| check | type | result | detail |\n|---|---|---|---|\n");
    for check in &record.checks {
        let detail = check.detail.replace('|', "\\|").replace('\n', " ");
        let mark = if check.pass { "pass" } else { "FAIL" };
        text.push_str(&format!("| {} | {} | {mark} | {detail} |\n", check.name.replace('|', "\\|"), check.kind));
    }
    write_atomic(&path, text.as_bytes()).map_err(io("write", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(index: u32, key: &str) -> TrialRecord {
        TrialRecord {
            index,
            key: key.into(),
            variant: "v".into(),
            task_id: "t".into(),
            repetition: 1,
            seed: 1,
            status: "completed".into(),
            pass: true,
            score: 1.0,
            checks: Vec::new(),
            input_tokens: 1,
            output_tokens: 2,
            cost: None,
            wall_ms: 3,
            subtasks: 0,
            depth: 0,
            tool_errors: 0,
            limit_hits: 0,
            turns: 1,
            answer: Some("a".into()),
            error: None,
            folder: "trials/x".into(),
        }
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_next_record_starts_clean() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = TrialLog::open(dir.path()).unwrap();
        log.append(&record(1, "b")).unwrap();
        log.append(&record(0, "a")).unwrap();
        drop(log);
        // What `kill -9` in the middle of a write leaves.
        let path = dir.path().join(TRIALS_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        let line = serde_json::to_string(&record(2, "c")).unwrap();
        text.push_str(&line[..line.len() / 2]);
        std::fs::write(&path, text).unwrap();
        let keys = |records: Vec<TrialRecord>| records.into_iter().map(|r| r.key).collect::<Vec<_>>();
        assert_eq!(keys(read_records(dir.path()).unwrap()), ["a", "b"], "in matrix order, torn line skipped");
        let mut log = TrialLog::open(dir.path()).unwrap();
        log.append(&record(2, "c")).unwrap();
        assert_eq!(keys(read_records(dir.path()).unwrap()), ["a", "b", "c"]);
    }

    #[test]
    fn a_damaged_line_in_the_middle_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let line = serde_json::to_string(&record(0, "a")).unwrap();
        std::fs::write(dir.path().join(TRIALS_FILE), format!("{line}\n{{\"index\": \"x\"}}\n{line}\n")).unwrap();
        let err = read_records(dir.path()).unwrap_err().to_string();
        assert!(err.contains("trials.jsonl, line 2"), "{err}");
    }

    #[test]
    fn a_matrix_from_a_newer_troupe_is_refused_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let matrix = MatrixFile {
            format: FORMAT + 1,
            run_id: "r".into(),
            experiment_file: "experiments/e.toml".into(),
            info: MatrixInfo {
                experiment: "e".into(),
                variants: vec!["v".into()],
                baseline: "v".into(),
                tasks: vec!["t".into()],
                repetitions: 1,
                trials: 1,
                checks: Vec::new(),
            },
            shard: None,
            trials: Vec::new(),
            troupe_version: "9".into(),
        };
        write_matrix(dir.path(), &matrix).unwrap();
        let err = read_matrix(dir.path()).unwrap_err().to_string();
        assert!(err.contains("newer troupe"), "{err}");
    }
}
