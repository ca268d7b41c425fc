//! The service over a real SQLite store and a stand-in embedder (bag of words, a window of a few
//! words), so every rule is tested without loading a model: truncation, merge, search, edit,
//! forget, export and import, re-embedding, and which operations need no embedder at all.

use std::sync::{Arc, Mutex};

use pretty_assertions::assert_eq;

use super::fit::{Piece, cut_at, fitted};
use super::*;
use crate::memory::store::ScopeFilter;

/// Words as tokens: each word hashed into one of 64 dimensions. `window` counts two special
/// tokens, as MiniLM's does. Other modules' tests use it as the memory's embedder.
pub(crate) struct Words {
    digest: String,
    window: usize,
}

impl Words {
    pub(crate) fn new(digest: &str) -> Arc<Words> {
        Arc::new(Words { digest: digest.into(), window: 12 })
    }

    fn pieces(text: &str) -> Vec<Piece> {
        let mut pieces = vec![Piece { start: 0, special: true, continues_word: false }];
        let mut at = 0;
        for word in text.split_whitespace() {
            let start = at + text[at..].find(word).unwrap();
            pieces.push(Piece { start, special: false, continues_word: false });
            at = start + word.len();
        }
        pieces.push(Piece { start: text.len(), special: true, continues_word: false });
        pieces
    }
}

impl TextEmbedder for Words {
    fn digest(&self) -> &str {
        &self.digest
    }

    fn fit(&self, text: &str) -> Result<Fitted, EmbedError> {
        Ok(fitted(text, text, &Words::pieces(text), self.window))
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts
            .iter()
            .map(|text| {
                let mut v = vec![0f32; 64];
                for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
                    let hash = word
                        .to_lowercase()
                        .bytes()
                        .fold(2166136261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619));
                    v[(hash % 64) as usize] += 1.0;
                }
                if v.iter().all(|x| *x == 0.0) {
                    v[0] = 1.0;
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / norm).collect()
            })
            .collect())
    }
}

fn settings(dir: &Path) -> MemorySettings {
    MemorySettings { min_score: 0.1, ..MemorySettings::in_folder(dir) }
}

/// A memory in a new folder with the stand-in embedder `digest`, and the folder.
fn memory_with(digest: &str) -> (Memory, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (open(dir.path(), digest), dir)
}

fn open(dir: &Path, digest: &str) -> Memory {
    Memory::open(&settings(dir), dir)
        .unwrap()
        .with_embedder(EmbedderSource::Given(Words::new(digest)))
        .with_clock(|| 1_000)
}

fn memory() -> (Memory, tempfile::TempDir) {
    memory_with("sha256:words")
}

fn add(memory: &Memory, text: &str) -> Learned {
    memory.add(text, Scope::Global, Author::User, Provenance::default()).unwrap()
}

fn texts(items: &[Item]) -> Vec<&str> {
    items.iter().map(|i| i.text.as_str()).collect()
}

#[test]
fn a_text_that_fits_is_kept_whole() {
    let text = "three short words";
    assert_eq!(cut_at(&Words::pieces(text), 12), None);
    assert_eq!(fitted(text, text, &Words::pieces(text), 12), Fitted { text: text.into(), truncated: None });
}

#[test]
fn a_long_text_is_cut_where_the_window_ends_and_says_so() {
    let text = "one two three four five six seven eight nine ten eleven twelve  \n";
    let fit = fitted(text, text, &Words::pieces(text), 12);
    assert_eq!(fit.text, "one two three four five six seven eight nine ten");
    let truncation = fit.truncated.unwrap();
    assert_eq!(truncation, Truncation { window_tokens: 12, kept_chars: 48, original_chars: 65 });
    assert_eq!(
        truncation.to_string(),
        "the text is longer than the embedder reads (12 tokens): kept its first 48 of 65 characters"
    );
}

