//! The lessons a person writes in a run's `notes.md`: the items under a `## Lessons` heading.
//! Saving the notes from the workbench keeps each one in memory as a lesson written by the
//! user (author `notes`), with the run as its provenance. Pure.
//!
//! What counts as a lesson: each list item (`-`, `*`, `+`, `1.`, `1)`, a task box `[ ]` allowed)
//! or paragraph of the section, its wrapped lines joined; HTML comments are skipped. The section
//! ends at the next heading of the same or a higher level.

/// The lessons of `notes`, in order, without repeats.
pub fn lessons_in_notes(notes: &str) -> Vec<String> {
    let mut lessons: Vec<String> = Vec::new();
    let mut section: Option<usize> = None;
    let mut current: Option<String> = None;
    let mut in_comment = false;
    let finish = |current: &mut Option<String>, lessons: &mut Vec<String>| {
        if let Some(text) = current.take() {
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if !text.is_empty() && !lessons.contains(&text) {
                lessons.push(text);
            }
        }
    };
    for raw in notes.lines() {
        let (line, comment_open) = strip_comments(raw, in_comment);
        in_comment = comment_open;
        if let Some((level, title)) = heading(&line) {
            finish(&mut current, &mut lessons);
            match section {
                Some(open) if level <= open => section = None,
                Some(_) => continue,
                None => {}
            }
            if section.is_none() && is_lessons_title(title) {
                section = Some(level);
            }
            continue;
        }
        if section.is_none() {
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            // A blank line ends a paragraph; a comment-only line leaves it open.
            if raw.trim().is_empty() {
                finish(&mut current, &mut lessons);
            }
            continue;
        }
        match list_item(trimmed) {
            Some(item) => {
                finish(&mut current, &mut lessons);
                current = Some(item.to_owned());
            }
            None => match current.as_mut() {
                Some(text) => {
                    text.push(' ');
                    text.push_str(trimmed);
                }
                None => current = Some(trimmed.to_owned()),
            },
        }
    }
    finish(&mut current, &mut lessons);
    lessons
}

/// A Markdown ATX heading's level and title.
fn heading(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start();
    let level = trimmed.chars().take_while(|&c| c == '#').count();
    let rest = &trimmed[level..];
    ((1..=6).contains(&level) && (rest.is_empty() || rest.starts_with([' ', '\t'])))
        .then(|| (level, rest.trim().trim_end_matches('#').trim()))
}

fn is_lessons_title(title: &str) -> bool {
    let title = title.trim_end_matches(':').trim();
    title.eq_ignore_ascii_case("lessons") || title.eq_ignore_ascii_case("lesson")
}

/// The text of a list item, without its marker (and task box), or `None` for other lines.
fn list_item(line: &str) -> Option<&str> {
    let rest = if let Some(rest) = line.strip_prefix(['-', '*', '+']) {
        rest
    } else {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        line[digits..].strip_prefix(['.', ')'])?
    };
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let rest = rest.trim_start();
    let rest = ["[ ]", "[x]", "[X]"].iter().find_map(|b| rest.strip_prefix(b)).unwrap_or(rest);
    Some(rest.trim())
}

/// `line` without its HTML comments, and whether a comment is still open at its end.
fn strip_comments(line: &str, mut in_comment: bool) -> (String, bool) {
    let mut out = String::new();
    let mut rest = line;
    loop {
        if in_comment {
            match rest.find("-->") {
                Some(end) => {
                    rest = &rest[end + 3..];
                    in_comment = false;
                }
                None => return (out, true),
            }
        } else {
            match rest.find("<!--") {
                Some(start) => {
                    out.push_str(&rest[..start]);
                    rest = &rest[start + 4..];
                    in_comment = true;
                }
                None => {
                    out.push_str(rest);
                    return (out, false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_and_paragraphs_under_the_lessons_heading_are_lessons() {
        let notes = "<!-- Your notes on this run go here. -->\n\n\
            # Run 12\nThe delegator lost the answer.\n\n\
            ## Lessons\n\
            <!-- one per line -->\n\
            - Quote the solver's answer word for word.\n\
            * Ask for a number, not a sentence,\n  when the check is `number`.\n\
            1. [x] Keep tasks under twenty words.\n\
            2) Keep tasks under twenty words.\n\n\
            A paragraph is a lesson too:\nits lines are joined.\n\n\
            ### Details\n- still in the section\n\n\
            ## Next steps\n- Not a lesson.\n";
        assert_eq!(
            lessons_in_notes(notes),
            [
                "Quote the solver's answer word for word.",
                "Ask for a number, not a sentence, when the check is `number`.",
                "Keep tasks under twenty words.",
                "A paragraph is a lesson too: its lines are joined.",
                "still in the section",
            ]
        );
    }

    #[test]
    fn notes_without_the_heading_or_with_an_empty_section_have_none() {
        assert!(lessons_in_notes("<!-- stub -->\n\n").is_empty());
        assert!(lessons_in_notes("Lessons\n- not under a heading\n").is_empty());
        assert!(lessons_in_notes("## Lessons learned elsewhere\n- another title\n").is_empty());
        assert!(lessons_in_notes("## Lessons\n<!--\n- commented out\n-->\n-\n\n## More\n").is_empty());
    }

    #[test]
    fn the_heading_may_be_any_level_and_case() {
        assert_eq!(lessons_in_notes("### lessons:\n+ Check units.\n## After\n- x\n"), ["Check units."]);
        assert_eq!(lessons_in_notes("# LESSONS #\n-Not an item but a paragraph\n"), ["-Not an item but a paragraph"]);
    }
}
