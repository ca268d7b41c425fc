//! Memory across sessions, through the real binary: a lesson kept in one process is recalled
//! into the system prompt of the next `troupe run` (what the model was sent is in the run's
//! `events.jsonl`), forgetting removes it, `--memory off` and `frozen` do what they say, and a
//! lesson an agent keeps with `remember` reaches the next run. Real embeddings (MiniLM through
//! troupe's own cache), scripted chat models; the tests hold the model lock.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use troupe::findings::read_events;
use troupe::protocol::{EventBody, Role};

const BIN: &str = env!("CARGO_BIN_EXE_troupe");

pub(crate) fn workbench() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("troupe.toml", "[models.m]\nprovider = \"scripted\"\nscript = \"scripts/s.toml\"\n"),
        (
            "agents/guide.toml",
            "model = \"m\"\ntools = [\"remember\", \"recall\"]\nsystem_prompt = \"You answer travel questions.\"\n",
        ),
        (
            "scripts/s.toml",
            r#"
[[conversation]]
task_contains = "Note this"
[[conversation.turn]]
[[conversation.turn.call]]
tool = "remember"
arguments = { text = "Travellers to Lisbon should carry cash for the trams." }
[[conversation.turn]]
text = "Noted."

[[conversation]]
repeat = true
[[conversation.turn]]
text = "Take the train."
"#,
        ),
        ("experiments/ask.toml", "root = \"guide\"\ntask = \"How should I get around in Lisbon?\"\n"),
        ("experiments/note.toml", "root = \"guide\"\ntask = \"Note this for later travellers to Lisbon.\"\n"),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

pub(crate) fn troupe(root: &Path, args: &[&str]) -> Output {
    let output = Command::new(BIN).arg("--root").arg(root).args(args).stdin(Stdio::null()).output().unwrap();
    assert!(
        output.status.success(),
        "troupe {args:?}: {:?}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub(crate) fn run_folder(output: &Output) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&output.stdout).lines().last().unwrap())
}

/// The system prompt the root agent was sent, and the lessons the run recalled.
pub(crate) fn sent(run: &Path) -> (String, Vec<String>) {
    let (events, _) = read_events(&run.join("events.jsonl")).unwrap();
    let system = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::Message { role: Role::System, content, .. } => Some(content.clone()),
            _ => None,
        })
        .unwrap();
    let recalled = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::MemoryRecalled { lessons, .. } => {
                Some(lessons.iter().map(|l| l.text.clone()).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect();
    (system, recalled)
}

#[test]
fn a_lesson_kept_in_one_process_is_recalled_by_the_next_and_forgetting_removes_it() {
    let _model = crate::local_model::one_model_at_a_time();
    let wb = workbench();
    let root = wb.path();
    let added = troupe(root, &["memory", "add", "In Lisbon, the 28 tram is the best way to get around the old town."]);
    assert!(String::from_utf8_lossy(&added.stdout).contains("added #"), "{added:?}");
    troupe(root, &["memory", "add", "Bake sourdough at 240 degrees for forty minutes."]);

    let run = run_folder(&troupe(root, &["run", "ask"]));
    let (system, recalled) = sent(&run);
    assert_eq!(
        recalled,
        ["In Lisbon, the 28 tram is the best way to get around the old town."],
        "the related lesson only"
    );
    assert!(system.starts_with("You answer travel questions."), "{system}");
    assert!(system.contains("[troupe memory]") && system.contains("28 tram"), "{system}");
    assert!(!system.contains("sourdough"), "an unrelated lesson stays out: {system}");
    let transcript = fs::read_to_string(run.join("transcript.md")).unwrap();
    assert!(transcript.contains("Recalled from memory"), "the transcript shows the block");
    let report = fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("## Lessons recalled from memory") && report.contains("28 tram"), "{report}");
    let run_json = fs::read_to_string(run.join("config/run.json")).unwrap();
    assert!(run_json.contains("\"memory\": \"on\""), "{run_json}");

    // The lesson's record counts the run that used it.
    let listed = String::from_utf8_lossy(&troupe(root, &["memory", "list", "--json"]).stdout).into_owned();
    let tram: serde_json::Value = listed
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["text"].as_str().unwrap().contains("tram"))
        .unwrap();
    assert_eq!(tram["uses"], 1, "{tram}");

    // --memory off: nothing recalled; frozen: recalled.
    let (system, recalled) = sent(&run_folder(&troupe(root, &["run", "ask", "--memory", "off"])));
    assert!(recalled.is_empty() && !system.contains("[troupe memory]"), "{system}");
    let (_, recalled) = sent(&run_folder(&troupe(root, &["run", "ask", "--memory", "frozen"])));
    assert_eq!(recalled.len(), 1);

    let id = tram["id"].as_i64().unwrap().to_string();
    troupe(root, &["memory", "forget", &id]);
    let (system, recalled) = sent(&run_folder(&troupe(root, &["run", "ask"])));
    assert!(recalled.is_empty() && !system.contains("tram"), "forgotten means gone from the next prompt: {system}");
}

