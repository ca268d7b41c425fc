//! One run as the Run screen shows it, live or replayed: its view model, the selected task, the
//! tree's and the transcript's scroll, the transcript wrapped to the pane, and the following of
//! a run folder another process still writes. Shared by the Run screen and a matrix's trials.
//!
//! Invariant: pure; [`RunPane::prepare`] is the only place its size-dependent state (scroll
//! offsets, wrapped lines) changes, so drawing only reads.

use std::path::PathBuf;

use crate::protocol::{Millis, TaskId, TaskStatus};

use super::transcript::{self, Line};
use super::tree::RunView;

/// A run on the Run screen, live or replayed.
#[derive(Debug, Default)]
pub struct RunPane {
    pub view: RunView,
    pub selected: Option<TaskId>,
    /// The first visible tree row.
    pub tree_top: usize,
    /// Follow the end of the transcript; off once the user scrolls up.
    pub follow: bool,
    /// The first visible transcript line when not following.
    pub transcript_top: usize,
    /// The selected task's finished entries, wrapped to the pane's width by `prepare_frame`.
    pub lines: Vec<Line>,
    lines_key: Option<(TaskId, usize, u16)>,
    /// Its text still streaming, wrapped apart so a delta does not re-wrap the conversation.
    pub streaming_lines: Vec<Line>,
    streaming_key: Option<(TaskId, usize, u16)>,
    pub dir: Option<PathBuf>,
    /// Checks passed and run, once the run is scored.
    pub checks: Option<(usize, usize)>,
    /// A past run another process is still writing (no `run_finished` yet): followed until it
    /// ends.
    pub tail: Option<Tail>,
}

/// Following a run folder's `events.jsonl` as another process appends to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    /// Where the next read starts; 0 until the first read, which skips what was replayed.
    pub offset: u64,
    /// The last event shown: a read from the start skips up to it.
    pub last_seq: Option<u64>,
    /// A read was asked for and has not come back.
    pub asked: bool,
    pub asked_at: Millis,
}

impl RunPane {
    pub(crate) fn new() -> Self {
        RunPane { follow: true, ..RunPane::default() }
    }

    pub(crate) fn select_row(&mut self, row: usize) {
        if let Some(r) = self.view.rows().get(row) {
            self.selected = Some(self.view.nodes()[r.node].uri);
            self.follow = true;
        }
    }

    pub(crate) fn selected_row(&self) -> Option<usize> {
        self.selected.and_then(|uri| self.view.row_of(uri))
    }

    pub(crate) fn move_selection(&mut self, by: isize) {
        let rows = self.view.rows().len();
        if rows == 0 {
            return;
        }
        let at = self.selected_row().unwrap_or(0) as isize;
        self.select_row((at + by).clamp(0, rows as isize - 1) as usize);
    }

    pub(crate) fn jump(&mut self, wanted: impl Fn(TaskStatus) -> bool) -> bool {
        let Some(uri) = self.view.next_with(self.selected, wanted) else { return false };
        self.view.reveal(uri);
        self.view.refresh();
        self.selected = Some(uri);
        self.follow = true;
        true
    }

    /// Transcript lines in all: the finished entries, then the streaming text.
    pub fn line_count(&self) -> usize {
        self.lines.len() + self.streaming_lines.len()
    }

    /// The transcript's lines from `first`, at most `height` of them.
    pub fn visible_lines(&self, first: usize, height: usize) -> impl Iterator<Item = &Line> {
        self.lines.iter().chain(&self.streaming_lines).skip(first).take(height)
    }

    pub(crate) fn scroll_transcript(&mut self, by: isize, height: usize) {
        let max_top = self.line_count().saturating_sub(height);
        let top = if self.follow { max_top } else { self.transcript_top.min(max_top) };
        let next = (top as isize + by).clamp(0, max_top as isize) as usize;
        self.transcript_top = next;
        self.follow = next >= max_top;
    }

    /// The first transcript line shown for a pane `height` lines tall.
    pub fn transcript_first(&self, height: usize) -> usize {
        let max_top = self.line_count().saturating_sub(height);
        if self.follow { max_top } else { self.transcript_top.min(max_top) }
    }

    /// Settles what depends on the frame's size: the tree scrolled to the selection, the
    /// selected task's transcript wrapped to `width` (again only when it or the width changed).
    pub(crate) fn prepare(&mut self, tree_height: usize, width: u16) {
        self.view.refresh();
        if self.selected.is_none() {
            self.selected = self.view.nodes().first().map(|n| n.uri);
        }
        if let Some(row) = self.selected_row() {
            if row < self.tree_top {
                self.tree_top = row;
            } else if tree_height > 0 && row >= self.tree_top + tree_height {
                self.tree_top = row + 1 - tree_height;
            }
        }
        self.tree_top = self.tree_top.min(self.view.rows().len().saturating_sub(tree_height.max(1)));
        let Some(node) = self.selected.and_then(|uri| self.view.node(uri)) else {
            self.lines.clear();
            self.streaming_lines.clear();
            self.lines_key = None;
            self.streaming_key = None;
            return;
        };
        let key = (node.uri, node.entries.len(), width);
        if self.lines_key != Some(key) {
            self.lines = transcript::entry_lines(node, width as usize);
            self.lines_key = Some(key);
        }
        let key = (node.uri, node.streaming.len(), width);
        if self.streaming_key != Some(key) {
            self.streaming_lines = transcript::streaming_lines(node, width as usize);
            self.streaming_key = Some(key);
        }
    }
}