#[test]
fn a_cut_never_splits_a_word_into_other_tokens() {
    // "un ##believ ##able": the window ends inside the word, so the whole word goes.
    let piece = |start, continues_word| Piece { start, special: false, continues_word };
    let special = |start| Piece { start, special: true, continues_word: false };
    let pieces = [special(0), piece(0, false), piece(3, false), piece(5, true), piece(11, true), special(15)];
    assert_eq!(cut_at(&pieces, 5), Some(3), "cut before `un…`, not inside it");
    // A single word longer than the window is cut inside rather than dropped.
    let word = [special(0), piece(0, false), piece(2, true), piece(4, true), piece(6, true), special(8)];
    assert_eq!(cut_at(&word, 4), Some(4));
}

#[test]
fn a_cut_lands_on_a_character_boundary_and_counts_characters() {
    let text = "ééé ààà";
    // A start offset inside `à` (byte 8 of 13) is moved back to the boundary.
    let pieces = [
        Piece { start: 0, special: true, continues_word: false },
        Piece { start: 0, special: false, continues_word: false },
        Piece { start: 8, special: false, continues_word: false },
    ];
    let fit = fitted(text, text, &pieces, 2);
    assert_eq!(fit.text, "ééé");
    assert_eq!(fit.truncated.map(|t| (t.kept_chars, t.original_chars)), Some((3, 7)));
    assert_eq!(fit::prefix("aé", 2), "a");
}

#[test]
fn a_text_longer_than_the_scan_limit_is_cut_there_even_when_its_tokens_fit() {
    let text = "word ".repeat(3);
    let scanned = &text[..9];
    let fit = fitted(&text, scanned, &Words::pieces(scanned), 100);
    assert_eq!(fit.text, "word word");
    assert!(fit.truncated.is_some());
}