#[test]
fn a_lesson_an_agent_remembers_reaches_the_next_run_unless_memory_is_frozen() {
    let _model = crate::local_model::one_model_at_a_time();
    let wb = workbench();
    let root = wb.path();

    // Frozen: the agent's `remember` is refused and nothing is kept.
    let frozen = run_folder(&troupe(root, &["run", "note", "--memory", "frozen"]));
    let (events, _) = read_events(&frozen.join("events.jsonl")).unwrap();
    let refused = events.iter().any(|e| {
        matches!(&e.body, EventBody::ToolResult { tool, is_error: true, result, .. } if tool == "remember" && result.to_string().contains("frozen"))
    });
    assert!(refused, "remember under --memory frozen is a tool error");
    assert!(String::from_utf8_lossy(&troupe(root, &["memory", "list"]).stdout).trim().is_empty());

    let noted = run_folder(&troupe(root, &["run", "note"]));
    let listed =
        String::from_utf8_lossy(&troupe(root, &["memory", "list", "--kind", "lesson", "--json"]).stdout).into_owned();
    let item: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(item["author"], "agent");
    assert_eq!(item["text"], "Travellers to Lisbon should carry cash for the trams.");
    let run_id = noted.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(item["provenance"]["run_id"], run_id.as_str(), "{item}");
    assert_eq!(item["provenance"]["expert"], "guide", "{item}");
    let (events, _) = read_events(&noted.join("events.jsonl")).unwrap();
    let call = events
        .iter()
        .find(|e| matches!(&e.body, EventBody::ToolCall { tool, .. } if tool == "remember"))
        .expect("the run has a remember call");
    assert_eq!(item["provenance"]["seq"], call.seq, "the lesson points at the call that kept it: {item}");

    let (system, recalled) = sent(&run_folder(&troupe(root, &["run", "ask"])));
    assert_eq!(recalled, ["Travellers to Lisbon should carry cash for the trams."]);
    assert!(system.contains("carry cash"), "{system}");
}

