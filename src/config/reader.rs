//! A typed reader over a spanned TOML table: each accessor returns the value when it has the
//! right type and range, and otherwise records a [`Diagnostic`] pointing at the value (or at the
//! table's header for a missing key) and returns `None`.
//!
//! Invariant: every diagnostic made here names the key, what was expected and what was found,
//! and carries a hint with an example line taken from the table's [`Schema`]; keys not in the
//! schema are reported by [`Table::check_unknown`], so no key is ever silently ignored.

use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostic::Diagnostic;
use super::suggest;
use super::types::Location;

/// The keys a table may hold, each with an example line used in hints.
pub(crate) type Schema = &'static [(&'static str, &'static str)];

/// One file's text and where its lines start.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    /// The path diagnostics show.
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(path: PathBuf, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source { path, text, line_starts }
    }

    /// The 1-based line and character column of a byte offset.
    pub fn location(&self, offset: usize) -> Location {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = line.checked_sub(1).and_then(|i| self.line_starts.get(i)).copied().unwrap_or(0);
        let col = self.text.get(start..offset).map_or(0, |s| s.chars().count());
        Location {
            path: self.path.clone(),
            line: u32::try_from(line.max(1)).unwrap_or(u32::MAX),
            col: u32::try_from(col + 1).unwrap_or(u32::MAX),
        }
    }

    /// Line 1, column 1.
    pub fn start(&self) -> Location {
        start_of(&self.path)
    }

    /// The source text of a span (a value as written), for messages.
    pub fn slice(&self, span: std::ops::Range<usize>) -> &str {
        self.text.get(span).unwrap_or("")
    }

    /// Parses the text as a TOML document; a syntax error becomes one diagnostic at its position.
    pub fn parse(&self, diags: &mut Vec<Diagnostic>) -> Option<Spanned<DeTable<'_>>> {
        match DeTable::parse(&self.text) {
            Ok(doc) => Some(doc),
            Err(err) => {
                let at = err.span().map_or_else(|| self.start(), |s| self.location(s.start));
                let message = format!("invalid TOML: {}", err.message());
                diags.push(Diagnostic::error(at, message));
                None
            }
        }
    }
}

/// Line 1, column 1 of `path`.
pub(crate) fn start_of(path: &std::path::Path) -> Location {
    Location { path: path.to_path_buf(), line: 1, col: 1 }
}

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Located<T> {
    pub value: T,
    pub at: Location,
}

/// The diagnostics of one file being read.
pub(crate) struct FileDiagnostics<'s> {
    pub src: &'s Source,
    pub diags: Vec<Diagnostic>,
}

impl<'s> FileDiagnostics<'s> {
    pub fn new(src: &'s Source) -> Self {
        FileDiagnostics { src, diags: Vec::new() }
    }

    pub fn at(&self, span: &std::ops::Range<usize>) -> Location {
        self.src.location(span.start)
    }

    pub fn push(&mut self, diag: Diagnostic) {
        self.diags.push(diag);
    }
}

