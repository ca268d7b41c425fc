//! "Did you mean ...?": the closest known name to a misspelt one, and lists of what exists.
//!
//! Invariant: pure string functions; a suggestion is only made when the names are close
//! (normalized Damerau-Levenshtein similarity of at least 0.6, or at most two edits on a name
//! longer than the distance), so hints never point at an unrelated name.

/// The candidate closest to `word`, when it is close enough to be a likely misspelling.
pub(crate) fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut best: Option<(f64, &'a str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let score = strsim::normalized_damerau_levenshtein(word, candidate);
        let edits = strsim::levenshtein(word, candidate);
        let shortest = word.chars().count().min(candidate.chars().count());
        let close = score >= 0.6 || (edits <= 2 && edits < shortest);
        if close && best.is_none_or(|(best_score, _)| score > best_score) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// `a, b, c`: names as a comma-separated list.
pub(crate) fn list<'a, I>(names: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    names.into_iter().collect::<Vec<_>>().join(", ")
}

/// "did you mean `x`?" when a candidate is close, else "{what}: a, b, c" (or `none` when there
/// are no candidates at all).
pub(crate) fn hint<'a, I>(word: &str, candidates: I, what: &str, none: Option<&str>) -> Option<String>
where
    I: IntoIterator<Item = &'a str> + Clone,
{
    if let Some(near) = closest(word, candidates.clone()) {
        return Some(format!("did you mean `{near}`?"));
    }
    let all = list(candidates);
    if all.is_empty() { none.map(str::to_owned) } else { Some(format!("{what}: {all}")) }
}