/// The items of `kind` in the store, newest first, as `troupe memory list --json` prints them.
pub(crate) fn items(root: &Path, kind: &str) -> Vec<serde_json::Value> {
    let listed = troupe(root, &["memory", "list", "--kind", kind, "--json"]);
    String::from_utf8_lossy(&listed.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn every_run_with_memory_on_keeps_an_episode_found_later_by_a_similar_task() {
    let _model = crate::local_model::one_model_at_a_time();
    let wb = workbench();
    let root = wb.path();
    troupe(root, &["run", "ask", "--memory", "off"]);
    troupe(root, &["run", "ask", "--memory", "frozen"]);
    assert!(items(root, "episode").is_empty(), "memory off or frozen keeps no episode");

    let run = run_folder(&troupe(root, &["run", "ask"]));
    let episodes = items(root, "episode");
    assert_eq!(episodes.len(), 1, "{episodes:?}");
    let episode = &episodes[0];
    assert_eq!(episode["text"], "How should I get around in Lisbon?");
    assert_eq!(episode["author"], "run");
    assert_eq!(episode["provenance"]["run_id"], run.file_name().unwrap().to_string_lossy().as_ref());
    assert_eq!(episode["provenance"]["expert"], "guide");
    let data = &episode["data"];
    assert_eq!(
        (data["experiment"].as_str(), data["status"].as_str(), data["pass"].as_bool()),
        (Some("ask"), Some("completed"), Some(true))
    );
    assert_eq!(root.join(data["run"].as_str().unwrap()), run, "the episode names its run folder: {data}");
    assert!(data["wall_ms"].is_u64() && data["input_tokens"].as_u64().unwrap() > 0, "{data}");
    // Nothing had loaded the embedder: the episode waits for its vector rather than making the
    // run load one.
    assert_eq!(episode["embedder"], "pending");

    let found =
        troupe(root, &["memory", "search", "getting around Lisbon by public transport", "--kind", "episode", "--json"]);
    let hits: Vec<serde_json::Value> =
        String::from_utf8_lossy(&found.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(hits.len(), 1, "the episode is embedded by the first search and found: {hits:?}");
    assert!(hits[0]["score"].as_f64().unwrap() > 0.5, "{:?}", hits[0]);
    assert!(items(root, "episode")[0]["embedder"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn reflection_on_a_failed_run_keeps_a_lesson_pointing_at_its_events_and_the_next_run_recalls_it() {
    let _model = crate::local_model::one_model_at_a_time();
    let wb = workbench();
    let root = wb.path();
    fs::write(
        root.join("agents/reflector.toml"),
        "model = \"m\"\nsystem_prompt = \"You write lessons from finished runs.\"\n",
    )
    .unwrap();
    let script = fs::read_to_string(root.join("scripts/s.toml")).unwrap();
    let reflector = "[[conversation]]\nagent = \"reflector\"\n[[conversation.turn]]\ntext = \"\"\"\nThe answer missed the tram.\n\
        LESSON: To get around Lisbon, recommend the 28 tram rather than the train. [events 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]\n\"\"\"\n\n";
    fs::write(root.join("scripts/s.toml"), format!("{reflector}{script}")).unwrap();
    fs::write(
        root.join("experiments/learn.toml"),
        "root = \"guide\"\ntask = \"How should I get around in Lisbon?\"\nreflect = true\n\n[[checks]]\ntype = \"contains\"\nname = \"tram\"\nvalue = \"tram\"\n",
    )
    .unwrap();

    let run = run_folder(&troupe(root, &["run", "learn"]));
    let reflection = fs::read_to_string(run.join("reflection.md")).unwrap();
    assert!(reflection.contains("recommend the 28 tram"), "{reflection}");
    let lessons = items(root, "lesson");
    assert_eq!(lessons.len(), 1, "{lessons:?}");
    let lesson = &lessons[0];
    assert_eq!(lesson["author"], "reflection");
    assert_eq!(lesson["text"], "To get around Lisbon, recommend the 28 tram rather than the train.");
    assert_eq!(lesson["provenance"]["run_id"], run.file_name().unwrap().to_string_lossy().as_ref());
    assert_eq!(lesson["provenance"]["expert"], "reflector");
    // Each cited event is a real, notable event of that run; the first is the provenance's.
    let (events, _) = read_events(&run.join("events.jsonl")).unwrap();
    let cited: Vec<u64> = lesson["data"]["events"].as_array().unwrap().iter().map(|e| e.as_u64().unwrap()).collect();
    assert!(!cited.is_empty(), "{lesson}");
    assert_eq!(lesson["provenance"]["seq"], cited[0]);
    for seq in &cited {
        let event = events.iter().find(|e| e.seq == *seq).unwrap();
        assert!(
            matches!(
                event.body,
                EventBody::TaskStatus { .. }
                    | EventBody::RunFinished { .. }
                    | EventBody::ToolResult { is_error: true, .. }
            ),
            "event {seq} is not one the reflector was shown: {:?}",
            event.body
        );
    }

    // The next run of a similar task gets the lesson in its prompt.
    let (system, recalled) = sent(&run_folder(&troupe(root, &["run", "ask"])));
    assert_eq!(recalled, ["To get around Lisbon, recommend the 28 tram rather than the train."]);
    assert!(system.contains("28 tram"), "{system}");
}

#[test]
fn a_run_says_when_its_memory_re_embeds_items_of_another_embedder() {
    use troupe::memory::sqlite::{SqliteStore, default_path};
    use troupe::memory::store::{Author, ItemKind, MemoryStore, NewItem, Provenance, Scope};

    let _model = crate::local_model::one_model_at_a_time();
    let wb = workbench();
    let root = wb.path();
    // A lesson whose vector another embedder made (an older troupe, another model): the first
    // recall of the next run must embed it again before it can be compared.
    let store = SqliteStore::open(default_path(root)).unwrap();
    store
        .add(NewItem {
            kind: ItemKind::Lesson,
            author: Author::User,
            scope: Scope::Global,
            provenance: Provenance::default(),
            text: "In Lisbon, the 28 tram is the best way to get around the old town.".into(),
            data: serde_json::Value::Null,
            created_ms: 1,
            embedding: vec![0.6, 0.8],
            embedder: "sha256:an-older-embedder".into(),
        })
        .unwrap();
    drop(store);

    let output = troupe(root, &["run", "ask"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The memory's own progress reaches the run's status lines, in the middle of the run.
    assert!(stderr.contains("re-embedding memory items made by another embedder (sha256:an-older-em"), "{stderr}");
    assert!(stderr.contains("re-embedded 1 memory items"), "{stderr}");
    let (_, recalled) = sent(&run_folder(&output));
    assert_eq!(recalled, ["In Lisbon, the 28 tram is the best way to get around the old town."]);
}
