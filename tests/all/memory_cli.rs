//! `troupe memory …` as a person runs it: the real binary on a temporary workbench, with real
//! embeddings (all-MiniLM-L6-v2 through troupe's own model cache). Tests that embed hold the
//! model lock, so two models never share the two cores; the others (a damaged, newer, locked or
//! misconfigured store, bad input) fail before any model is loaded and need no lock.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pretty_assertions::assert_eq;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_troupe");

fn troupe(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--root").arg(root).arg("memory").args(args).stdin(Stdio::null()).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command that must succeed; its stdout.
fn ok(root: &Path, args: &[&str]) -> String {
    let output = troupe(root, args);
    assert!(output.status.success(), "troupe memory {args:?}: {:?}\nstderr: {}", output.status, stderr(&output));
    stdout(&output)
}

/// Runs a command that must fail with `code`; its stderr.
fn fails(root: &Path, args: &[&str], code: i32) -> String {
    let output = troupe(root, args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "troupe memory {args:?}\nstdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    stderr(&output)
}

fn store(root: &Path) -> PathBuf {
    root.join(".troupe/memory.sqlite")
}

/// `list --json` as values, one per item.
fn listed(root: &Path) -> Vec<Value> {
    ok(root, &["list", "--json"]).lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn texts(items: &[Value]) -> Vec<String> {
    let mut texts: Vec<String> = items.iter().map(|item| item["text"].as_str().unwrap().to_string()).collect();
    texts.sort();
    texts
}

/// The first column of a list or search line: `#12` → 12.
fn first_id(lines: &str) -> i64 {
    let first = lines.lines().next().unwrap_or_else(|| panic!("no lines in {lines:?}"));
    first.split_whitespace().next().unwrap().trim_start_matches('#').parse().unwrap()
}

const LESSONS: [&str; 3] = [
    "Run cargo test before committing any change to the repository.",
    "When summarizing a paper, lead with its main finding in one sentence.",
    "The staging database is reset every night at midnight.",
];

fn add_lessons(root: &Path) -> Vec<i64> {
    LESSONS
        .iter()
        .map(|lesson| {
            let out = ok(root, &["add", lesson]);
            assert!(out.starts_with("added #"), "{out}");
            out["added #".len()..].split(':').next().unwrap().parse().unwrap()
        })
        .collect()
}

#[test]
fn search_ranks_the_related_lesson_first() {
    let _turn = crate::local_model::one_model_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let ids = add_lessons(dir.path());
    let found = ok(dir.path(), &["search", "run", "the", "tests", "before", "committing"]);
    assert_eq!(first_id(&found), ids[0], "{found}");
    let line = found.lines().next().unwrap();
    assert!(line.starts_with(&format!("#{}  lesson  global  user  0.", ids[0])), "{line}");
    assert!(line.ends_with(LESSONS[0]), "{line}");

    let hits: Vec<Value> = ok(dir.path(), &["search", "--json", "--k", "3", "--min-score", "-1", "summary of a paper"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hits.len(), 3, "{hits:?}");
    assert_eq!(hits[0]["id"], ids[1]);
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");

    // The default floor (0.3) keeps unrelated lessons out.
    let output = troupe(dir.path(), &["search", "volcanic eruptions in Iceland"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "");
    assert!(stderr(&output).contains("nothing in memory is similar enough"), "{}", stderr(&output));
}

#[test]
fn a_near_duplicate_merges_instead_of_piling_up() {
    let _turn = crate::local_model::one_model_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let first = ok(dir.path(), &["add", "Run cargo test before committing."]);
    assert_eq!(first, "added #1: Run cargo test before committing.\n");
    let again = ok(dir.path(), &["add", "Run cargo test before committing!"]);
    assert!(again.starts_with("merged into #1 (similarity 0."), "{again}");
    let json: Value =
        serde_json::from_str(&ok(dir.path(), &["add", "--json", "Run cargo test before committing."])).unwrap();
    assert_eq!((json["outcome"].as_str(), json["item"]["id"].as_i64()), (Some("merged"), Some(1)));
    assert!(json["similarity"].as_f64().unwrap() >= 0.95, "{json}");
    assert_eq!(listed(dir.path()).len(), 1);
}

#[test]
fn an_edited_lesson_is_found_by_its_new_text() {
    let _turn = crate::local_model::one_model_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let ids = add_lessons(dir.path());
    let edited = ok(dir.path(), &["edit", &format!("#{}", ids[2]), "--text", "Deploy to production only on Tuesdays."]);
    assert_eq!(edited, format!("edited #{}: Deploy to production only on Tuesdays.\n", ids[2]));
    let found = ok(dir.path(), &["search", "when can we deploy to production?"]);
    assert_eq!(first_id(&found), ids[2], "{found}");
    assert!(found.lines().next().unwrap().ends_with("Deploy to production only on Tuesdays."), "{found}");
    let shown = ok(dir.path(), &["show", &ids[2].to_string()]);
    assert!(shown.ends_with("\nDeploy to production only on Tuesdays.\n"), "{shown}");
    assert!(
        !ok(dir.path(), &["search", "--min-score", "0.5", "staging database reset at midnight"]).contains("staging")
    );
}

#[test]
fn forgetting_removes_a_lesson_from_search_and_list() {
    let _turn = crate::local_model::one_model_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let ids = add_lessons(dir.path());
    let forgot = ok(dir.path(), &["forget", &ids[0].to_string()]);
    assert_eq!(forgot, format!("forgot #{}: {}\n", ids[0], LESSONS[0]));
    assert_eq!(texts(&listed(dir.path())), texts(&[LESSONS[1], LESSONS[2]].map(|t| serde_json::json!({"text": t}))));
    let found = ok(dir.path(), &["search", "--min-score", "-1", "--k", "10", "before committing, run the tests"]);
    assert!(!found.contains(LESSONS[0]), "{found}");
    assert_eq!(found.lines().count(), 2);
    let error = fails(dir.path(), &["show", &ids[0].to_string()], 2);
    assert!(error.contains(&format!("no memory item #{}", ids[0])), "{error}");
    fails(dir.path(), &["forget", &ids[0].to_string()], 2);
}

#[test]
fn export_then_import_into_a_fresh_workbench_round_trips() {
    let _turn = crate::local_model::one_model_at_a_time();
    let source = crate::cli::workbench();
    add_lessons(source.path());
    let scoped = ok(source.path(), &["add", "--scope", "researcher", "Cite the primary source, not a blog post."]);
    assert!(scoped.starts_with("added #4"), "{scoped}");
    let error = fails(source.path(), &["add", "--scope", "reseacher", "x"], 2);
    assert!(error.contains("no expert `reseacher` in this workbench"), "{error}");
    let researcher = ok(source.path(), &["list", "--scope", "researcher"]);
    assert_eq!(researcher.lines().count(), 1, "{researcher}");

    let file = source.path().join("memory.jsonl");
    let output = troupe(source.path(), &["export", "--out", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("exported 4 memory items to"), "{}", stderr(&output));
    let exported = fs::read_to_string(&file).unwrap();
    assert_eq!(exported, ok(source.path(), &["export"]), "the file and stdout hold the same lines");
    let lines: Vec<Value> = exported.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert!(
        lines.iter().all(|l| l.get("embedding").is_none() && l["embedder"].as_str().unwrap().starts_with("sha256:"))
    );
    assert_eq!(lines[3]["scope"], serde_json::json!({"expert": "researcher"}));

    let target = crate::cli::workbench();
    let imported = ok(target.path(), &["import", file.to_str().unwrap()]);
    assert_eq!(imported, format!("imported {}: 4 added, 0 merged, 0 already present\n", file.display()));
    let strip = |items: Vec<Value>| -> Vec<Value> {
        let mut items: Vec<Value> = items
            .into_iter()
            .map(|mut item| {
                item.as_object_mut().unwrap().remove("id");
                item
            })
            .collect();
        items.sort_by_key(|item| item["text"].as_str().unwrap().to_string());
        items
    };
    assert_eq!(strip(listed(target.path())), strip(listed(source.path())));
    let again = ok(target.path(), &["import", "--json", file.to_str().unwrap()]);
    assert_eq!(
        serde_json::from_str::<Value>(&again).unwrap(),
        serde_json::json!({"added": 0, "merged": 0, "present": 4, "truncated": 0})
    );
    assert_eq!(listed(target.path()).len(), 4);
    // The imported items are searchable with vectors made here.
    let found = ok(target.path(), &["search", "primary sources for citations"]);
    assert!(found.lines().next().unwrap().ends_with("Cite the primary source, not a blog post."), "{found}");
}

#[test]
fn a_huge_text_is_truncated_with_a_notice() {
    let _turn = crate::local_model::one_model_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let huge: String = (0..400).map(|i| format!("Observation {i}: the build took longer than usual. ")).collect();
    let output = troupe(dir.path(), &["add", &huge]);
    assert!(output.status.success(), "{}", stderr(&output));
    let note = stderr(&output);
    assert!(note.contains("note: the text is longer than the embedder reads (256 tokens): kept its first "), "{note}");
    assert!(note.contains(&format!(" of {} characters", huge.trim().chars().count())), "{note}");
    let item: Value = serde_json::from_str(&ok(dir.path(), &["show", "1", "--json"])).unwrap();
    let kept = item["text"].as_str().unwrap();
    assert!(huge.starts_with(kept) && kept.len() < huge.len() / 4, "{} of {} bytes", kept.len(), huge.len());
    // What was kept is what the embedder reads of the whole text: the whole text finds it at ~1.
    let hit: Value =
        serde_json::from_str(ok(dir.path(), &["search", "--json", &huge]).lines().next().unwrap()).unwrap();
    assert!(hit["score"].as_f64().unwrap() > 0.99, "{hit}");
}

#[test]
fn settings_in_troupe_toml_set_the_store_and_k() {
    let _turn = crate::local_model::one_model_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("troupe.toml"), "[memory]\npath = \"state/lessons.sqlite\"\nk = 1\nmin_score = -1\n")
        .unwrap();
    add_lessons(dir.path());
    assert!(dir.path().join("state/lessons.sqlite").is_file());
    assert!(!store(dir.path()).exists());
    assert_eq!(ok(dir.path(), &["search", "anything at all"]).lines().count(), 1);
    assert_eq!(ok(dir.path(), &["search", "--k", "2", "anything at all"]).lines().count(), 2);
}

#[test]
fn list_json_parses_and_filters() {
    let _turn = crate::local_model::one_model_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let ids = add_lessons(dir.path());
    let items = listed(dir.path());
    assert_eq!(
        items.iter().map(|i| i["id"].as_i64().unwrap()).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    for item in &items {
        assert_eq!(
            (item["kind"].as_str(), item["author"].as_str(), item["scope"].as_str()),
            (Some("lesson"), Some("user"), Some("global"))
        );
        assert!(item["created_ms"].as_i64().unwrap() > 1_600_000_000_000);
        assert!(item.get("score").is_none());
    }
    let human = ok(dir.path(), &["list"]);
    assert_eq!(human.lines().count(), 3);
    assert!(human.lines().all(|l| l.contains("  lesson  global  user  ")), "{human}");
    let output = troupe(dir.path(), &["list", "--kind", "episode"]);
    assert_eq!((output.status.code(), stdout(&output)), (Some(0), String::new()));
    assert!(stderr(&output).contains("no memory items match"), "{}", stderr(&output));
    let limited = troupe(dir.path(), &["list", "--limit", "2"]);
    assert_eq!(stdout(&limited).lines().count(), 2);
    assert!(stderr(&limited).contains("showing the newest 2"), "{}", stderr(&limited));
}

#[test]
fn a_corrupt_store_fails_with_its_name_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path());
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    fs::write(&path, &garbage).unwrap();
    for args in [&["list"][..], &["add", "a lesson"], &["export"], &["show", "1"]] {
        let error = fails(dir.path(), args, 1);
        assert!(error.contains(&path.display().to_string()) && error.contains("is damaged"), "{args:?}: {error}");
        assert!(error.contains("Move it aside"), "{error}");
    }
    assert_eq!(fs::read(&path).unwrap(), garbage);
    // `.troupe/.gitignore` is troupe's own (it keeps the folder out of git), not a copy.
    let mut siblings: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != ".gitignore")
        .collect();
    siblings.sort();
    assert_eq!(siblings, vec![std::ffi::OsString::from("memory.sqlite")], "no journal or copy was left beside it");
}

#[test]
fn a_store_from_a_newer_troupe_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["list"]);
    let conn = rusqlite::Connection::open(store(dir.path())).unwrap();
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", []).unwrap();
    drop(conn);
    let error = fails(dir.path(), &["list"], 1);
    assert!(error.contains("was written by a newer troupe (store format 99"), "{error}");
}

#[test]
fn a_store_another_process_writes_is_read_at_once_and_a_write_waiting_too_long_says_so() {
    use troupe::memory::sqlite::SqliteStore;
    use troupe::memory::store::{Author, ItemKind, MemoryStore, NewItem, Provenance, Scope};

    let dir = tempfile::tempdir().unwrap();
    // An item stored without the embedder (forgetting it needs none either).
    let item = SqliteStore::open(store(dir.path()))
        .unwrap()
        .add(NewItem {
            kind: ItemKind::Lesson,
            author: Author::User,
            scope: Scope::Global,
            provenance: Provenance::default(),
            text: "Keep the import small.".into(),
            data: Value::Null,
            created_ms: 1,
            embedding: vec![1.0],
            embedder: "sha256:any".into(),
        })
        .unwrap();
    // Another process in the middle of a long write (an import, a re-embedding).
    let conn = rusqlite::Connection::open(store(dir.path())).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE; INSERT INTO meta (key, value) VALUES ('held', 'by an import');").unwrap();
    // Reading needs no write lock (WAL): the listing is there at once.
    assert!(ok(dir.path(), &["list"]).contains("Keep the import small."));
    // A write waits for the other writer, then says what holds it.
    let error = fails(dir.path(), &["forget", &item.id.to_string()], 1);
    assert!(error.contains("is busy: another process held it"), "{error}");
    assert!(error.contains(&store(dir.path()).display().to_string()), "{error}");
    conn.execute_batch("ROLLBACK").unwrap();
    ok(dir.path(), &["forget", &item.id.to_string()]);
}

#[test]
fn bad_input_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let error = fails(dir.path(), &["add", "   "], 2);
    assert!(error.contains("text is empty"), "{error}");
    let error = fails(dir.path(), &["edit", "7", "new text"], 2);
    assert!(error.contains("no memory item #7"), "{error}");
    let error = fails(dir.path(), &["search", " "], 2);
    assert!(error.contains("the search query is empty"), "{error}");
    let error = fails(dir.path(), &["show", "seven"], 2);
    assert!(error.contains("`seven` is not an item id"), "{error}");
    fails(dir.path(), &["edit", "7"], 2);

    // An import checks every line before loading the model or writing anything.
    let file = dir.path().join("lessons.jsonl");
    fs::write(&file, "{\"text\": \"A fine lesson.\"}\n\n{\"text\": \"Another\", \"scope\": \"coder\"}\n").unwrap();
    let error = fails(dir.path(), &["import", file.to_str().unwrap()], 2);
    assert!(error.contains("lessons.jsonl line 3: unknown variant `coder`"), "{error}");
    assert!(error.contains("Nothing was imported"), "{error}");
    assert_eq!(ok(dir.path(), &["list", "--json"]), "");
    let error = fails(dir.path(), &["import", dir.path().join("missing.jsonl").to_str().unwrap()], 2);
    assert!(error.contains("cannot read") && error.contains("missing.jsonl"), "{error}");
}

#[test]
fn memory_settings_are_checked_and_postgres_needs_its_url_variable() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("troupe.toml"), "[memory]\nk = 0\n").unwrap();
    let error = fails(dir.path(), &["list"], 2);
    assert!(error.contains("troupe.toml:2:5: error: `k` must be a positive integer, found 0"), "{error}");

    fs::write(dir.path().join("troupe.toml"), "[memory]\nbackend = \"postgres\"\nurl_env = \"TROUPE_MEMORY_URL\"\n")
        .unwrap();
    let error = fails(dir.path(), &["list"], 2);
    assert!(error.contains("environment variable TROUPE_MEMORY_URL, which is not set"), "{error}");
    assert!(!store(dir.path()).exists());
}
