//! What a run asks of long-term memory, seen from the runtime: the lessons for an agent about to
//! start on a task. The memory itself (embedder, store) lives in `crate::memory`; the runtime
//! knows only this trait, so it stays free of SQLite and of the model files.
//!
//! Invariant: recalling is advice, never a failure of the run: an error is an event the
//! transcript shows, and the agent starts without lessons.

pub use crate::protocol::RecalledLesson as Recalled;

/// Long-term memory as the runtime uses it. Implementations block (embedding, a file): the
/// driver calls them on a blocking thread.
pub trait RunMemory: Send + Sync {
    /// The lessons `expert` should read before working on `task`, best first, within `limits`
    /// (the expert's own, where its file sets them, over the workbench's).
    fn recall(&self, expert: &str, task: &str, limits: RecallLimits) -> Result<Vec<Recalled>, String>;

    /// The `recall` tool: up to `k` lessons `expert` may see, most similar to `query` first.
    fn search(&self, expert: &str, query: &str, k: usize) -> Result<Vec<Recalled>, String>;

    /// The `remember` tool: keeps `text` as a lesson by `expert` (visible to every expert, or
    /// with `expert_scope` to experts of that name only). Returns the kept item's id and whether
    /// it merged into an existing lesson. An error says why nothing was kept (a frozen memory).
    fn remember(&self, expert: &str, text: &str, expert_scope: bool, provenance: Provenance) -> Result<Kept, String>;
}

/// An expert's own recall settings (`recall_k`, `recall_min_score` in its file); `None` keeps
/// the workbench's `[memory]` value.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecallLimits {
    pub k: Option<usize>,
    pub min_score: Option<f32>,
}

/// Where a lesson written during a run came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Provenance {
    pub run_id: String,
    /// The `seq` of the tool call's event.
    pub seq: Option<u64>,
}

/// What `remember` did.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    pub id: i64,
    /// It merged into an existing, near-identical lesson.
    pub merged: bool,
    /// The text was cut to what the embedder reads.
    pub truncated: bool,
}

/// The marked block appended to an agent's system prompt, so that a person reading the
/// transcript (and the model) can tell recalled lessons from the expert's own prompt.
pub fn memory_block(lessons: &[Recalled]) -> String {
    let mut block = String::from("\n\n[troupe memory] Lessons from earlier runs, most relevant first:\n");
    for lesson in lessons {
        let text: String = lesson.text.split_whitespace().collect::<Vec<_>>().join(" ");
        block.push_str(&format!("- {text} (#{})\n", lesson.id));
    }
    block.push_str("[end of memory]");
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_marked_and_keeps_each_lesson_on_one_line() {
        let lessons = [
            Recalled { id: 3, score: 0.8, text: "Quote the solver's answer\nword for word.".into() },
            Recalled { id: 9, score: 0.5, text: "Check units.".into() },
        ];
        assert_eq!(
            memory_block(&lessons),
            "\n\n[troupe memory] Lessons from earlier runs, most relevant first:\n- Quote the solver's answer word for word. (#3)\n- Check units. (#9)\n[end of memory]"
        );
    }
}
