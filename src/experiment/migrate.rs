//! Every `matrix.json` troupe has ever written, read by this troupe: the format history, the
//! defaults of additive fields, and the checks that keep a path read from the file inside its
//! folder.
//!
//! The history of `matrix.json`:
//! - format 1 (troupe 0.1, November 2026): the first matrices. `trials[].pair` was added later
//!   without a bump, so a format-1 file may lack it; it is derived from the plan's order
//!   (task by task, repetition by repetition), which is how the runner numbers pairs.
//!
//! Reading upgrades a file in memory only ([`upgrade_matrix`]); `troupe migrate` writes the
//! upgraded form back, atomically. A file from a newer troupe is refused with the version that
//! wrote it. A change that is not additive bumps [`super::store::FORMAT`] and adds a step here,
//! with a frozen folder of the old format under `tests/all/fixtures/formats/`.
//!
//! Invariant: pure. No file is read or written here.

use serde_json::Value;

/// What was upgraded in a file, in words a person reads ("derived `pair` of 12 trials").
pub type Changes = Vec<String>;

/// Why a `matrix.json` cannot be read by this troupe.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error(
        "written by a newer troupe ({written_by}, format {format}; this one is {ours} and reads up to format {reads}): upgrade troupe to read it"
    )]
    Newer { format: u64, written_by: String, ours: &'static str, reads: u32 },
    #[error("not a troupe matrix: {0}")]
    Invalid(String),
}

/// Brings a parsed `matrix.json` to the current format: refuses a newer one, fills additive
/// fields. Returns what it changed (nothing for a current file).
pub fn upgrade_matrix(value: &mut Value, current: u32) -> Result<Changes, FormatError> {
    let format = value.get("format").and_then(Value::as_u64).ok_or_else(|| {
        FormatError::Invalid("it has no `format` number (every matrix.json troupe writes has one)".to_owned())
    })?;
    if format > u64::from(current) {
        let written_by = value
            .get("troupe_version")
            .and_then(Value::as_str)
            .map_or_else(|| "an unknown version".to_owned(), |v| format!("troupe {v}"));
        return Err(FormatError::Newer { format, written_by, ours: env!("CARGO_PKG_VERSION"), reads: current });
    }
    let mut changes = Changes::new();
    derive_pairs(value, &mut changes)?;
    Ok(changes)
}

