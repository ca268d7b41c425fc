//! Fault cases: malformed and hostile configuration. `troupe check` (and every command that
//! loads the workbench) answers each with a diagnostic that names the file, line and field and
//! says how to fix it, exits 2, and never panics or changes a file.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_troupe");

fn workbench(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let base: [(&str, &[u8]); 2] = [
        ("troupe.toml", b"[models.m]\nprovider = \"scripted\"\nscript = \"s.toml\"\n"),
        ("s.toml", b"[[conversation]]\nrepeat = true\n[[conversation.turn]]\ntext = \"ok\"\n"),
    ];
    for (path, bytes) in base.iter().chain(files) {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }
    dir
}

fn check(root: &Path) -> Output {
    Command::new(BIN).arg("--root").arg(root).arg("check").stdin(Stdio::null()).output().unwrap()
}

/// `troupe check` failed cleanly (exit 2, no panic) with every `expected` piece in its stderr.
fn refused(output: &Output, expected: &[&str]) {
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "exit 2 for a configuration problem:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    for piece in expected {
        assert!(err.contains(piece), "{piece:?} in:\n{err}");
    }
}

#[test]
fn an_agent_name_that_climbs_out_of_agents_is_refused() {
    let wb = workbench(&[("agents/a.toml", b"name = \"../../escape\"\nmodel = \"m\"\n")]);
    refused(&check(wb.path()), &["agents/a.toml:1:8", "file name", "`/`"]);
}

#[test]
fn an_agent_name_with_a_control_character_is_refused() {
    let wb = workbench(&[("agents/a.toml", b"name = \"evil\\u001b[2J\"\nmodel = \"m\"\n")]);
    let output = check(wb.path());
    refused(&output, &["agents/a.toml:1:8", "control character U+001B"]);
    assert!(!output.stderr.contains(&0x1b), "the escape is not echoed to the terminal");
}

#[test]
fn a_hidden_or_overlong_experiment_name_is_refused() {
    let long = format!("name = \"{}\"\nroot = \"a\"\ntask = \"t\"\n", "x".repeat(65));
    let wb = workbench(&[
        ("agents/a.toml", b"model = \"m\"\n"),
        ("experiments/e.toml", b"name = \".hidden\"\nroot = \"a\"\ntask = \"t\"\n"),
        ("experiments/f.toml", long.as_bytes()),
    ]);
    refused(&check(wb.path()), &["experiments/e.toml:1:8", "start with `.`", "experiments/f.toml:1:8", "at most 64"]);
}

#[test]
fn deeply_nested_toml_is_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let text = format!("model = \"m\"\nx = {}{}\n", "[".repeat(depth), "]".repeat(depth));
    let wb = workbench(&[("agents/a.toml", text.as_bytes())]);
    refused(&check(wb.path()), &["agents/a.toml"]);
}

#[test]
fn deeply_nested_inline_tables_are_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let text = format!("model = \"m\"\nx = {}{}\n", "{ a = ".repeat(depth), "}".repeat(depth));
    let wb = workbench(&[("agents/a.toml", text.as_bytes())]);
    refused(&check(wb.path()), &["agents/a.toml"]);
}

#[test]
fn a_binary_file_in_agents_is_named_not_parsed() {
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 256) as u8).collect();
    let wb = workbench(&[("agents/a.toml", &bytes)]);
    refused(&check(wb.path()), &["agents/a.toml", "cannot read file"]);
}

#[test]
fn a_huge_agent_file_is_refused_with_its_size() {
    let mut text = b"model = \"m\"\nsystem_prompt = \"".to_vec();
    text.extend(std::iter::repeat_n(b'x', 20 * 1024 * 1024));
    text.extend(b"\"\n");
    let wb = workbench(&[("agents/a.toml", &text)]);
    refused(&check(wb.path()), &["agents/a.toml", "MiB"]);
}

#[test]
fn an_expert_that_names_an_unknown_expert_is_a_dangling_reference() {
    let wb = workbench(&[("agents/a.toml", b"model = \"m\"\ntools = [\"call_agent\"]\nexperts = [\"ghost\"]\n")]);
    refused(&check(wb.path()), &["agents/a.toml:3", "ghost"]);
}

#[test]
fn an_expert_on_an_unknown_model_alias_is_a_dangling_reference() {
    let wb = workbench(&[("agents/a.toml", b"model = \"nowhere\"\n")]);
    refused(&check(wb.path()), &["agents/a.toml:1", "nowhere"]);
}

#[test]
fn an_experiment_whose_root_does_not_exist_is_a_dangling_reference() {
    let wb =
        workbench(&[("agents/a.toml", b"model = \"m\"\n"), ("experiments/e.toml", b"root = \"b\"\ntask = \"t\"\n")]);
    refused(&check(wb.path()), &["experiments/e.toml:1", "`b`"]);
}

#[test]
fn a_dataset_outside_the_workbench_is_refused() {
    let outside = tempfile::NamedTempFile::new().unwrap();
    fs::write(outside.path(), "{\"input\": \"private\"}\n").unwrap();
    let text = format!("root = \"a\"\ndataset = \"{}\"\n", outside.path().display());
    let wb = workbench(&[("agents/a.toml", b"model = \"m\"\n"), ("experiments/e.toml", text.as_bytes())]);
    refused(&check(wb.path()), &["experiments/e.toml:2", "inside the workbench"]);
}

#[test]
fn an_invalid_utf8_troupe_toml_is_named_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("troupe.toml"), b"[models.m]\nprovider = \"\xff\xfe\"\n").unwrap();
    refused(&check(dir.path()), &["troupe.toml", "cannot read file"]);
    let run = Command::new(BIN).arg("--root").arg(dir.path()).args(["run", "x"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(!dir.path().join("findings").exists(), "no run folder for a workbench that does not load");
}