/// "a string", "an integer", ...: the TOML type of a value, with its article.
pub(crate) fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The integer value of a TOML integer.
pub(crate) fn integer_value(value: &DeValue<'_>) -> Option<i128> {
    match value {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

/// The numeric value of a TOML integer or float.
pub(crate) fn number_value(value: &DeValue<'_>) -> Option<f64> {
    match value {
        DeValue::Float(f) => f.as_str().parse().ok(),
        DeValue::Integer(_) => integer_value(value).map(|i| i as f64),
        _ => None,
    }
}

/// A table being read, with the schema of the keys it may hold.
pub(crate) struct Table<'t, 'i> {
    pub table: &'t DeTable<'i>,
    /// Where "missing key" diagnostics point: the table's header, or the file's start.
    anchor: usize,
    schema: Schema,
}

impl<'t, 'i> Table<'t, 'i> {
    /// The whole document: missing keys are reported at 1:1.
    pub fn document(doc: &'t Spanned<DeTable<'i>>, schema: Schema) -> Self {
        Table { table: doc.get_ref(), anchor: 0, schema }
    }

    /// A nested table (a `[header]` or an inline table); `None` (with an error) if `value` is
    /// not a table. `key` names it in the message, `example` shows how to write it.
    pub fn nested(
        cx: &mut FileDiagnostics<'_>,
        key: &str,
        value: &'t Spanned<DeValue<'i>>,
        example: &str,
        schema: Schema,
    ) -> Option<Self> {
        match value.get_ref() {
            DeValue::Table(table) => Some(Table { table, anchor: value.span().start, schema }),
            other => {
                let message = format!("`{key}` must be a table, found {}", type_name(other));
                cx.push(Diagnostic::error(cx.at(&value.span()), message).with_hint(format!("for example: {example}")));
                None
            }
        }
    }

    /// Where this table starts (its header).
    pub fn header(&self, cx: &FileDiagnostics<'_>) -> Location {
        cx.src.location(self.anchor)
    }

    fn example(&self, key: &str) -> &'static str {
        self.schema.iter().find(|(k, _)| *k == key).map_or("", |(_, example)| example)
    }

    fn type_error(&self, cx: &mut FileDiagnostics<'_>, key: &str, value: &Spanned<DeValue<'_>>, expected: &str) {
        let message = format!("`{key}` must be {expected}, found {}", type_name(value.get_ref()));
        self.value_error(cx, key, value, message);
    }

    /// An error at `value` with the key's example as the hint.
    pub fn value_error(&self, cx: &mut FileDiagnostics<'_>, key: &str, value: &Spanned<DeValue<'_>>, message: String) {
        let example = self.example(key);
        let diag = Diagnostic::error(cx.at(&value.span()), message);
        cx.push(if example.is_empty() { diag } else { diag.with_hint(format!("for example: {example}")) });
    }

    /// Reports every key that is not in the schema, with the closest known key as a hint.
    pub fn check_unknown(&self, cx: &mut FileDiagnostics<'_>) {
        let known = || self.schema.iter().map(|(k, _)| *k);
        for key in self.table.keys() {
            let name: &str = key.get_ref();
            if known().any(|k| k == name) {
                continue;
            }
            let hint = suggest::hint(name, known(), "known keys", None);
            cx.push(Diagnostic::error(cx.at(&key.span()), format!("unknown key `{name}`")).with_opt_hint(hint));
        }
    }

    pub fn get(&self, key: &str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.table.get(key)
    }

    /// Reports `key` as missing, at the table's header.
    pub fn missing(&self, cx: &mut FileDiagnostics<'_>, key: &str) {
        self.missing_with_hint(cx, key, format!("for example: {}", self.example(key)));
    }

    /// Reports `key` as missing, unless an unknown key in the table is a misspelling of it
    /// (that key's diagnostic already says what to do).
    pub fn missing_with_hint(&self, cx: &mut FileDiagnostics<'_>, key: &str, hint: String) {
        let known = || self.schema.iter().map(|(k, _)| *k);
        let misspelt = self.table.keys().any(|k| {
            let k: &str = k.get_ref();
            !known().any(|known| known == k) && suggest::closest(k, known()) == Some(key)
        });
        if misspelt {
            return;
        }
        let at = self.header(cx);
        cx.push(Diagnostic::error(at, format!("missing required key `{key}`")).with_hint(hint));
    }

    /// An optional string.
    pub fn string(&self, cx: &mut FileDiagnostics<'_>, key: &str) -> Option<Located<String>> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(Located { value: s.to_string(), at: cx.at(&value.span()) }),
            _ => {
                self.type_error(cx, key, value, "a string");
                None
            }
        }
    }

    /// An optional boolean.
    pub fn boolean(&self, cx: &mut FileDiagnostics<'_>, key: &str) -> Option<bool> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(cx, key, value, "true or false");
                None
            }
        }
    }

    /// A required string; `None` once reported (missing or mistyped).
    pub fn required_string(&self, cx: &mut FileDiagnostics<'_>, key: &str) -> Option<Located<String>> {
        if self.get(key).is_none() {
            self.missing(cx, key);
            return None;
        }
        self.string(cx, key)
    }

    /// An optional non-negative (or, with `positive`, at least 1) integer up to `max`.
    pub fn uint(&self, cx: &mut FileDiagnostics<'_>, key: &str, positive: bool, max: u64) -> Option<u64> {
        let value = self.get(key)?;
        let expected = if positive { "a positive integer" } else { "a non-negative integer" };
        let Some(n) = integer_value(value.get_ref()) else {
            self.type_error(cx, key, value, expected);
            return None;
        };
        let min = i128::from(positive);
        if n < min || n > i128::from(max) {
            let found = cx.src.slice(value.span()).to_owned();
            let message = if n > i128::from(max) {
                format!("`{key}` must be {expected} no larger than {max}, found {found}")
            } else {
                format!("`{key}` must be {expected}, found {found}")
            };
            self.value_error(cx, key, value, message);
            return None;
        }
        u64::try_from(n).ok()
    }

    pub fn u32(&self, cx: &mut FileDiagnostics<'_>, key: &str, positive: bool) -> Option<u32> {
        self.uint(cx, key, positive, u64::from(u32::MAX)).and_then(|n| u32::try_from(n).ok())
    }

    pub fn u64(&self, cx: &mut FileDiagnostics<'_>, key: &str, positive: bool) -> Option<u64> {
        self.uint(cx, key, positive, i64::MAX as u64)
    }

    /// An optional number (integer or float) in `min..=max`.
    pub fn number(&self, cx: &mut FileDiagnostics<'_>, key: &str, min: f64, max: f64) -> Option<f64> {
        let value = self.get(key)?;
        let expected = format!("a number from {min} to {max}");
        let Some(n) = number_value(value.get_ref()) else {
            self.type_error(cx, key, value, &expected);
            return None;
        };
        if !(min..=max).contains(&n) {
            let found = cx.src.slice(value.span()).to_owned();
            self.value_error(cx, key, value, format!("`{key}` must be {expected}, found {found}"));
            return None;
        }
        Some(n)
    }

    /// An optional `f32` in `min..=max`.
    pub fn f32(&self, cx: &mut FileDiagnostics<'_>, key: &str, min: f64, max: f64) -> Option<f32> {
        self.number(cx, key, min, max).map(|n| n as f32)
    }

    /// An optional array of strings; `None` if absent or wrongly typed (reported).
    pub fn string_array(&self, cx: &mut FileDiagnostics<'_>, key: &str) -> Option<Vec<Located<String>>> {
        let value = self.get(key)?;
        let DeValue::Array(items) = value.get_ref() else {
            self.type_error(cx, key, value, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Located { value: s.to_string(), at: cx.at(&item.span()) }),
                other => {
                    ok = false;
                    let message = format!("`{key}` must be an array of strings, found {} in it", type_name(other));
                    self.value_error(cx, key, item, message);
                }
            }
        }
        ok.then_some(out)
    }

    /// An optional table of strings (`headers = { "x-org" = "acme" }`), in file order: the
    /// entries that are strings; the others, or a value that is not a table, are reported.
    pub fn string_table(&self, cx: &mut FileDiagnostics<'_>, key: &str) -> Option<Vec<(String, Located<String>)>> {
        let value = self.get(key)?;
        let DeValue::Table(table) = value.get_ref() else {
            self.type_error(cx, key, value, "a table of strings");
            return None;
        };
        let mut out = Vec::with_capacity(table.len());
        for (name, item) in table.iter() {
            match item.get_ref() {
                DeValue::String(s) => {
                    out.push((name.get_ref().to_string(), Located { value: s.to_string(), at: cx.at(&item.span()) }))
                }
                other => {
                    let message = format!("`{key}.{}` must be a string, found {}", name.get_ref(), type_name(other));
                    self.value_error(cx, key, item, message);
                }
            }
        }
        Some(out)
    }

    /// An optional string that must be one of `options`.
    pub fn choice<T: Copy>(
        &self,
        cx: &mut FileDiagnostics<'_>,
        key: &str,
        options: &[(&'static str, T)],
    ) -> Option<Located<T>> {
        let value = self.get(key)?;
        let names = || options.iter().map(|(name, _)| *name);
        let expected = format!("one of {}", names().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "));
        let DeValue::String(s) = value.get_ref() else {
            self.type_error(cx, key, value, &expected);
            return None;
        };
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == s.as_ref()) {
            return Some(Located { value: *v, at: cx.at(&value.span()) });
        }
        let message = format!("`{key}` must be {expected}, found `{s}`");
        let hint = suggest::closest(s, names())
            .map_or_else(|| format!("for example: {}", self.example(key)), |near| format!("did you mean `{near}`?"));
        cx.push(Diagnostic::error(cx.at(&value.span()), message).with_hint(hint));
        None
    }
}

/// What a name in an experiment refers to, checked once every file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefKind {
    /// An expert (`root`, `[variants.agents.<name>]`, `experts`).
    Agent,
    /// A model alias (an override's `model`, a judge's `model`).
    Alias,
}