/// Format 1 before `pair`: a trial's pair is the position of its (task, repetition) in the
/// plan's order, `task index × repetitions + repetition − 1`.
fn derive_pairs(value: &mut Value, changes: &mut Changes) -> Result<(), FormatError> {
    let info = value.get("info").ok_or_else(|| FormatError::Invalid("it has no `info`".to_owned()))?;
    let tasks: Vec<String> = info
        .get("tasks")
        .and_then(Value::as_array)
        .map(|tasks| tasks.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let repetitions = info.get("repetitions").and_then(Value::as_u64).unwrap_or(1).max(1);
    let Some(trials) = value.get_mut("trials").and_then(Value::as_array_mut) else {
        return Err(FormatError::Invalid("it has no `trials` list".to_owned()));
    };
    let mut derived = 0usize;
    for (i, trial) in trials.iter_mut().enumerate() {
        let Some(trial) = trial.as_object_mut() else {
            return Err(FormatError::Invalid(format!("trials[{i}] is not an object")));
        };
        if trial.contains_key("pair") {
            continue;
        }
        let task = trial.get("task_id").and_then(Value::as_str).unwrap_or_default();
        let repetition = trial.get("repetition").and_then(Value::as_u64).unwrap_or(0);
        let Some(task_index) = tasks.iter().position(|t| t == task) else {
            return Err(FormatError::Invalid(format!(
                "trials[{i}] is of task `{task}`, which `info.tasks` does not list, so its pair cannot be derived"
            )));
        };
        if repetition == 0 || repetition > repetitions {
            return Err(FormatError::Invalid(format!(
                "trials[{i}] has repetition {repetition}, outside 1..={repetitions}, so its pair cannot be derived"
            )));
        }
        let pair = task_index as u64 * repetitions + repetition - 1;
        trial.insert("pair".to_owned(), Value::from(pair));
        derived += 1;
    }
    if derived > 0 {
        changes.push(format!("derived `pair` of {derived} trial{}", if derived == 1 { "" } else { "s" }));
    }
    Ok(())
}

/// Whether `folder`, read from a matrix's files, names a trial's folder inside the matrix: `.`
/// (a run of one trial is its own folder) or `trials/<name>` with one plain name. Anything
/// else (absolute, `..`, deeper, a backslash) would let a shared folder reach outside itself.
pub fn is_trial_folder(folder: &str) -> bool {
    if folder == "." {
        return true;
    }
    let Some(name) = folder.strip_prefix("trials/") else { return false };
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.starts_with('.')
        && name.chars().all(|c| !c.is_control())
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    fn matrix(trials: Value, format: u64) -> Value {
        json!({
            "format": format,
            "troupe_version": "0.1.0",
            "info": { "tasks": ["a", "b"], "repetitions": 2 },
            "trials": trials,
        })
    }

    #[test]
    fn pairs_are_derived_in_the_plans_order_when_absent() {
        let trials = json!([
            { "task_id": "a", "repetition": 1 }, { "task_id": "a", "repetition": 1 },
            { "task_id": "a", "repetition": 2 }, { "task_id": "b", "repetition": 1 },
            { "task_id": "b", "repetition": 2 },
        ]);
        let mut value = matrix(trials, 1);
        let changes = upgrade_matrix(&mut value, 1).unwrap();
        let pairs: Vec<u64> = value["trials"].as_array().unwrap().iter().map(|t| t["pair"].as_u64().unwrap()).collect();
        assert_eq!(pairs, [0, 0, 1, 2, 3]);
        assert_eq!(changes, ["derived `pair` of 5 trials"]);
    }

    #[test]
    fn a_current_file_is_left_as_it_is() {
        let mut value = matrix(json!([{ "task_id": "b", "repetition": 1, "pair": 7 }]), 1);
        let before = value.clone();
        assert_eq!(upgrade_matrix(&mut value, 1).unwrap(), Changes::new());
        assert_eq!(value, before);
    }

    #[test]
    fn a_newer_format_is_refused_with_the_version_that_wrote_it() {
        let mut value = matrix(json!([]), 2);
        value["troupe_version"] = json!("0.4.2");
        let err = upgrade_matrix(&mut value, 1).unwrap_err().to_string();
        assert!(err.contains("newer troupe (troupe 0.4.2, format 2"), "{err}");
        assert!(err.contains("upgrade troupe"), "{err}");
    }

    #[test]
    fn a_pair_that_cannot_be_derived_is_an_error_naming_the_trial() {
        let mut value = matrix(json!([{ "task_id": "zz", "repetition": 1 }]), 1);
        let err = upgrade_matrix(&mut value, 1).unwrap_err().to_string();
        assert!(err.contains("trials[0] is of task `zz`"), "{err}");
        let mut value = matrix(json!([{ "task_id": "a", "repetition": 9 }]), 1);
        assert!(upgrade_matrix(&mut value, 1).unwrap_err().to_string().contains("repetition 9"));
    }

    #[test]
    fn only_a_plain_name_under_trials_is_a_trial_folder() {
        let table = [
            (".", true),
            ("trials/agent--capital--r1", true),
            ("trials/a.b", true),
            ("trials/", false),
            ("trials/..", false),
            ("trials/.", false),
            ("trials/.hidden", false),
            ("trials/../../etc", false),
            ("trials/a/b", false),
            ("trials/a\\..\\b", false),
            ("/tmp/x", false),
            ("../x", false),
            ("x", false),
            ("", false),
            ("trials/a\nb", false),
        ];
        for (folder, expected) in table {
            assert_eq!(is_trial_folder(folder), expected, "{folder:?}");
        }
    }
}
