//! The house rules, kept by a test rather than by memory (as rust-analyzer's `tidy` does):
//! `ARCHITECTURE.md`'s code map names every file of `src/` with its layer (a sibling `tests.rs`
//! belongs to the module it tests), every module opens
//! with a `//!` header, and no import points up a layer. The layers are read from the code map
//! itself, so the map a contributor reads is the rule the test enforces.
//!
//! A code-map row is `| <layer> | <paths> | <what it owns> |`; `<paths>` holds one or more
//! backticked paths, and `{a,b}` in a path stands for each of its names
//! (`` `src/memory/{store,sqlite}.rs` ``). A module may use modules of its own layer or below.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `a{b,c}d` → `abd`, `acd` (one pair of braces, as the map writes them).
fn expand(path: &str) -> Vec<String> {
    match (path.find('{'), path.find('}')) {
        (Some(open), Some(close)) if open < close => path[open + 1..close]
            .split(',')
            .map(|name| format!("{}{}{}", &path[..open], name.trim(), &path[close + 1..]))
            .collect(),
        _ => vec![path.to_owned()],
    }
}

/// Every file the code map names, with its layer and the line of the map that names it.
fn code_map() -> BTreeMap<String, (u32, usize)> {
    let text = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, layer, paths, ..] = cells.as_slice() else { continue };
        let Ok(layer) = layer.parse::<u32>() else { continue };
        for path in paths.split('`').skip(1).step_by(2) {
            for file in expand(path) {
                let previous = map.insert(file.clone(), (layer, i + 1));
                assert!(previous.is_none(), "ARCHITECTURE.md line {}: {file} is named twice", i + 1);
            }
        }
    }
    map
}

/// Every `.rs` file under `src/`, relative to the repository.
fn sources() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("src"), &mut files);
    let mut files: Vec<String> =
        files.iter().map(|p| p.strip_prefix(repo()).unwrap().to_string_lossy().replace('\\', "/")).collect();
    files.sort();
    files
}

/// Test code (a `tests.rs`, a backend's shared `suite.rs`, what follows `#[cfg(test)]`) may reach
/// anywhere; the rule is for the code that ships.
fn is_test_file(file: &str) -> bool {
    file.ends_with("/tests.rs")
        || file.ends_with("_tests.rs")
        || file.ends_with("/suite.rs")
        || file.contains("/tests_")
}

/// The file a module path (`["experiment", "store"]`) lives in, the deepest that exists.
fn file_of(segments: &[String], files: &BTreeMap<String, (u32, usize)>) -> Option<String> {
    (1..=segments.len()).rev().find_map(|n| {
        let base = format!("src/{}", segments[..n].join("/"));
        [format!("{base}.rs"), format!("{base}/mod.rs")].into_iter().find(|f| files.contains_key(f))
    })
}

/// The module path of `file` (`src/experiment/store.rs` → `["experiment", "store"]`).
fn module_of(file: &str) -> Vec<String> {
    let inner = file.trim_start_matches("src/").trim_end_matches(".rs").trim_end_matches("/mod");
    inner.split('/').map(str::to_owned).collect()
}

/// The modules `line` imports, as absolute module paths: `crate::a::b`, `crate::a::{b, c::d}`,
/// `super::x`, each with at most the segments that name a module.
fn imports(line: &str, here: &[String]) -> Vec<Vec<String>> {
    // `super` of module `a::b` (`a/b.rs` or `a/b/mod.rs`) is `a`.
    let parent = here[..here.len().saturating_sub(1)].to_vec();
    let mut found = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':' || *c == '{' || *c == ',' || *c == ' ')
                .collect();
            let (head, group) = match path.split_once('{') {
                Some((head, group)) => (head, Some(group)),
                None => (path.as_str(), None),
            };
            let head: Vec<String> =
                head.split("::").map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
            let mut with = |tail: &str| {
                let mut full = base.clone();
                full.extend(head.iter().cloned());
                full.extend(
                    tail.split("::").map(str::trim).filter(|s| !s.is_empty() && *s != "self").map(str::to_owned),
                );
                found.push(full);
            };
            match group {
                Some(group) => group.split(',').for_each(&mut with),
                None => with(""),
            }
        }
    }
    found
}

#[test]
fn the_code_map_names_every_file_once_and_nothing_else() {
    let map = code_map();
    // A sibling `tests.rs` belongs to the module it tests.
    let files: Vec<String> = sources().into_iter().filter(|f| !is_test_file(f)).collect();
    let missing: Vec<&String> = files.iter().filter(|f| !map.contains_key(*f)).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name these files: add a row with their layer: {missing:?}"
    );
    let stale: Vec<(&String, usize)> =
        map.iter().filter(|(f, _)| !files.contains(f)).map(|(f, (_, line))| (f, *line)).collect();
    assert!(stale.is_empty(), "ARCHITECTURE.md names files that do not exist (file, line): {stale:?}");
}

#[test]
fn every_module_opens_with_a_header_saying_what_it_owns() {
    for file in sources().into_iter().filter(|f| !is_test_file(f)) {
        let text = std::fs::read_to_string(repo().join(&file)).unwrap();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
        assert!(first.starts_with("//!"), "{file}:1: begin with a `//!` header saying what the module owns");
    }
}

#[test]
fn no_import_points_up_a_layer() {
    let map = code_map();
    let mut problems = Vec::new();
    for file in sources() {
        // The binary (main.rs and its cli/) uses the library through `troupe::`, from the top.
        if is_test_file(&file) || file == "src/main.rs" || file.starts_with("src/cli/") {
            continue;
        }
        let Some(&(layer, _)) = map.get(&file) else { continue };
        let here = module_of(&file);
        let text = std::fs::read_to_string(repo().join(&file)).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            let code = line.split("//").next().unwrap_or_default();
            for target in imports(code, &here) {
                let Some(target_file) = file_of(&target, &map) else { continue };
                let (target_layer, _) = map[&target_file];
                if target_layer > layer {
                    problems.push(format!(
                        "{file}:{}: layer {layer} imports {target_file} (layer {target_layer}): `{}`",
                        i + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports that point up a layer (move the code down, or the type to the vocabulary it belongs to):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_import_reader_finds_what_a_use_names() {
    let here = vec!["experiment".to_owned(), "fork".to_owned()];
    let paths = |line: &str| imports(line, &here);
    assert_eq!(paths("use crate::findings::{self, CONFIG_DIR};"), [vec!["findings"], vec!["findings", "CONFIG_DIR"]]);
    assert_eq!(paths("use super::store::MATRIX_FILE;"), [vec!["experiment", "store", "MATRIX_FILE"]]);
    assert_eq!(paths("let x = crate::protocol::shorten(a, 1);"), [vec!["protocol", "shorten"]]);
    assert!(paths("use troupe::crate_like::x;").is_empty(), "only `crate::` and `super::` paths");
    assert_eq!(expand("src/memory/{store,sqlite}.rs"), ["src/memory/store.rs", "src/memory/sqlite.rs"]);
}
