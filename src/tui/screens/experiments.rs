//! The Experiments screen: the workbench's experiments, the problems found reading the
//! workbench, and starting a run.
//!
//! Invariant: pure; a run starts only while none works.

use crossterm::event::{KeyCode, KeyEvent};

use super::Outside;
use crate::tui::messages::{Command, ExperimentItem};

/// The Experiments screen's state.
#[derive(Default)]
pub struct ExperimentsScreen {
    pub items: Vec<ExperimentItem>,
    pub selected: usize,
    /// What is wrong with the workbench's files, as `troupe check` would say.
    pub problems: Vec<String>,
}

impl ExperimentsScreen {
    /// The experiments and problems as the shell read them.
    pub fn set(&mut self, items: Vec<ExperimentItem>, problems: Vec<String>) {
        self.items = items;
        self.selected = self.selected.min(self.items.len().saturating_sub(1));
        self.problems = problems;
    }

    /// The selected experiment's name.
    pub fn selected_name(&self) -> Option<String> {
        self.items.get(self.selected).map(|e| e.name.clone())
    }

    /// Keys on the screen; `running` says a run works already.
    pub fn key(&mut self, key: KeyEvent, running: bool, out: &mut Outside) {
        let count = self.items.len();
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(count.saturating_sub(1));
            }
            KeyCode::Enter | KeyCode::Char('r') => {
                if running {
                    out.say("a run is already working; watch it on the Run screen (1)", true);
                } else if let Some(experiment) = self.items.get(self.selected) {
                    out.send(Command::StartRun { experiment: experiment.name.clone() });
                }
            }
            _ => {}
        }
    }
}
