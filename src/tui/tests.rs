//! Tests of `tui`.

use super::*;
use crate::memory::service::EmbedderSource;
use crate::memory::service::tests::Words;
use crate::memory::store::Item;

#[test]
fn lessons_from_saved_notes_are_kept_once_with_the_run_as_provenance() {
    let root = tempfile::tempdir().unwrap();
    let settings = crate::config::MemorySettings::in_folder(root.path());
    let memory =
        Memory::open(&settings, root.path()).unwrap().with_embedder(EmbedderSource::Given(Words::new("sha256:words")));
    let notes = "# Notes\n\nThe solver was slow.\n\n## Lessons\n- Ask the solver for units every time.\n\
                 - Quote the final number exactly as computed.\n\n## Later\n- not a lesson\n";
    let lessons = findings::notes::lessons_in_notes(notes);
    let run = "20261125-123815-smoke-b3c8";
    let kept = |memory: &Memory| -> Vec<(String, crate::memory::store::Author, Option<String>)> {
        let mut items: Vec<Item> = memory.list(&super::lessons(), 10).unwrap();
        items.sort_by_key(|item| item.id);
        items.into_iter().map(|item| (item.text, item.author, item.provenance.run_id)).collect()
    };

    assert_eq!(keep_notes_lessons(&memory, Some(run), &lessons).unwrap(), (2, 0));
    let expected = vec![
        ("Ask the solver for units every time.".to_owned(), Author::Notes, Some(run.to_owned())),
        ("Quote the final number exactly as computed.".to_owned(), Author::Notes, Some(run.to_owned())),
    ];
    assert_eq!(kept(&memory), expected);

    // Saving the same notes again (another session of the workbench) adds nothing.
    assert_eq!(keep_notes_lessons(&memory, Some(run), &lessons).unwrap(), (0, 2));
    assert_eq!(kept(&memory), expected);
}

#[test]
fn a_lessons_run_is_found_as_a_run_or_a_matrix_trial_and_nothing_outside_findings() {
    let root = tempfile::tempdir().unwrap();
    let findings = root.path().join("findings");
    let run = findings.join("20261125-123815-smoke-b3c8");
    let trial = findings.join("20261125-130000-trio-c0de/trials/inherit--t1--r2");
    for dir in [&run, &trial] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(findings::EVENTS_FILE), "").unwrap();
    }
    assert_eq!(run_folder(&findings, "20261125-123815-smoke-b3c8"), Some(run));
    assert_eq!(run_folder(&findings, "20261125-130000-trio-c0de--inherit--t1--r2"), Some(trial));
    assert_eq!(run_folder(&findings, "20261125-130000-trio-c0de--solo--t1--r1"), None);
    assert_eq!(run_folder(&findings, "gone"), None);
    std::fs::write(root.path().join(findings::EVENTS_FILE), "").unwrap();
    for outside in ["..", ".", "../findings", "/tmp", ""] {
        assert_eq!(run_folder(&findings, outside), None, "{outside}");
    }
}
