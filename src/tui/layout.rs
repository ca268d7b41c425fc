//! Where things go on the screen, as a pure function of its size: the one source both the
//! drawing and the mouse handling read, so a click lands on what was drawn there.

use ratatui::layout::{Constraint, Direction, Layout, Rect};

use super::messages::Screen;

/// The regions of a screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Areas {
    /// The tabs line.
    pub tabs: Rect,
    /// The run header (Run) or a title line.
    pub header: Rect,
    /// A matrix's comparison across the top of the body (Run, for a matrix); empty otherwise.
    pub panel: Rect,
    /// The tree (Run) or the list of files, experiments, runs.
    pub list: Rect,
    /// The transcript (Run), the editor (Agents, Findings' notes) or the details.
    pub detail: Rect,
    /// Diagnostics under the editor (Agents), or a lesson's fields under its text (Memory).
    pub footer_panel: Rect,
    /// A message (what just happened, or went wrong), above the hints; empty when none.
    pub message: Rect,
    /// Key hints, always shown.
    pub hints: Rect,
}

/// The regions of `screen` at `size`; `message` gives a line to a message.
pub fn areas(size: Rect, screen: Screen, message: bool) -> Areas {
    areas_with_panel(size, screen, message, 0)
}

/// [`areas`], with `panel` rows across the top of the Run screen's body for a matrix's
/// comparison (the tree and transcript get what is left, at least three rows).
pub fn areas_with_panel(size: Rect, screen: Screen, message: bool, panel: u16) -> Areas {
    let [tabs, header, body, message, hints] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(u16::from(message)),
            Constraint::Length(1),
        ])
        .areas(size);
    let (panel, body) = if screen == Screen::Run && panel > 0 {
        let [panel, rest] = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Length(panel.min(body.height.saturating_sub(3))), Constraint::Min(3)])
            .areas(body);
        (panel, rest)
    } else {
        (Rect::new(body.x, body.y, body.width, 0), body)
    };
    let wide = size.width >= 120;
    let (list_share, panel_height) = match screen {
        Screen::Run => (if wide { 50 } else { 55 }, 0),
        Screen::Agents => (if wide { 22 } else { 28 }, (body.height / 4).clamp(3, 8)),
        Screen::Experiments => (if wide { 35 } else { 40 }, 0),
        Screen::Findings => (if wide { 50 } else { 45 }, 0),
        // The lessons on one line each; the detail's fields in the panel under its text.
        Screen::Memory => (if wide { 62 } else { 55 }, (body.height / 2).clamp(4, 12)),
    };
    let [list, right] = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(list_share), Constraint::Min(10)])
        .areas(body);
    let [detail, footer_panel] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(3), Constraint::Length(panel_height)])
        .areas(right);
    Areas { tabs, header, panel, list, detail, footer_panel, message, hints }
}
