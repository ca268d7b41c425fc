//! What every screen's drawing shares: the spinner, a task status's mark, durations, token
//! counts and dollars as the workbench writes them, a list's border, a centred box.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::Span;
use ratatui::widgets::Block;

use crate::protocol::{Millis, TaskStatus, Usage};

pub const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

pub fn status_mark(status: TaskStatus, now: Millis) -> Span<'static> {
    match status {
        TaskStatus::Working => {
            Span::styled(SPINNER[(now / 100 % SPINNER.len() as u64) as usize], Style::new().fg(Color::Cyan))
        }
        TaskStatus::InputRequired => Span::styled("?", Style::new().fg(Color::Yellow)),
        TaskStatus::Completed => Span::styled("✓", Style::new().fg(Color::Green)),
        TaskStatus::Failed => Span::styled("✗", Style::new().fg(Color::Red).bold()),
        TaskStatus::Cancelled => Span::styled("⊘", Style::new().fg(Color::DarkGray)),
    }
}

pub fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    if secs < 60 {
        format!("{}.{}s", secs, (ms % 1000) / 100)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs / 60) % 60)
    }
}

pub fn tokens(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1}M", n as f64 / 1e6)
    } else if n >= 10_000 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

pub fn dollars(cost: f64) -> String {
    if cost < 0.01 { format!("${cost:.4}") } else { format!("${cost:.2}") }
}

pub fn usage_text(usage: &Usage) -> String {
    format!("{} in / {} out", tokens(usage.input_tokens), tokens(usage.output_tokens))
}

pub fn list_block(title: String, focused: bool) -> Block<'static> {
    let block = Block::bordered().title(title);
    if focused { block.border_style(Style::new().fg(Color::Yellow)) } else { block }
}

pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect::new(area.x + (area.width - width) / 2, area.y + (area.height - height) / 2, width, height)
}
