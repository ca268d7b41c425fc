//! Memory items for a person to read: one aligned line per item for lists and searches, and
//! every field of one item for `show`.

use std::time::{Duration, UNIX_EPOCH};

use crate::memory::store::{Item, Scope};

/// Characters of an item's text a list line shows; `show` prints it whole.
pub const LINE_TEXT_CHARS: usize = 100;

/// The scope as a list shows it: `global`, or the expert's name.
pub fn scope_name(scope: &Scope) -> &str {
    match scope {
        Scope::Global => "global",
        Scope::Expert(name) => name,
    }
}

/// One line per item: `#12  lesson  global  user  0.83  Run the tests first.`, the columns
/// aligned, the score only when `rows` carry scores (a search), the text on one line and cut at
/// [`LINE_TEXT_CHARS`].
pub fn table(rows: &[(&Item, Option<f32>)]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(item, score)| {
            let mut cells = vec![
                format!("#{}", item.id),
                item.kind.as_str().to_string(),
                scope_name(&item.scope).to_string(),
                item.author.as_str().to_string(),
            ];
            if let Some(score) = score {
                cells.push(format!("{score:.2}"));
            }
            cells
        })
        .collect();
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| cells.iter().filter_map(|row| row.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (row, (item, _)) in cells.iter().zip(rows) {
        for (cell, width) in row.iter().zip(&widths) {
            out.push_str(cell);
            out.push_str(&" ".repeat(width - cell.chars().count() + 2));
        }
        out.push_str(&one_line(&item.text, LINE_TEXT_CHARS));
        out.push('\n');
    }
    out
}

/// `text` with every run of white space (line breaks included) as one space, cut to `max`
/// characters with `…` when longer.
pub fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= max {
        return joined;
    }
    let mut cut: String = joined.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// Every field of one item, then its whole text.
pub fn details(item: &Item) -> String {
    let mut out =
        format!("#{}  {}  {}  {}\n", item.id, item.kind.as_str(), scope_name(&item.scope), item.author.as_str());
    let mut field = |name: &str, value: String| out.push_str(&format!("{name:<10} {value}\n"));
    field("created", time(item.created_ms));
    field("last used", item.last_used_ms.map_or_else(|| "never".to_string(), time));
    let succeeded =
        if item.uses == 0 { String::new() } else { format!(" ({} by runs that succeeded)", item.successes) };
    field("uses", format!("{}{succeeded}", item.uses));
    field("from", provenance(item));
    field("embedder", item.embedder.clone());
    if !item.data.is_null() {
        field("data", item.data.to_string());
    }
    out.push('\n');
    out.push_str(&item.text);
    out.push('\n');
    out
}

fn provenance(item: &Item) -> String {
    let p = &item.provenance;
    let mut parts = Vec::new();
    if let Some(run) = &p.run_id {
        parts.push(format!("run {run}"));
    }
    if let Some(seq) = p.seq {
        parts.push(format!("event {seq}"));
    }
    if let Some(expert) = &p.expert {
        parts.push(format!("expert {expert}"));
    }
    if parts.is_empty() { "no run (written outside a run)".to_string() } else { parts.join(", ") }
}

/// A time in milliseconds since the epoch as RFC 3339 (UTC, seconds); the number itself when it
/// is before 1970.
pub fn time(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string(),
        Err(_) => format!("{ms} ms since 1970"),
    }
}
