//! The Memory screen through the app: keys and shell reports in, commands and what is shown
//! out, and a lesson's run opened in the Run screen.

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::App;
use crate::memory::service::{Edited, Learned};
use crate::memory::store::{Author, Hit, Item, ItemId, ItemKind, Provenance, Remembered, Scope};
use crate::tui::messages::{Command, Prompt, Screen, ShellReport};
use crate::tui::screens::memory::{LessonEditor, event_uri};

fn key(app: &mut App, code: KeyCode) -> Vec<Command> {
    app.handle_key(KeyEvent::from(code))
}

fn ctrl(app: &mut App, c: char) -> Vec<Command> {
    app.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn said(app: &App) -> (String, bool) {
    app.flash.clone().unwrap_or_default()
}

fn lesson(id: ItemId, text: &str, run: Option<(&str, u64)>) -> Item {
    Item {
        id,
        kind: ItemKind::Lesson,
        author: if run.is_some() { Author::Agent } else { Author::User },
        scope: Scope::Global,
        provenance: Provenance {
            run_id: run.map(|(run, _)| run.to_owned()),
            seq: run.map(|(_, seq)| seq),
            expert: run.map(|_| "researcher".to_owned()),
        },
        text: text.to_owned(),
        data: serde_json::Value::Null,
        created_ms: 1_795_000_000_000 + id * 1000,
        last_used_ms: None,
        uses: 0,
        successes: 0,
        embedding: vec![1.0],
        embedder: "sha256:test".to_owned(),
    }
}

/// The Memory screen open on two lessons: #2 (newest, from a run) and #1 (the user's).
fn memory_app() -> App {
    let mut app = App::new(PathBuf::from("/w"));
    assert_eq!(key(&mut app, KeyCode::Char('5')), vec![Command::MemoryList]);
    assert_eq!(app.screen, Screen::Memory);
    assert!(app.memory.listing);
    let items = vec![lesson(2, "Cite the source of every number.", Some(("run-a", 7))), lesson(1, "Be brief.", None)];
    app.handle_report(ShellReport::MemoryListed(Ok(("/w/.troupe/memory.sqlite".into(), items))));
    app
}

fn hit(item: Item, score: f32) -> Hit {
    Hit { item, score }
}

#[test]
fn search_takes_the_query_then_shows_ranked_hits_and_esc_goes_back() {
    let mut app = memory_app();
    assert!(key(&mut app, KeyCode::Char('/')).is_empty());
    assert!(app.editing(), "keys go to the query");
    // Digits and q are text here, not screens or quitting.
    typed(&mut app, "q5 numbersx");
    key(&mut app, KeyCode::Backspace);
    assert_eq!(app.screen, Screen::Memory);
    assert_eq!(app.memory.search.as_ref().map(|s| s.query.as_str()), Some("q5 numbers"));
    let searched = key(&mut app, KeyCode::Enter);
    assert_eq!(searched, vec![Command::MemorySearch { query: "q5 numbers".into() }]);
    assert!(!app.editing(), "the hits take the list's keys");
    // An answer to another query (given up meanwhile) is ignored.
    app.handle_report(ShellReport::MemorySearched { query: "other".into(), hits: Ok(vec![]) });
    assert!(app.memory.search.as_ref().is_some_and(|s| s.pending));
    let hits = vec![hit(lesson(1, "Be brief.", None), 0.41), hit(lesson(2, "Cite.", Some(("run-a", 7))), 0.83)];
    app.handle_report(ShellReport::MemorySearched { query: "q5 numbers".into(), hits: Ok(hits) });
    assert!(app.memory.shows_hits());
    assert_eq!(app.memory.selected_item().map(|(item, score)| (item.id, score)), Some((1, Some(0.41))));
    key(&mut app, KeyCode::Down);
    assert_eq!(app.memory.selected_item().map(|(item, _)| item.id), Some(2));
    // `/` again edits the same query; Esc leaves the search for the list.
    key(&mut app, KeyCode::Char('/'));
    assert!(app.editing());
    key(&mut app, KeyCode::Esc);
    assert!(app.memory.search.is_none() && !app.editing());
    assert_eq!(app.memory.selected_item().map(|(item, score)| (item.id, score)), Some((2, None)));
    // A failed search is said where the hits would be, and the list is still there after.
    key(&mut app, KeyCode::Char('/'));
    assert!(key(&mut app, KeyCode::Enter).is_empty(), "nothing to look for");
    assert!(said(&app).1);
    typed(&mut app, "x");
    key(&mut app, KeyCode::Enter);
    app.handle_report(ShellReport::MemorySearched { query: "x".into(), hits: Err("the embedder's files".into()) });
    assert_eq!(app.memory.search.as_ref().and_then(|s| s.error.as_deref()), Some("the embedder's files"));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.memory.items.len(), 2);
}

