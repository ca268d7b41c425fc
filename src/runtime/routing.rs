//! `model = "auto"`: which alias a subtask runs on, from the rules in `troupe.toml`'s
//! `[routing]`, and, when no rule matches and `[routing.classify]` is set, from a small
//! model's one-word verdict.
//!
//! Invariant: pure. The driver asks the classifier; this module only decides and says why, so
//! that every decision can be recorded as a `routed` event with its reason.

use crate::config::{Difficulty, RouteRule, Routing};

/// What routing decided, or what it needs first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Run on `alias`; `reason` is shown in the transcript.
    Alias { alias: String, reason: String },
    /// No rule matched: ask `with` to classify the task, then call [`after_classifying`].
    Classify { with: String },
}

/// The prompt that asks a small model to classify a task.
pub fn classify_prompt(task: &str) -> String {
    format!(
        "Is the following task simple (a short fact, a rewrite, a lookup) or complex (reasoning, planning, several steps)? Answer with one word: simple or complex.\n\nTask: {task}"
    )
}

/// The route for a task of an expert declaring `difficulty`.
pub fn route(routing: &Routing, difficulty: Option<Difficulty>, task: &str) -> Route {
    for (i, rule) in routing.rules.iter().enumerate() {
        if let Some(why) = matches(rule, difficulty, task) {
            return Route::Alias { alias: rule.alias.clone(), reason: format!("rule {} ({why})", i + 1) };
        }
    }
    match &routing.classify {
        Some(classify) => Route::Classify { with: classify.with.clone() },
        None => Route::Alias { alias: routing.default.clone(), reason: "no rule matched: the default".to_owned() },
    }
}

/// The route once the classifier answered (`None`: it failed).
pub fn after_classifying(routing: &Routing, verdict: Option<&str>) -> Route {
    let Some(classify) = &routing.classify else {
        return Route::Alias { alias: routing.default.clone(), reason: "no rule matched: the default".to_owned() };
    };
    let word = verdict.map(|v| v.trim().to_lowercase());
    let alias_reason = match word.as_deref() {
        Some(v) if v.starts_with("complex") || (v.contains("complex") && !v.contains("simple")) => {
            (classify.complex.clone(), format!("{} classified the task as complex", classify.with))
        }
        Some(v) if v.contains("simple") => {
            (classify.simple.clone(), format!("{} classified the task as simple", classify.with))
        }
        Some(v) => (
            routing.default.clone(),
            format!(
                "{} answered `{}`, neither simple nor complex: the default",
                classify.with,
                crate::protocol::shorten(v, 40)
            ),
        ),
        None => (routing.default.clone(), format!("{} could not classify the task: the default", classify.with)),
    };
    Route::Alias { alias: alias_reason.0, reason: alias_reason.1 }
}

/// Why `rule` matches, or `None`.
fn matches(rule: &RouteRule, difficulty: Option<Difficulty>, task: &str) -> Option<String> {
    let mut why = Vec::new();
    if let Some(wanted) = rule.difficulty {
        if difficulty != Some(wanted) {
            return None;
        }
        why.push(format!("difficulty = {}", wanted.as_str()));
    }
    let chars = task.chars().count() as u64;
    if let Some(max) = rule.max_task_chars {
        if chars > max {
            return None;
        }
        why.push(format!("task of {chars} chars ≤ {max}"));
    }
    if let Some(min) = rule.min_task_chars {
        if chars < min {
            return None;
        }
        why.push(format!("task of {chars} chars ≥ {min}"));
    }
    if !rule.keywords.is_empty() {
        let lower = task.to_lowercase();
        let found = rule.keywords.iter().find(|k| lower.contains(&k.to_lowercase()))?;
        why.push(format!("keyword `{found}`"));
    }
    Some(if why.is_empty() { "matches every task".to_owned() } else { why.join(", ") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Classify;
    use pretty_assertions::assert_eq;

    fn rule(alias: &str) -> RouteRule {
        RouteRule {
            alias: alias.into(),
            difficulty: None,
            max_task_chars: None,
            min_task_chars: None,
            keywords: vec![],
        }
    }

    fn routing(classify: bool) -> Routing {
        Routing {
            default: "small".into(),
            rules: vec![
                RouteRule { difficulty: Some(Difficulty::Hard), ..rule("big") },
                RouteRule { keywords: vec!["Prove".into()], ..rule("big") },
                RouteRule { max_task_chars: Some(20), ..rule("slm") },
            ],
            classify: classify.then(|| Classify { with: "slm".into(), simple: "small".into(), complex: "big".into() }),
        }
    }

    fn alias(route: Route) -> (String, String) {
        match route {
            Route::Alias { alias, reason } => (alias, reason),
            Route::Classify { with } => (format!("classify with {with}"), String::new()),
        }
    }

    #[test]
    fn the_first_matching_rule_decides_and_says_why() {
        let r = routing(false);
        let long = "Summarise the following report about the quarterly results";
        let cases = [
            (Some(Difficulty::Hard), "hi", ("big", "rule 1 (difficulty = hard)")),
            (None, "please PROVE that 2 is prime, at length", ("big", "rule 2 (keyword `Prove`)")),
            (Some(Difficulty::Easy), "what is 2+2?", ("slm", "rule 3 (task of 12 chars ≤ 20)")),
            (None, long, ("small", "no rule matched: the default")),
        ];
        for (difficulty, task, (want_alias, want_reason)) in cases {
            assert_eq!(alias(route(&r, difficulty, task)), (want_alias.to_owned(), want_reason.to_owned()), "{task}");
        }
    }

    #[test]
    fn classification_decides_when_no_rule_matches() {
        let r = routing(true);
        let long = "Summarise the following report about the quarterly results";
        assert_eq!(route(&r, None, long), Route::Classify { with: "slm".into() });
        let verdicts = [
            (Some("Complex."), "big"),
            (Some("simple"), "small"),
            (Some("It is not complex, it is simple"), "small"),
            (Some("banana"), "small"),
            (None, "small"),
        ];
        for (verdict, want) in verdicts {
            assert_eq!(alias(after_classifying(&r, verdict)).0, want, "{verdict:?}");
        }
        assert_eq!(alias(after_classifying(&r, Some("complex"))).1, "slm classified the task as complex");
    }
}
