//! Tests of `experiment::runner`.

use super::*;
use crate::protocol::{EventBody, TaskId};
use crate::runtime::SystemClock;

/// A workbench whose one experiment's root thinks for ten minutes: it ends only if cancelled.
fn slow_workbench() -> (tempfile::TempDir, Workbench) {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("troupe.toml", "[models.m]\nprovider = \"scripted\"\nscript = \"scripts/s.toml\"\n"),
        ("agents/guide.toml", "model = \"m\"\nsystem_prompt = \"You answer.\"\n"),
        ("scripts/s.toml", "[[conversation]]\n[[conversation.turn]]\ndelay_ms = 600000\ntext = \"Late.\"\n"),
        ("experiments/slow.toml", "root = \"guide\"\ntask = \"Think it over.\"\nmemory = \"off\"\n"),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let workbench = crate::config::load_workbench(dir.path()).workbench.unwrap();
    (dir, workbench)
}

/// A matrix environment of its own for `workbench`, reporting to `updates`.
fn test_env(workbench: &Workbench, updates: mpsc::UnboundedSender<MatrixUpdate>) -> MatrixEnv {
    MatrixEnv {
        pool: EnginePool::default(),
        clock: Arc::new(SystemClock),
        updates,
        cancel: CancellationToken::new(),
        mcp: McpPool::new(&workbench.settings.mcp_servers),
    }
}

/// Runs the slow experiment as a live view would, sending `op` once the root exists.
async fn steer(op: impl Fn(TaskId) -> Op) -> (tempfile::TempDir, MatrixOutcome) {
    let (dir, workbench) = slow_workbench();
    let spec = workbench.experiment("slow").unwrap().clone();
    let (updates, mut heard) = mpsc::unbounded_channel();
    let env = test_env(&workbench, updates);
    let (ops, receiver) = mpsc::unbounded_channel();
    let options = MatrixOptions { forward_events: true, ..MatrixOptions::default() };
    let run = run_single_spec(&workbench, spec, options, env, receiver);
    let view = async {
        while let Some(update) = heard.recv().await {
            if let MatrixUpdate::Event { event, .. } = update
                && let EventBody::TaskCreated { uri, parent: None, .. } = event.body
            {
                ops.send(op(uri)).unwrap();
            }
        }
    };
    let (outcome, ()) = tokio::join!(run, view);
    (dir, outcome.unwrap())
}

#[tokio::test]
async fn a_live_view_cancels_a_task_of_a_single_run_which_is_then_recorded() {
    let (_dir, outcome) = steer(|root| Op::CancelTask { uri: root }).await;
    assert!(!outcome.cancelled);
    let statuses: Vec<&str> = outcome.records.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["cancelled"], "the run ended (its root cancelled) and was recorded");
    assert!(outcome.dir.join(store::TRIALS_FILE).is_file());
}

#[tokio::test]
async fn a_live_view_cancelling_the_whole_run_leaves_no_record_as_ctrl_c_does() {
    let (_dir, outcome) = steer(|_| Op::CancelRun).await;
    assert!(outcome.cancelled);
    assert!(outcome.records.is_empty());
    assert!(!outcome.dir.join(store::TRIALS_FILE).exists());
}

#[tokio::test]
async fn a_trial_run_again_hands_out_the_same_uris_and_another_repetition_others() {
    let (_dir, workbench) = slow_workbench();
    let mut spec = workbench.experiment("slow").unwrap().clone();
    spec.repetitions = 2;
    spec.root = "quick".to_owned();
    let mut workbench = workbench.clone();
    let mut quick = workbench.agents["guide"].clone();
    quick.name = "quick".to_owned();
    quick.model = "q".to_owned();
    workbench.agents.insert("quick".to_owned(), quick);
    let mut alias = workbench.settings.models["m"].clone();
    let script = workbench.root.join("scripts/q.toml");
    std::fs::write(&script, "[[conversation]]\nrepeat = true\n[[conversation.turn]]\ntext = \"Done.\"\n").unwrap();
    alias.script = Some(script);
    workbench.settings.models.insert("q".to_owned(), alias);
    let mut roots = Vec::new();
    for _ in 0..2 {
        let (updates, _heard) = mpsc::unbounded_channel();
        let outcome =
            run_matrix_spec(&workbench, spec.clone(), MatrixOptions::default(), test_env(&workbench, updates))
                .await
                .unwrap();
        let uris: Vec<String> = outcome
            .records
            .iter()
            .map(|record| {
                let (events, _) =
                    findings::read_events(&outcome.dir.join(&record.folder).join("events.jsonl")).unwrap();
                events
                    .iter()
                    .find_map(|e| match &e.body {
                        crate::protocol::EventBody::TaskCreated { uri, parent: None, .. } => Some(uri.to_string()),
                        _ => None,
                    })
                    .unwrap()
            })
            .collect();
        roots.push(uris);
    }
    assert_eq!(roots[0], roots[1], "the same trials, the same URIs");
    assert_ne!(roots[0][0], roots[0][1], "each repetition has its own");
}

#[tokio::test]
async fn a_matrix_is_refused_as_a_single_run() {
    let (_dir, workbench) = slow_workbench();
    let mut spec = workbench.experiment("slow").unwrap().clone();
    spec.repetitions = 2;
    let (updates, _heard) = mpsc::unbounded_channel();
    let env = test_env(&workbench, updates);
    let (_ops, receiver) = mpsc::unbounded_channel();
    let refused = run_single_spec(&workbench, spec, MatrixOptions::default(), env, receiver).await;
    assert!(matches!(refused, Err(MatrixError::Refused(_))), "{refused:?}");
}