#[test]
fn forgetting_asks_first_then_deletes_and_lists_again() {
    let mut app = memory_app();
    assert!(key(&mut app, KeyCode::Char('d')).is_empty(), "nothing is deleted before the answer");
    assert_eq!(app.prompt, Some(Prompt::ForgetLesson { id: 2 }));
    assert!(key(&mut app, KeyCode::Char('n')).is_empty());
    assert_eq!(app.prompt, None);
    key(&mut app, KeyCode::Char('d'));
    assert_eq!(key(&mut app, KeyCode::Char('y')), vec![Command::MemoryForget { id: 2 }]);
    let failed = app.handle_report(ShellReport::MemoryForgotten { id: 2, forgotten: Err("busy".into()) });
    assert!(failed.is_empty());
    assert_eq!(said(&app), ("lesson #2 not forgotten: busy".to_owned(), true));
    assert_eq!(app.memory.items.len(), 2, "still there");
    let item = app.memory.items[0].clone();
    let after = app.handle_report(ShellReport::MemoryForgotten { id: 2, forgotten: Ok(item) });
    assert_eq!(after, vec![Command::MemoryList]);
    assert_eq!(app.memory.items.iter().map(|i| i.id).collect::<Vec<_>>(), vec![1]);
    assert!(said(&app).0.starts_with("forgot lesson #2"));
}

#[test]
fn a_failed_save_keeps_the_text_and_says_why() {
    let mut app = memory_app();
    key(&mut app, KeyCode::Char('e'));
    assert!(app.editing());
    typed(&mut app, " Always.");
    let save = ctrl(&mut app, 's');
    let text = "Cite the source of every number. Always.".to_owned();
    assert_eq!(save, vec![Command::MemoryEdit { id: 2, text: text.clone() }]);
    // While saving, keys wait (the text sent is the text kept).
    typed(&mut app, "zz");
    assert_eq!(app.memory.editor.as_ref().map(LessonEditor::text), Some(text.clone()));
    let failed = app.handle_report(ShellReport::MemoryEdited { id: 2, edited: Err("the embedder's files".into()) });
    assert!(failed.is_empty());
    let editor = app.memory.editor.as_ref().expect("the editor stays open");
    assert_eq!(editor.text(), text);
    assert_eq!(editor.error.as_deref(), Some("the embedder's files"));
    assert!(!editor.saving);
    assert!(said(&app).1 && said(&app).0.contains("your text is still here"), "{:?}", app.flash);
    // Quitting now asks about it.
    assert!(key(&mut app, KeyCode::Esc).is_empty());
    assert_eq!(app.prompt, Some(Prompt::DiscardLesson { what: "lesson #2".into() }));
    key(&mut app, KeyCode::Char('n'));
    assert!(app.memory.editor.is_some(), "n keeps editing");
    assert!(ctrl(&mut app, 'c').is_empty());
    assert!(matches!(&app.prompt, Some(Prompt::QuitUnsaved { files }) if files == &["lesson #2"]));
    key(&mut app, KeyCode::Char('n'));
    // Saved: the editor closes and the list is read again.
    ctrl(&mut app, 's');
    let mut item = app.memory.items[0].clone();
    item.text = text;
    let edited = Edited { item, truncated: None };
    let after = app.handle_report(ShellReport::MemoryEdited { id: 2, edited: Ok(edited) });
    assert_eq!(after, vec![Command::MemoryList]);
    assert!(app.memory.editor.is_none() && !app.editing());
    assert_eq!(said(&app), ("saved lesson #2 and embedded it again".to_owned(), false));
}