/// A name the experiment uses that another file defines.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reference {
    pub kind: RefKind,
    pub name: String,
    pub at: Location,
    /// What uses it, for the message: "variant `experts`", "check `graded`".
    pub context: String,
}

/// The folder of the file being read, as shown in diagnostics and as an absolute path: relative
/// `script`, `dataset` and `schema` paths resolve against it.
pub(crate) struct Dirs {
    pub shown: PathBuf,
    pub abs: PathBuf,
    /// How many levels above its folder a path read from the file may reach and still be in
    /// the workbench: 0 for `troupe.toml`, 1 for a file in `experiments/`.
    up: usize,
}

impl Dirs {
    /// The folder of `troupe.toml`, the workbench itself.
    pub fn of(shown_file: &Path, abs_file: &Path) -> Self {
        Dirs {
            shown: shown_file.parent().map(Path::to_path_buf).unwrap_or_default(),
            abs: abs_file.parent().map(Path::to_path_buf).unwrap_or_default(),
            up: 0,
        }
    }

    /// The folder of a file one level inside the workbench (`experiments/x.toml`).
    pub fn of_nested(shown_file: &Path, abs_file: &Path) -> Self {
        Dirs { up: 1, ..Dirs::of(shown_file, abs_file) }
    }

    /// `rel`, a path read from the file, as shown and as an absolute path; refused when it is
    /// absolute or climbs out of the workbench. A path read from a file stays inside the folder
    /// it came from, whoever wrote the file (it may be a shared run folder's snapshot).
    pub fn inside(&self, rel: &str) -> Result<(PathBuf, PathBuf), String> {
        use std::path::Component;
        let mut depth: isize = 0;
        for component in Path::new(rel).components() {
            match component {
                Component::Normal(_) => depth += 1,
                Component::CurDir => {}
                Component::ParentDir => {
                    depth -= 1;
                    if depth < -(self.up as isize) {
                        return Err(format!(
                            "`{rel}` climbs out of the workbench; write a path inside the workbench, relative to this file"
                        ));
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!(
                        "`{rel}` is an absolute path; write a path inside the workbench, relative to this file"
                    ));
                }
            }
        }
        Ok((self.shown.join(rel), self.abs.join(rel)))
    }
}

/// A required string that must not be blank.
pub(crate) fn non_empty(cx: &mut FileDiagnostics<'_>, table: &Table<'_, '_>, key: &str) -> Option<Located<String>> {
    let value = table.required_string(cx, key)?;
    if value.value.trim().is_empty() {
        if let Some(raw) = table.get(key) {
            table.value_error(cx, key, raw, format!("`{key}` must not be empty"));
        }
        return None;
    }
    Some(value)
}

/// An optional string that, when given, must not be blank.
pub(crate) fn optional_non_empty(
    cx: &mut FileDiagnostics<'_>,
    table: &Table<'_, '_>,
    key: &str,
) -> Option<Located<String>> {
    table.get(key)?;
    non_empty(cx, table, key)
}