#[test]
fn import_lines_are_checked_with_reasons() {
    let record = parse_line(r#"{"text": "Run the tests first."}"#).unwrap();
    assert_eq!(
        record,
        Record {
            id: None,
            kind: ItemKind::Lesson,
            author: Author::User,
            scope: Scope::Global,
            provenance: Provenance::default(),
            text: "Run the tests first.".into(),
            data: serde_json::Value::Null,
            created_ms: None,
            last_used_ms: None,
            uses: 0,
            successes: 0,
            embedder: None,
        }
    );
    let scoped = parse_line(r#"{"text": "x", "scope": {"expert": "coder"}, "kind": "episode"}"#).unwrap();
    assert_eq!((scoped.scope, scoped.kind), (Scope::Expert("coder".into()), ItemKind::Episode));

    let error = |line: &str| parse_line(line).unwrap_err();
    assert_eq!(
        error(r#"{"txt": "x"}"#),
        "unknown field `txt`, expected one of `id`, `kind`, `author`, `scope`, `provenance`, `text`, `data`, \
         `created_ms`, `last_used_ms`, `uses`, `successes`, `embedder` (column 6)"
    );
    assert_eq!(error(r#"{"kind": "lesson"}"#), "missing field `text` (column 18)");
    assert_eq!(error(r#"{"text": "x", "kind": "fact"}"#).split(',').next(), Some("unknown variant `fact`"));
    assert_eq!(error("not json"), "expected ident (column 2)");
    assert_eq!(error(r#"{"text": "  "}"#), "its `text` is empty: write what should be remembered");
    assert_eq!(
        error(r#"{"text": "x", "created_ms": 1, "uses": 1, "successes": 2}"#),
        "it has 2 successes but only 1 uses: a success is a use by a run that succeeded"
    );
    assert!(error(r#"{"text": "x", "uses": 3}"#).contains("no `created_ms`"));
}

#[test]
fn a_bad_line_names_its_number_and_nothing_is_imported() {
    let (memory, _dir) = memory();
    let input = "{\"text\": \"first\"}\n\n{\"text\": \"\"}\n";
    let error = memory.import(input.as_bytes(), "lessons.jsonl").unwrap_err();
    assert!(error.is_usage());
    assert_eq!(
        error.to_string(),
        "lessons.jsonl line 3: its `text` is empty: write what should be remembered. Nothing was imported: fix or \
         remove the line and import again"
    );
    assert_eq!(memory.list(&Filter::default(), 10).unwrap(), vec![]);
}

#[test]
fn add_trims_refuses_empty_text_and_merges_near_duplicates() {
    let (memory, _dir) = memory();
    let error = memory.add(" \n ", Scope::Global, Author::User, Provenance::default()).unwrap_err();
    assert!(matches!(error, ServiceError::Store(MemoryError::EmptyText)) && error.is_usage(), "{error}");

    let first = add(&memory, "  Run cargo test before committing. ");
    let Remembered::Added(item) = &first.remembered else { panic!("{first:?}") };
    assert_eq!(
        (item.text.as_str(), item.created_ms, item.embedder.as_str()),
        ("Run cargo test before committing.", 1_000, "sha256:words")
    );
    let again = add(&memory, "run cargo test before committing");
    assert!(matches!(again.remembered, Remembered::Merged { ref item, .. } if item.id == first.remembered.item().id));
    // Another scope is another memory.
    let coder = memory
        .add("Run cargo test before committing.", Scope::Expert("coder".into()), Author::User, Provenance::default())
        .unwrap();
    assert!(matches!(coder.remembered, Remembered::Added(_)));
    assert_eq!(memory.list(&Filter::default(), 10).unwrap().len(), 2);
}

#[test]
fn add_says_when_a_text_was_cut() {
    let (memory, _dir) = memory();
    let long: Vec<String> = (1..=30).map(|i| format!("w{i}")).collect();
    let learned = add(&memory, &long.join(" "));
    assert_eq!(learned.remembered.item().text, long[..10].join(" "));
    assert_eq!(learned.truncated.map(|t| t.kept_chars), Some(long[..10].join(" ").len()));
}

#[test]
fn search_ranks_the_related_item_first_and_respects_the_floor() {
    let (memory, _dir) = memory();
    add(&memory, "Run cargo test before committing");
    add(&memory, "Prefer short answers in the summary");
    add(&memory, "The database lives in the data folder");
    let hits = memory.search("before committing run the tests", 3, Filter::default()).unwrap();
    assert_eq!(hits[0].item.text, "Run cargo test before committing");
    assert!(hits.iter().all(|h| h.score >= 0.1));
    assert!(matches!(memory.search("  ", 3, Filter::default()), Err(ServiceError::EmptyQuery)));
    let coder_only = Filter { scope: ScopeFilter::Expert("coder".into()), ..Filter::default() };
    assert_eq!(memory.search("cargo test", 3, coder_only).unwrap(), vec![]);
    // "cargo test" scores about 0.6 against the first lesson: under a floor of 0.9, nothing.
    let strict = memory.with_min_score(0.9);
    assert_eq!(strict.search("cargo test", 3, Filter::default()).unwrap(), vec![]);
}

#[test]
fn near_ties_in_recall_go_to_the_lesson_that_fared_better() {
    let (memory, _dir) = memory();
    // Both share two of their three words with the query: the same similarity.
    let failing = add(&memory, "commit tests red").remembered.item().id;
    let helping = add(&memory, "commit tests blue").remembered.item().id;
    let recall = |k| memory.recall_above("commit tests", k, Filter::default(), 0.1).unwrap();
    let first = |k| recall(k)[0].item.id;
    assert_eq!(first(1), failing, "unused and equal: the older id");
    memory.store().record_use(&[failing], false, 2_000).unwrap();
    memory.store().record_use(&[helping], true, 2_000).unwrap();
    assert_eq!(first(1), helping, "k = 1 still sees the tie below it");
    // A lesson that matches the query exactly wins, however badly it fared.
    let exact = add(&memory, "commit tests").remembered.item().id;
    memory.store().record_use(&[exact], false, 3_000).unwrap();
    let hits = recall(3);
    assert_eq!(hits.iter().map(|h| h.item.id).collect::<Vec<_>>(), vec![exact, helping, failing]);
    // A person's search shows the hits by similarity alone, beside their scores.
    let searched = memory.search("commit tests", 3, Filter::default()).unwrap();
    assert_eq!(searched.iter().map(|h| h.item.id).collect::<Vec<_>>(), vec![exact, failing, helping]);
}

#[test]
fn edit_embeds_the_new_text_and_forget_deletes() {
    let (memory, _dir) = memory();
    let id = add(&memory, "Use tabs for indentation").remembered.item().id;
    let edited = memory.edit(id, "Use four spaces for indentation, never tabs").unwrap();
    assert_eq!((edited.item.id, edited.item.text.as_str()), (id, "Use four spaces for indentation, never tabs"));
    let hits = memory.search("four spaces", 1, Filter::default()).unwrap();
    assert_eq!(hits[0].item.id, id);
    assert!(hits[0].score > 0.3, "the vector is the new text's: {}", hits[0].score);

    assert!(matches!(memory.edit(99, "x"), Err(ServiceError::NotFound(99))));
    assert!(matches!(memory.edit(id, ""), Err(ServiceError::Store(MemoryError::EmptyText))));
    let forgotten = memory.forget(id).unwrap();
    assert_eq!(forgotten.text, "Use four spaces for indentation, never tabs");
    assert_eq!(memory.search("four spaces", 1, Filter::default()).unwrap(), vec![]);
    assert!(matches!(memory.get(id), Err(ServiceError::NotFound(_))));
    let again = memory.forget(id).unwrap_err();
    assert!(again.is_usage());
    assert_eq!(again.to_string(), format!("no memory item #{id}: `troupe memory list` shows the ids"));
}

#[test]
fn export_and_import_round_trip_everything_but_the_ids_and_vectors() {
    let (source, _a) = memory();
    let lesson = add(&source, "Run cargo test before committing").remembered.item().id;
    let episode = NewItem {
        kind: ItemKind::Episode,
        author: Author::Reflection,
        scope: Scope::Expert("coder".into()),
        provenance: Provenance { run_id: Some("run-7".into()), seq: Some(42), expert: Some("coder".into()) },
        text: "Fix the failing build".into(),
        data: serde_json::json!({"outcome": "passed"}),
        created_ms: 500,
        embedding: Words::new("x").embed(&["Fix the failing build"]).unwrap().remove(0),
        embedder: "sha256:words".into(),
    };
    let episode = source.store().add(episode.clone()).unwrap().id;
    // The same task run again: same text, another time, another memory.
    let mut second = source.get(episode).unwrap();
    second.created_ms = 600;
    let second = source
        .store()
        .add(NewItem {
            kind: second.kind,
            author: second.author,
            scope: second.scope,
            provenance: second.provenance,
            text: second.text,
            data: second.data,
            created_ms: 600,
            embedding: second.embedding,
            embedder: second.embedder,
        })
        .unwrap()
        .id;
    source.store().record_use(&[lesson, episode], true, 2_000).unwrap();
    source.store().record_use(&[lesson], false, 3_000).unwrap();
    source.store().merge(second, &NewItem { created_ms: 2_500, ..source_new(&source, second) }).unwrap();

    let mut exported = Vec::new();
    assert_eq!(source.export(&mut exported).unwrap(), 3);
    let text = String::from_utf8(exported.clone()).unwrap();
    let first_line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        first_line,
        serde_json::json!({
            "id": lesson, "kind": "lesson", "author": "user", "scope": "global",
            "provenance": {"run_id": null, "seq": null, "expert": null},
            "text": "Run cargo test before committing", "data": null, "created_ms": 1000,
            "last_used_ms": 3000, "uses": 2, "successes": 1, "embedder": "sha256:words"
        })
    );

    let (target, _b) = memory();
    add(&target, "Something already here");
    let imported = target.import(exported.as_slice(), "memory.jsonl").unwrap();
    assert_eq!(imported, Imported { added: 3, merged: 0, present: 0, truncated: 0 });
    let strip = |mut item: Item| {
        item.id = 0;
        item
    };
    let mut before: Vec<Item> = source.list(&Filter::default(), 10).unwrap().into_iter().map(strip).collect();
    let mut after: Vec<Item> = target.list(&Filter::default(), 10).unwrap().into_iter().map(strip).collect();
    after.retain(|i| i.text != "Something already here");
    before.sort_by_key(|i| i.created_ms);
    after.sort_by_key(|i| i.created_ms);
    assert_eq!(after, before);

    // A second import of the same file changes nothing.
    let again = target.import(exported.as_slice(), "memory.jsonl").unwrap();
    assert_eq!(again, Imported { added: 0, merged: 0, present: 3, truncated: 0 });
    assert_eq!(target.list(&Filter::default(), 10).unwrap().len(), 4);
}

fn source_new(memory: &Memory, id: ItemId) -> NewItem {
    let item = memory.get(id).unwrap();
    NewItem {
        kind: item.kind,
        author: item.author,
        scope: item.scope,
        provenance: item.provenance,
        text: item.text,
        data: item.data,
        created_ms: item.created_ms,
        embedding: item.embedding,
        embedder: item.embedder,
    }
}

#[test]
fn lines_written_by_hand_merge_like_add_and_are_not_added_twice() {
    let (memory, _dir) = memory();
    let existing = add(&memory, "Run cargo test before committing").remembered.item().id;
    let input = "{\"text\": \"Run cargo test before committing\"}\n\
                 {\"text\": \"run cargo TEST before committing!\"}\n\
                 {\"text\": \"Keep answers short\", \"scope\": {\"expert\": \"writer\"}}\n\
                 {\"text\": \"Keep answers short\", \"scope\": {\"expert\": \"writer\"}}\n";
    let imported = memory.import(input.as_bytes(), "hand.jsonl").unwrap();
    assert_eq!(imported, Imported { added: 1, merged: 1, present: 2, truncated: 0 });
    let items = memory.list(&Filter::default(), 10).unwrap();
    assert_eq!(texts(&items), vec!["Keep answers short", "run cargo TEST before committing!"]);
    assert_eq!(items[1].id, existing, "merged into the older item, which took the longer text");
    assert_eq!(items[0].created_ms, 1_000, "stamped with the time of the import");
}

#[test]
fn truncated_import_lines_are_reported_and_count_as_present_next_time() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (memory, _dir) = memory();
    let sink = lines.clone();
    let memory = memory.with_status(move |line| sink.lock().unwrap().push(line.to_string()));
    let long: Vec<String> = (1..=20).map(|i| format!("w{i}")).collect();
    let line = format!("{{\"text\": \"{}\", \"created_ms\": 5}}\n", long.join(" "));
    let first = memory.import(line.as_bytes(), "long.jsonl").unwrap();
    assert_eq!(first, Imported { added: 1, merged: 0, present: 0, truncated: 1 });
    assert_eq!(
        lines.lock().unwrap().clone(),
        vec![
            "long.jsonl line 1: the text is longer than the embedder reads (12 tokens): kept its first 30 of 70 characters"
        ]
    );
    let second = memory.import(line.as_bytes(), "long.jsonl").unwrap();
    assert_eq!(second.present, 1);
    assert_eq!(memory.list(&Filter::default(), 10).unwrap().len(), 1);
}

#[test]
fn items_of_another_embedder_are_reembedded_before_a_search() {
    let dir = tempfile::tempdir().unwrap();
    let old = open(dir.path(), "sha256:old");
    add(&old, "Run cargo test before committing");
    add(&old, "Prefer short answers");
    drop(old);

    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let new =
        open(dir.path(), "sha256:new-model-digest").with_status(move |l| sink.lock().unwrap().push(l.to_string()));
    // Listing needs no embedder and changes nothing.
    assert!(new.list(&Filter::default(), 10).unwrap().iter().all(|i| i.embedder == "sha256:old"));
    assert_eq!(lines.lock().unwrap().len(), 0);
    let hits = new.search("cargo test", 1, Filter::default()).unwrap();
    assert_eq!(hits[0].item.text, "Run cargo test before committing");
    assert_eq!(
        lines.lock().unwrap().clone(),
        vec![
            "re-embedding memory items made by another embedder (sha256:old → sha256:new-model-di…)…",
            "re-embedded 2 memory items"
        ]
    );
    assert!(new.list(&Filter::default(), 10).unwrap().iter().all(|i| i.embedder == "sha256:new-model-digest"));
    assert_eq!(new.reembed().unwrap(), 0);
}

#[test]
fn listing_showing_forgetting_and_exporting_need_no_embedder() {
    let dir = tempfile::tempdir().unwrap();
    let id = add(&open(dir.path(), "sha256:words"), "Something to keep").remembered.item().id;
    let missing = EmbedderFiles::in_dir(dir.path().join("no-model")).unwrap();
    let memory = Memory::open(&settings(dir.path()), dir.path()).unwrap().with_embedder(EmbedderSource::Files(missing));
    assert_eq!(texts(&memory.list(&Filter::default(), 10).unwrap()), vec!["Something to keep"]);
    assert_eq!(memory.get(id).unwrap().text, "Something to keep");
    let mut out = Vec::new();
    assert_eq!(memory.export(&mut out).unwrap(), 1);
    let error = memory.search("keep", 3, Filter::default()).unwrap_err();
    assert!(!error.is_usage());
    assert!(error.to_string().contains("no-model/config.json"), "{error}");
    memory.forget(id).unwrap();
}

#[test]
fn a_postgres_backend_without_its_url_variable_says_which_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let settings = MemorySettings {
        backend: MemoryBackend::Postgres { url_env: "TROUPE_MEMORY_URL".into() },
        ..MemorySettings::in_folder(dir.path())
    };
    let error = Memory::open_with_env(&settings, dir.path(), &|_| None).unwrap_err().to_string();
    assert!(error.contains("the environment variable TROUPE_MEMORY_URL, which is not set"), "{error}");
}

#[test]
fn a_damaged_store_is_named_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = crate::memory::sqlite::default_path(dir.path());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let error = Memory::open(&settings(dir.path()), dir.path()).unwrap_err();
    assert!(!error.is_usage());
    assert!(error.to_string().contains(&path.display().to_string()), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn lists_are_aligned_one_line_per_item() {
    let item = |id, scope: Scope, author, text: &str| Item {
        id,
        kind: ItemKind::Lesson,
        author,
        scope,
        provenance: Provenance::default(),
        text: text.into(),
        data: serde_json::Value::Null,
        created_ms: 0,
        last_used_ms: None,
        uses: 0,
        successes: 0,
        embedding: vec![],
        embedder: String::new(),
    };
    let a = item(12, Scope::Global, Author::User, "Run the tests\nfirst.");
    let b = item(3, Scope::Expert("coder".into()), Author::Reflection, &"long ".repeat(40));
    assert_eq!(
        render::table(&[(&a, Some(0.834)), (&b, Some(0.4))]),
        format!(
            "#12  lesson  global  user        0.83  Run the tests first.\n\
             #3   lesson  coder   reflection  0.40  {}…\n",
            &"long ".repeat(20)[..99]
        )
    );
    assert_eq!(render::table(&[(&a, None)]), "#12  lesson  global  user  Run the tests first.\n");
    assert_eq!(render::one_line("a  b\n\tc", 10), "a b c");
    assert_eq!(render::one_line("abcdef", 4), "abc…");
    assert_eq!(render::time(1_700_000_000_000), "2023-11-14T22:13:20Z");
    let details = render::details(&a);
    assert!(
        details.starts_with("#12  lesson  global  user\ncreated    1970-01-01T00:00:00Z\nlast used  never\n"),
        "{details}"
    );
    assert!(details.ends_with("\nRun the tests\nfirst.\n"), "{details}");
}

#[test]
fn a_memory_can_be_shared_between_threads() {
    // The runtime recalls on blocking threads: the service must be shareable as it is.
    fn shareable<T: Send + Sync>() {}
    shareable::<Memory>();
}