#[test]
fn an_added_lesson_is_selected_once_listed_and_esc_without_changes_just_closes() {
    let mut app = memory_app();
    key(&mut app, KeyCode::Char('e'));
    assert!(key(&mut app, KeyCode::Esc).is_empty());
    assert!(app.memory.editor.is_none() && app.prompt.is_none(), "nothing changed, nothing asked");
    key(&mut app, KeyCode::Char('a'));
    typed(&mut app, "Check the units.");
    assert_eq!(ctrl(&mut app, 's'), vec![Command::MemoryAdd { text: "Check the units.".into() }]);
    let added = lesson(3, "Check the units.", None);
    let learned = Learned { remembered: Remembered::Added(added.clone()), truncated: None };
    assert_eq!(app.handle_report(ShellReport::MemoryAdded(Ok(learned))), vec![Command::MemoryList]);
    assert!(app.memory.editor.is_none());
    let mut items = app.memory.items.clone();
    items.insert(0, added);
    key(&mut app, KeyCode::Down);
    app.handle_report(ShellReport::MemoryListed(Ok(("/w/m".into(), items))));
    assert_eq!(app.memory.selected_item().map(|(item, _)| item.id), Some(3));
    // A release (some terminals send them) types nothing.
    key(&mut app, KeyCode::Char('a'));
    app.handle_key(KeyEvent::new_with_kind(KeyCode::Char('x'), KeyModifiers::NONE, KeyEventKind::Release));
    assert_eq!(app.memory.editor.as_ref().map(LessonEditor::text), Some(String::new()));
}

#[test]
fn enter_opens_the_lessons_run_at_the_task_that_wrote_it_or_says_why_not() {
    let mut app = memory_app();
    assert_eq!(key(&mut app, KeyCode::Enter), vec![Command::OpenMemoryRun { run_id: "run-a".into(), seq: Some(7) }]);
    app.handle_report(ShellReport::MemoryRun {
        run_id: "run-a".into(),
        seq: Some(7),
        opened: Err("run run-a is no longer in /w/findings: its folder was deleted or moved".into()),
    });
    assert_eq!(app.screen, Screen::Memory);
    assert!(said(&app).1 && said(&app).0.contains("no longer"));
    // The user's own lesson has no run.
    key(&mut app, KeyCode::Down);
    assert!(key(&mut app, KeyCode::Enter).is_empty());
    assert!(said(&app).0.contains("written outside a run"), "{:?}", app.flash);

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/fixtures/smoke-events.jsonl");
    let events = crate::findings::read_events(&path).unwrap().0;
    // The event of a task other than the root: its task is selected.
    let (seq, uri) = events
        .iter()
        .filter_map(|e| event_uri(&e.body).map(|uri| (e.seq, uri)))
        .find(|(_, uri)| events.first().and_then(|e| event_uri(&e.body)) != Some(*uri))
        .unwrap();
    let opened = Ok(("/w/findings/run-a".into(), events, None));
    app.handle_report(ShellReport::MemoryRun { run_id: "run-a".into(), seq: Some(seq), opened });
    assert_eq!(app.screen, Screen::Run);
    assert_eq!(app.run.past_run().and_then(|p| p.selected), Some(uri));
    assert_eq!(app.run.past_run().and_then(|p| p.dir.clone()), Some(PathBuf::from("/w/findings/run-a")));
}

#[test]
fn a_store_that_cannot_be_read_is_said_and_reloading_asks_again() {
    let mut app = memory_app();
    app.handle_report(ShellReport::MemoryListed(Err("the memory store x is damaged".into())));
    assert!(app.memory.items.is_empty());
    assert_eq!(app.memory.error.as_deref(), Some("the memory store x is damaged"));
    assert!(app.memory.selected_item().is_none());
    for code in [KeyCode::Char('e'), KeyCode::Char('d'), KeyCode::Enter, KeyCode::Down] {
        assert!(key(&mut app, code).is_empty());
    }
    assert_eq!(key(&mut app, KeyCode::Char('R')), vec![Command::MemoryList]);
    // Other screens still work.
    assert_eq!(key(&mut app, KeyCode::Char('4')), vec![Command::ListFindings]);
}
