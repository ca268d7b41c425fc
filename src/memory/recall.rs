//! The memory as a run uses it: [`RunMemory`] over the [`Memory`] service. Lessons visible to
//! an expert (global ones and its own) are recalled for each agent's task, by similarity with
//! near-ties going to the lesson that fared better, then the more recent
//! (`Memory::recall_above`); `remember` keeps a lesson with the run and the expert as its
//! provenance; a frozen memory recalls but never writes.
//!
//! Invariant: an empty store never loads the embedder, so runs on a workbench that has learned
//! nothing yet pay nothing for memory.

use std::sync::Arc;

use super::service::Memory;
use super::store::{Author, Filter, ItemKind, Provenance, Remembered, Scope, ScopeFilter};
use crate::config::MemoryMode;
use crate::runtime::memory::{Kept, Provenance as RunProvenance, RecallLimits, Recalled, RunMemory};

/// A run's view of the workbench's memory.
pub struct RunRecall {
    memory: Arc<Memory>,
    mode: MemoryMode,
    k: usize,
}

impl RunRecall {
    /// `mode` must not be [`MemoryMode::Off`]: a run with memory off has no `RunMemory`.
    pub fn new(memory: Arc<Memory>, mode: MemoryMode) -> RunRecall {
        let k = memory.default_k();
        RunRecall { memory, mode, k }
    }

    pub fn memory(&self) -> &Arc<Memory> {
        &self.memory
    }

    pub fn mode(&self) -> MemoryMode {
        self.mode
    }

    fn lessons_for(expert: &str) -> Filter {
        Filter { kind: Some(ItemKind::Lesson), author: None, scope: ScopeFilter::VisibleTo(expert.to_owned()) }
    }

    fn hits(&self, expert: &str, query: &str, k: usize, min_score: Option<f32>) -> Result<Vec<Recalled>, String> {
        let filter = Self::lessons_for(expert);
        // No lesson to find: answer without loading the embedder.
        if k == 0 || self.memory.list(&filter, 1).map_err(|e| e.to_string())?.is_empty() {
            return Ok(Vec::new());
        }
        let min_score = min_score.unwrap_or_else(|| self.memory.min_score());
        let hits = self.memory.recall_above(query, k, filter, min_score).map_err(|e| e.to_string())?;
        Ok(hits.into_iter().map(|hit| Recalled { id: hit.item.id, score: hit.score, text: hit.item.text }).collect())
    }
}

impl RunMemory for RunRecall {
    fn recall(&self, expert: &str, task: &str, limits: RecallLimits) -> Result<Vec<Recalled>, String> {
        self.hits(expert, task, limits.k.unwrap_or(self.k), limits.min_score)
    }

    fn search(&self, expert: &str, query: &str, k: usize) -> Result<Vec<Recalled>, String> {
        self.hits(expert, query, k, None)
    }

    fn remember(
        &self,
        expert: &str,
        text: &str,
        expert_scope: bool,
        provenance: RunProvenance,
    ) -> Result<Kept, String> {
        if self.mode == MemoryMode::Frozen {
            return Err("memory is frozen for this run (--memory frozen): nothing was kept".to_owned());
        }
        let scope = if expert_scope { Scope::Expert(expert.to_owned()) } else { Scope::Global };
        let provenance =
            Provenance { run_id: Some(provenance.run_id), seq: provenance.seq, expert: Some(expert.to_owned()) };
        let learned = self.memory.add(text, scope, Author::Agent, provenance).map_err(|e| e.to_string())?;
        let (id, merged) = match &learned.remembered {
            Remembered::Added(item) => (item.id, false),
            Remembered::Merged { item, .. } => (item.id, true),
        };
        Ok(Kept { id, merged, truncated: learned.truncated.is_some() })
    }
}
