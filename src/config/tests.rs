//! Tests of loading and validation: small workbenches written to temporary folders, with the
//! exact diagnostics they produce.

use std::collections::BTreeMap;
use std::path::Path;

use pretty_assertions::assert_eq;

use super::*;
use crate::protocol::OnFinish;

pub(super) const MODELS: &str = r#"
[models.small]
provider = "local"
model = "smollm2-135m-instruct"

[models.slm]
provider = "local"
model = "smollm2-135m-instruct"
"#;

const WRITER: &str = "model = \"small\"\n";

/// Writes `files` (relative path, text) under a new temporary folder.
pub(super) fn write(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// Each diagnostic's `Display`, with the folder shown as `<root>`.
fn shown(root: &Path, diags: &[Diagnostic]) -> Vec<String> {
    let root = root.display().to_string();
    diags.iter().map(|d| d.to_string().replace(&root, "<root>")).collect()
}

pub(super) fn diagnostics(files: &[(&str, &str)]) -> Vec<String> {
    let dir = write(files);
    let loaded = load_workbench(dir.path());
    assert_eq!(loaded.workbench.is_some(), !loaded.has_errors());
    shown(dir.path(), &loaded.diagnostics)
}

/// A case's name, its files, and the diagnostics expected.
type Case = (&'static str, Vec<(&'static str, &'static str)>, Vec<&'static str>);

#[test]
fn diagnostics_are_exact() {
    let cases: Vec<Case> = vec![
        (
            "unknown key with a suggestion",
            vec![("troupe.toml", MODELS), ("agents/writer.toml", "description = \"Writes\"\nmodle = \"small\"\n")],
            vec!["<root>/agents/writer.toml:2:1: error: unknown key `modle`\n  = hint: did you mean `model`?"],
        ),
        (
            "missing required key",
            vec![("troupe.toml", MODELS), ("agents/writer.toml", "description = \"Writes\"\n")],
            vec![
                "<root>/agents/writer.toml:1:1: error: missing required key `model`\n  = hint: for example: model = \"small\"",
            ],
        ),
        (
            "unknown key far from any known key",
            vec![("troupe.toml", MODELS), ("agents/writer.toml", "model = \"small\"\nflavour = 3\n")],
            vec![
                "<root>/agents/writer.toml:2:1: error: unknown key `flavour`\n  = hint: known keys: name, description, model, difficulty, choose_model, temperature, top_p, max_tokens, seed, max_turns, max_children, max_wall_seconds, on_finish, max_tool_result_bytes, tool_choice, tool_plan, tools, experts, self_copies, recall_k, recall_min_score, system_prompt",
            ],
        ),
        (
            "wrong type",
            vec![("troupe.toml", MODELS), ("agents/writer.toml", "model = \"small\"\nmax_turns = \"eight\"\n")],
            vec![
                "<root>/agents/writer.toml:2:13: error: `max_turns` must be a positive integer, found a string\n  = hint: for example: max_turns = 8",
            ],
        ),
        (
            "out of range",
            vec![
                ("troupe.toml", MODELS),
                ("agents/writer.toml", "model = \"small\"\ntemperature = 2.5\nmax_turns = 0\ntop_p = 1\n"),
            ],
            vec![
                "<root>/agents/writer.toml:2:15: error: `temperature` must be a number from 0 to 2, found 2.5\n  = hint: for example: temperature = 0.2",
                "<root>/agents/writer.toml:3:13: error: `max_turns` must be a positive integer, found 0\n  = hint: for example: max_turns = 8",
            ],
        ),
        (
            "unknown model alias, close to a known one",
            vec![("troupe.toml", MODELS), ("agents/writer.toml", "model = \"smal\"\n")],
            vec!["<root>/agents/writer.toml:1:9: error: unknown model alias `smal`\n  = hint: did you mean `small`?"],
        ),
        (
            "unknown model alias, far from any",
            vec![("troupe.toml", MODELS), ("agents/writer.toml", "model = \"gpt\"\n")],
            vec![
                "<root>/agents/writer.toml:1:9: error: unknown model alias `gpt`\n  = hint: known aliases: slm, small",
            ],
        ),
        (
            "no troupe.toml: no aliases at all",
            vec![("agents/writer.toml", WRITER)],
            vec![
                "<root>/agents/writer.toml:1:9: error: unknown model alias `small`\n  = hint: no model aliases are defined: add a [models.<alias>] table to troupe.toml",
            ],
        ),
        (
            "unknown expert",
            vec![
                ("troupe.toml", MODELS),
                ("agents/summarizer.toml", WRITER),
                (
                    "agents/lead.toml",
                    "model = \"small\"\ntools = [\"call_agent\"]\nexperts = [\"summariser\", \"*\", \"zzz\"]\n",
                ),
            ],
            vec![
                "<root>/agents/lead.toml:3:12: error: unknown expert `summariser`\n  = hint: did you mean `summarizer`?",
                "<root>/agents/lead.toml:3:31: error: unknown expert `zzz`\n  = hint: known agents: lead, summarizer",
            ],
        ),
        (
            "experts without call_agent is a warning",
            vec![
                ("troupe.toml", MODELS),
                ("agents/summarizer.toml", WRITER),
                ("agents/lead.toml", "model = \"small\"\nexperts = [\"summarizer\"]\n"),
            ],
            vec![
                "<root>/agents/lead.toml:2:1: warning: `experts` has no effect without the `call_agent` tool\n  = hint: add \"call_agent\" to `tools`",
            ],
        ),
        (
            "unknown tool",
            vec![
                ("troupe.toml", MODELS),
                ("agents/writer.toml", "model = \"small\"\ntools = [\"call_slm\", \"call_agnet\", \"browse\"]\n"),
            ],
            vec![
                "<root>/agents/writer.toml:2:22: error: unknown tool `call_agnet`\n  = hint: did you mean `call_agent`?",
                "<root>/agents/writer.toml:2:36: error: unknown tool `browse`\n  = hint: built-in tools: call_agent, call_slm, get_task_status, cancel_task, list_tasks, remember, recall; MCP tools are written `mcp:<server>/<tool>`",
            ],
        ),
        (
            "MCP tools name declared servers",
            vec![
                (
                    "troupe.toml",
                    "[mcp.servers.time]\ncommand = \"uvx\"\n[memory]\nk = 2\n[models.small]\nprovider = \"local\"\n",
                ),
                ("agents/writer.toml", "model = \"small\"\ntools = [\"mcp:time/*\", \"mcp:tmie/now\", \"mcp:x\"]\n"),
            ],
            vec![
                "<root>/agents/writer.toml:2:24: error: unknown MCP server `tmie`: no [mcp.servers.tmie] in troupe.toml\n  = hint: did you mean `time`?",
                "<root>/agents/writer.toml:2:40: error: `mcp:x` is not a valid MCP tool reference\n  = hint: write `mcp:<server>/<tool>`, or `mcp:<server>/*` for all of a server's tools",
            ],
        ),
        (
            "experiment naming an unknown agent",
            vec![
                ("troupe.toml", MODELS),
                ("agents/writer.toml", WRITER),
                ("experiments/smoke.toml", "root = \"writter\"\ntask = \"Write a haiku\"\n"),
            ],
            vec!["<root>/experiments/smoke.toml:1:8: error: unknown agent `writter`\n  = hint: did you mean `writer`?"],
        ),
        (
            "experiment without a task",
            vec![
                ("troupe.toml", MODELS),
                ("agents/writer.toml", WRITER),
                ("experiments/smoke.toml", "root = \"writer\"\n"),
                ("experiments/empty.toml", "root = \"writer\"\ntask = \"  \"\n"),
            ],
            vec![
                "<root>/experiments/empty.toml:2:8: error: `task` must not be empty\n  = hint: for example: task = \"Summarize the three main causes of inflation.\"",
                "<root>/experiments/smoke.toml:1:1: error: missing required key `task`\n  = hint: for example: task = \"Summarize the three main causes of inflation.\", or [[tasks]] tables, or dataset = \"tasks.jsonl\"",
            ],
        ),
        (
            "TOML syntax error",
            vec![("troupe.toml", MODELS), ("agents/writer.toml", "model = \"small\"\ntools = [\"call_slm\",\n")],
            vec!["<root>/agents/writer.toml:2:21: error: invalid TOML: unclosed array, expected `]`"],
        ),
        (
            "a syntax error in troupe.toml does not cascade",
            vec![("troupe.toml", "[models.small\n"), ("agents/writer.toml", "model = \"nope\"\n")],
            vec!["<root>/troupe.toml:1:14: error: invalid TOML: unclosed table, expected `]`"],
        ),
        (
            "duplicate agent name",
            vec![
                ("troupe.toml", MODELS),
                ("agents/a.toml", "name = \"writer\"\nmodel = \"small\"\n"),
                ("agents/writer.toml", WRITER),
            ],
            vec![
                "<root>/agents/writer.toml:1:1: error: duplicate agent name `writer`: already used by <root>/agents/a.toml:1:8\n  = hint: agent names must be unique; a file without `name` is named after the file",
            ],
        ),
        (
            "an API key in api_key_env",
            vec![(
                "troupe.toml",
                "[models.big]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\napi_key_env = \"sk-proj-abc123\"\n",
            )],
            vec![
                "<root>/troupe.toml:4:15: error: `api_key_env` must be the name of an environment variable, not the key itself\n  = hint: put the key in an environment variable and name the variable here",
            ],
        ),
        (
            "a key written into a header, a header that is not a string, a top_p out of range",
            vec![(
                "troupe.toml",
                "[models.big]\nprovider = \"openai\"\nmodel = \"gpt\"\nheaders = { Authorization = \"Bearer sk-1\", \"x-ok\" = \"Bearer ${TOKEN}\", \"x-n\" = 3 }\ntop_p = 2\n",
            )],
            vec![
                "<root>/troupe.toml:4:29: error: header `Authorization` would put a key in this file\n  = hint: put the key in an environment variable and name the variable here",
                "<root>/troupe.toml:4:80: error: `headers.x-n` must be a string, found an integer\n  = hint: for example: headers = { \"OpenAI-Organization\" = \"org-123\" }",
                "<root>/troupe.toml:5:9: error: `top_p` must be a number from 0 to 1, found 2\n  = hint: for example: top_p = 0.9",
            ],
        ),
        (
            "routing to unknown aliases, a bad difficulty, auto without routing elsewhere",
            vec![(
                "troupe.toml",
                "[models.small]\nprovider = \"local\"\n[routing]\ndefault = \"smal\"\n[[routing.rules]]\nuse = \"big\"\ndifficulty = \"brutal\"\n[routing.classify]\nwith = \"small\"\nsimple = \"small\"\n",
            )],
            vec![
                "<root>/troupe.toml:4:11: error: unknown model alias `smal`\n  = hint: did you mean `small`?",
                "<root>/troupe.toml:6:7: error: unknown model alias `big`\n  = hint: known aliases: small",
                "<root>/troupe.toml:7:14: error: `difficulty` must be one of `easy`, `medium`, `hard`, found `brutal`\n  = hint: for example: difficulty = \"hard\"",
                "<root>/troupe.toml:8:1: error: missing required key `complex`\n  = hint: for example: complex = \"big\"",
            ],
        ),
        (
            "an expert on model auto without a [routing] table",
            vec![("troupe.toml", MODELS), ("agents/writer.toml", "name = \"writer\"\nmodel = \"auto\"\n")],
            vec![
                "<root>/agents/writer.toml:2:9: error: `model = \"auto\"` needs a [routing] table in troupe.toml\n  = hint: for example: [routing] followed by default = \"small\" and [[routing.rules]] tables",
            ],
        ),
        (
            "a key-like api_key_env that is a valid name, and a bad name",
            vec![(
                "troupe.toml",
                "[models.a]\nprovider = \"anthropic\"\nmodel = \"claude\"\napi_key_env = \"AbCdEf0123456789XyZw\"\n[models.b]\nprovider = \"openai\"\nmodel = \"gpt\"\napi_key_env = \"9LIVES\"\n",
            )],
            vec![
                "<root>/troupe.toml:4:15: error: `api_key_env` must be the name of an environment variable, not the key itself\n  = hint: put the key in an environment variable and name the variable here",
                "<root>/troupe.toml:8:15: error: `api_key_env` must be the name of an environment variable (letters, digits and `_`, not starting with a digit)\n  = hint: put the key in an environment variable and name the variable here",
            ],
        ),
        (
            "openai without a model; a models entry that is not a table",
            vec![("troupe.toml", "[models]\nbig = { provider = \"openai\" }\nsmall = \"local\"\n")],
            vec![
                "<root>/troupe.toml:2:7: error: missing required key `model`\n  = hint: for example: model = \"gpt-4o-mini\"",
                "<root>/troupe.toml:3:9: error: `models.small` must be a table, found a string\n  = hint: for example: [models.small] followed by provider = \"local\"",
            ],
        ),
        (
            "scripted without script",
            vec![("troupe.toml", "[models.fake]\nprovider = \"scripted\"\n")],
            vec![
                "<root>/troupe.toml:1:1: error: missing required key `script`\n  = hint: provider \"scripted\" replays a script file, for example: script = \"scripts/replies.toml\"",
            ],
        ),
        (
            "missing script file",
            vec![("troupe.toml", "\n[models.fake]\nprovider = \"scripted\"\nscript = \"scripts/none.toml\"\n")],
            vec![
                "<root>/troupe.toml:4:10: error: script `scripts/none.toml` does not exist\n  = hint: `script` is relative to the folder of this file; looked for <root>/scripts/none.toml",
            ],
        ),
        (
            "unknown provider and top-level key",
            vec![(
                "troupe.toml",
                "[models.big]\nprovider = \"openia\"\nmodel = \"gpt-4o-mini\"\n[limit]\nmax_depth = 2\n",
            )],
            vec![
                "<root>/troupe.toml:2:12: error: `provider` must be one of `local`, `openai`, `anthropic`, `scripted`, found `openia`\n  = hint: did you mean `openai`?",
                "<root>/troupe.toml:4:2: error: unknown key `limit`\n  = hint: did you mean `limits`?",
            ],
        ),
        (
            "limits are checked",
            vec![("troupe.toml", "[limits]\nmax_depth = -1\non_finish = \"wait\"\nmax_tokens_per_run = 1.5\n")],
            vec![
                "<root>/troupe.toml:2:13: error: `max_depth` must be a non-negative integer, found -1\n  = hint: for example: max_depth = 4",
                "<root>/troupe.toml:3:13: error: `on_finish` must be one of `cancel_children`, `wait_for_children`, found `wait`\n  = hint: for example: on_finish = \"cancel_children\"",
                "<root>/troupe.toml:4:22: error: `max_tokens_per_run` must be a positive integer, found a float\n  = hint: for example: max_tokens_per_run = 500000",
            ],
        ),
        (
            "an alias defined only by another experiment",
            vec![
                ("troupe.toml", MODELS),
                ("agents/lead.toml", "model = \"small\"\ntools = [\"call_agent\"]\nexperts = [\"*\"]\n"),
                ("agents/helper.toml", "model = \"big\"\n"),
                ("experiments/with_big.toml", "root = \"lead\"\ntask = \"t\"\n[models.big]\nprovider = \"local\"\n"),
                ("experiments/without.toml", "root = \"lead\"\ntask = \"t\"\n"),
            ],
            vec![
                "<root>/experiments/without.toml:1:8: error: experiment `without` reaches agent `helper`, whose model alias `big` is defined neither in troupe.toml nor in this experiment\n  = hint: add [models.big] to troupe.toml or to this experiment",
            ],
        ),
        (
            "a tool result limit of nothing",
            vec![
                (
                    "troupe.toml",
                    "[limits]\nmax_tool_result_bytes = 0\n[models.small]\nprovider = \"local\"\n[models.slm]\nprovider = \"local\"\n",
                ),
                ("agents/writer.toml", "model = \"small\"\nmax_tool_result_bytes = 100000000\n"),
            ],
            vec![
                "<root>/agents/writer.toml:2:25: error: `max_tool_result_bytes` must be a positive integer no larger than 67108864, found 100000000\n  = hint: for example: max_tool_result_bytes = 16384",
                "<root>/troupe.toml:2:25: error: `max_tool_result_bytes` must be a positive integer, found 0\n  = hint: for example: max_tool_result_bytes = 65536",
            ],
        ),
        (
            "files that are not .toml are ignored",
            vec![("troupe.toml", MODELS), ("agents/notes.md", "# notes"), ("agents/writer.toml", WRITER)],
            vec![],
        ),
    ];
    for (name, files, expected) in cases {
        assert_eq!(diagnostics(&files), expected, "case: {name}");
    }
}

#[test]
fn a_valid_workbench_loads() {
    let dir = write(&[
        (
            "troupe.toml",
            "[models.small]\nprovider = \"local\"\nmodel = \"smollm2-135m-instruct\"\ntemperature = 1\n\n[models.fake]\nprovider = \"scripted\"\nscript = \"scripts/fake.toml\"\n\n[limits]\nmax_depth = 2\non_finish = \"wait_for_children\"\nmax_tool_result_bytes = 32768\n",
        ),
        ("scripts/fake.toml", "# replies\n"),
        (
            "agents/researcher.toml",
            r#"name = "researcher"
description = "Finds facts"
model = "small"
temperature = 0.2
top_p = 0.9
max_tokens = 256
seed = 7
max_turns = 8
max_children = 2
max_wall_seconds = 60
on_finish = "cancel_children"
max_tool_result_bytes = 4000
tools = ["call_slm", "call_agent"]
experts = ["summarizer"]
system_prompt = """
Be careful."""
"#,
        ),
        ("agents/summarizer.toml", "model = \"fake\"\n"),
        ("experiments/smoke.toml", "description = \"d\"\nroot = \"researcher\"\ntask = \"Find things\"\n"),
    ]);
    let loaded = load_workbench(dir.path());
    assert_eq!(shown(dir.path(), &loaded.diagnostics), Vec::<String>::new());
    let wb = loaded.workbench.unwrap();
    let root = dir.path().to_path_buf();
    assert_eq!(wb.root, root);
    assert_eq!(
        wb.settings.limits,
        Limits {
            max_depth: 2,
            on_finish: OnFinish::WaitForChildren,
            max_tool_result_bytes: 32768,
            ..Limits::default()
        }
    );
    let small = ModelSpec {
        model: Some("smollm2-135m-instruct".into()),
        temperature: Some(1.0),
        location: Location { path: root.join("troupe.toml"), line: 1, col: 1 },
        ..ModelSpec::new("small", ProviderKind::Local)
    };
    let fake = ModelSpec {
        script: Some(root.join("scripts/fake.toml")),
        location: Location { path: root.join("troupe.toml"), line: 6, col: 1 },
        ..ModelSpec::new("fake", ProviderKind::Scripted)
    };
    assert_eq!(wb.settings.models, BTreeMap::from([("fake".to_owned(), fake), ("small".to_owned(), small)]));
    assert_eq!(wb.settings.path, Some(root.join("troupe.toml")));
    assert_eq!(
        wb.agents["researcher"],
        AgentSpec {
            name: "researcher".into(),
            description: "Finds facts".into(),
            model: "small".into(),
            difficulty: None,
            choose_model: false,
            temperature: Some(0.2),
            top_p: Some(0.9),
            max_tokens: Some(256),
            seed: Some(7),
            max_turns: Some(8),
            max_children: Some(2),
            max_wall_seconds: Some(60),
            on_finish: Some(OnFinish::CancelChildren),
            max_tool_result_bytes: Some(4000),
            tool_choice: crate::protocol::ToolChoice::Auto,
            tool_plan: vec![],
            tools: vec!["call_slm".into(), "call_agent".into()],
            experts: vec!["summarizer".into()],
            self_copies: true,
            recall_k: None,
            recall_min_score: None,
            system_prompt: "Be careful.".into(),
            path: root.join("agents/researcher.toml"),
        }
    );
    assert_eq!(
        wb.agents["summarizer"],
        AgentSpec {
            name: "summarizer".into(),
            description: String::new(),
            model: "fake".into(),
            difficulty: None,
            choose_model: false,
            temperature: None,
            top_p: None,
            max_tokens: None,
            seed: None,
            max_turns: None,
            max_children: None,
            max_wall_seconds: None,
            on_finish: None,
            max_tool_result_bytes: None,
            tool_choice: Default::default(),
            tool_plan: vec![],
            tools: vec![],
            experts: vec![],
            self_copies: true,
            recall_k: None,
            recall_min_score: None,
            system_prompt: String::new(),
            path: root.join("agents/summarizer.toml"),
        }
    );
    assert_eq!(
        wb.experiments["smoke"],
        ExperimentSpec {
            name: "smoke".into(),
            description: "d".into(),
            root: "researcher".into(),
            tasks: vec![TaskSpec { id: "task-1".into(), input: "Find things".into(), expected: None }],
            repetitions: 1,
            variants: vec![],
            baseline: None,
            checks: vec![],
            concurrency: None,
            memory: None,
            reflect: None,
            models: BTreeMap::new(),
            limits: LimitsPatch::default(),
            dataset: None,
            path: root.join("experiments/smoke.toml"),
        }
    );
    assert_eq!(
        wb.files(),
        vec![
            root.join("agents/researcher.toml"),
            root.join("agents/summarizer.toml"),
            root.join("experiments/smoke.toml"),
            root.join("scripts/fake.toml"),
            root.join("troupe.toml"),
        ]
    );
}

#[test]
fn an_empty_folder_is_a_workbench_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load_workbench(dir.path());
    assert_eq!(loaded.diagnostics, vec![]);
    let wb = loaded.workbench.unwrap();
    assert_eq!(wb.settings.path, None);
    assert_eq!(wb.settings.limits, Limits::default());
    assert!(wb.agents.is_empty() && wb.experiments.is_empty());
}

fn experiment_workbench() -> tempfile::TempDir {
    write(&[
        ("troupe.toml", MODELS),
        ("agents/writer.toml", WRITER),
        ("scripts/replies.toml", ""),
        (
            "experiments/deep.toml",
            r#"name = "deep-run"
root = "writer"
task = "Write"
[models.small]
provider = "scripted"
script = "../scripts/replies.toml"
[limits]
max_depth = 1
max_tokens_per_run = 1000
"#,
        ),
        ("experiments/plain.toml", "root = \"writer\"\ntask = \"Write\"\n"),
    ])
}

#[test]
fn an_experiment_patches_limits_and_overrides_aliases() {
    let dir = experiment_workbench();
    let wb = load_workbench(dir.path()).workbench.unwrap();
    let deep = &wb.experiments["deep-run"];
    assert_eq!(
        deep.limits,
        LimitsPatch { max_depth: Some(1), max_tokens_per_run: Some(1000), ..LimitsPatch::default() }
    );
    assert_eq!(wb.limits_for(deep), Limits { max_depth: 1, max_tokens_per_run: 1000, ..Limits::default() });
    assert_eq!(wb.limits_for(&wb.experiments["plain"]), Limits::default());
    let model = wb.model_for(deep, "small").unwrap();
    assert_eq!(model.provider, ProviderKind::Scripted);
    assert_eq!(model.script, Some(dir.path().join("experiments/../scripts/replies.toml")));
    let plain = &wb.experiments["plain"];
    assert_eq!(wb.model_for(plain, "small").unwrap().provider, ProviderKind::Local);
    assert_eq!(wb.model_for(plain, "nope"), None);
}

#[test]
fn experiments_are_found_by_name_and_by_path() {
    let dir = experiment_workbench();
    let wb = load_workbench(dir.path()).workbench.unwrap();
    let root = dir.path();
    let name_of = |query: &str| wb.experiment(query).map(|e| e.name.clone());
    let expect = |query: &str, name: Option<&str>| {
        assert_eq!(name_of(query), name.map(str::to_owned), "query: {query}");
    };
    expect("deep-run", Some("deep-run"));
    expect("plain", Some("plain"));
    expect("deep", Some("deep-run"));
    expect("experiments/deep.toml", Some("deep-run"));
    expect("experiments/deep", Some("deep-run"));
    expect(&root.join("experiments/plain.toml").display().to_string(), Some("plain"));
    expect(&root.join("experiments/./plain").display().to_string(), Some("plain"));
    expect("missing", None);
    expect("experiments/missing.toml", None);
}

#[test]
fn check_agent_text_uses_the_rest_of_the_workbench() {
    let dir = write(&[
        ("troupe.toml", MODELS),
        ("agents/summarizer.toml", WRITER),
        ("agents/lead.toml", WRITER),
        ("experiments/bad.toml", "root = \"nobody\"\ntask = \"t\"\n"),
    ]);
    let path = dir.path().join("agents/lead.toml");
    let text = "model = \"slm\"\ntools = [\"call_agent\"]\nexperts = [\"summarizer\", \"writer\"]\n";
    assert_eq!(
        shown(dir.path(), &check_agent_text(dir.path(), &path, text)),
        vec!["<root>/agents/lead.toml:3:26: error: unknown expert `writer`\n  = hint: known agents: lead, summarizer"]
    );
    // A new file, named like an existing agent: reported in the edited file, though it sorts first.
    let path = dir.path().join("agents/a_new.toml");
    assert_eq!(
        shown(dir.path(), &check_agent_text(dir.path(), &path, "name = \"lead\"\nmodel = \"small\"\n")),
        vec![
            "<root>/agents/a_new.toml:1:8: error: duplicate agent name `lead`: also used by <root>/agents/lead.toml:1:1\n  = hint: agent names must be unique; a file without `name` is named after the file"
        ]
    );
}

#[test]
fn diagnostics_render_with_source_lines() {
    let dir = write(&[
        ("troupe.toml", MODELS),
        ("agents/writer.toml", "model = \"small\"\n\tmax_turns = \"x\"\n"),
        ("agents/lead.toml", "model = \"small\"\nexperts = [\"writer\"]\n"),
    ]);
    let loaded = load_workbench(dir.path());
    let rendered = render_diagnostics(&loaded.diagnostics).replace(&dir.path().display().to_string(), "<root>");
    assert_eq!(
        rendered,
        "<root>/agents/lead.toml:2:1: warning: `experts` has no effect without the `call_agent` tool
  = hint: add \"call_agent\" to `tools`
  |
2 | experts = [\"writer\"]
  | ^

<root>/agents/writer.toml:2:14: error: `max_turns` must be a positive integer, found a string
  = hint: for example: max_turns = 8
  |
2 | \tmax_turns = \"x\"
  | \t            ^

1 error, 1 warning
"
    );
}

#[test]
fn locations_count_characters() {
    let dir = write(&[
        ("troupe.toml", MODELS),
        ("agents/writer.toml", "description = \"é→ü\"; \nmodel = \"small\"\n"),
        ("agents/poet.toml", "description = \"é→ü\" model = 1\n"),
    ]);
    let loaded = load_workbench(dir.path());
    let first = &loaded.diagnostics[0];
    assert_eq!(
        (first.location.path.clone(), first.location.line, first.location.col),
        (dir.path().join("agents/poet.toml"), 1, 21)
    );
}

#[test]
fn memory_settings_default_to_a_store_in_the_workbench() {
    let dir = write(&[("troupe.toml", MODELS)]);
    let wb = load_workbench(dir.path()).workbench.unwrap();
    let expected = MemorySettings {
        path: dir.path().join(".troupe/memory.sqlite"),
        k: 3,
        min_score: 0.3,
        merge_threshold: MemorySettings::DEFAULT_MERGE_THRESHOLD,
        backend: MemoryBackend::Sqlite,
        reflect: false,
    };
    assert_eq!(wb.settings.memory, expected);
    assert_eq!(wb.settings.memory.store_path(&wb.root), dir.path().join(".troupe/memory.sqlite"));

    // Without troupe.toml the path stays relative to the workbench, which resolves it.
    let empty = tempfile::tempdir().unwrap();
    let wb = load_workbench(empty.path()).workbench.unwrap();
    assert_eq!(wb.settings.memory.path, Path::new(".troupe/memory.sqlite"));
    assert_eq!(wb.settings.memory.store_path(&wb.root), empty.path().join(".troupe/memory.sqlite"));
}

#[test]
fn memory_settings_are_read_with_paths_relative_to_troupe_toml() {
    let text = "[memory]\npath = \"state/mem.sqlite\"\nk = 5\nmin_score = 0\nmerge_threshold = 0.9\nbackend = \"sqlite\"\nreflect = true\n";
    let dir = write(&[("troupe.toml", text)]);
    let loaded = load_workbench(dir.path());
    assert_eq!(loaded.diagnostics, vec![]);
    let memory = loaded.workbench.unwrap().settings.memory;
    assert_eq!(
        memory,
        MemorySettings {
            path: dir.path().join("state/mem.sqlite"),
            k: 5,
            min_score: 0.0,
            merge_threshold: 0.9,
            backend: MemoryBackend::Sqlite,
            reflect: true,
        }
    );

    let absolute = write(&[("troupe.toml", "[memory]\npath = \"/var/lib/troupe/memory.sqlite\"\n")]);
    let memory = load_workbench(absolute.path()).workbench.unwrap().settings.memory;
    assert_eq!(memory.store_path(absolute.path()), Path::new("/var/lib/troupe/memory.sqlite"));

    let postgres = write(&[("troupe.toml", "[memory]\nbackend = \"postgres\"\nurl_env = \"TROUPE_MEMORY_URL\"\n")]);
    let memory = load_workbench(postgres.path()).workbench.unwrap().settings.memory;
    assert_eq!(memory.backend, MemoryBackend::Postgres { url_env: "TROUPE_MEMORY_URL".into() });
}

#[test]
fn memory_settings_are_checked() {
    let cases: Vec<Case> = vec![
        (
            "types and ranges",
            vec![(
                "troupe.toml",
                "[memory]\nk = 0\nmin_score = \"high\"\nmerge_threshold = 0.2\npath = \"\"\nbackend = \"postgress\"\n",
            )],
            vec![
                "<root>/troupe.toml:2:5: error: `k` must be a positive integer, found 0\n  = hint: for example: k = 3",
                "<root>/troupe.toml:3:13: error: `min_score` must be a number from -1 to 1, found a string\n  = hint: for example: min_score = 0.3",
                "<root>/troupe.toml:4:19: error: `merge_threshold` must be a number from 0.5 to 1, found 0.2\n  = hint: for example: merge_threshold = 0.95",
                "<root>/troupe.toml:5:8: error: `path` must name the memory's file, found an empty string\n  = hint: for example: path = \".troupe/memory.sqlite\" (relative to the folder of this file)",
                "<root>/troupe.toml:6:11: error: `backend` must be one of `sqlite`, `postgres`, found `postgress`\n  = hint: did you mean `postgres`?",
            ],
        ),
        (
            "unknown key",
            vec![("troupe.toml", "[memory]\nmin_scor = 0.5\n")],
            vec!["<root>/troupe.toml:2:1: error: unknown key `min_scor`\n  = hint: did you mean `min_score`?"],
        ),
        (
            "not a table",
            vec![("troupe.toml", "memory = 3\n")],
            vec![
                "<root>/troupe.toml:1:10: error: `memory` must be a table, found an integer\n  = hint: for example: [memory] followed by k = 3",
            ],
        ),
        (
            "postgres needs the name of a variable, never the URL",
            vec![("troupe.toml", "[memory]\nbackend = \"postgres\"\n")],
            vec![
                "<root>/troupe.toml:1:1: error: missing required key `url_env`\n  = hint: backend \"postgres\" reads its URL from an environment variable, for example: url_env = \"TROUPE_MEMORY_URL\"",
            ],
        ),
        (
            "a URL in url_env is not echoed",
            vec![("troupe.toml", "[memory]\nbackend = \"postgres\"\nurl_env = \"postgres://u:secret@db/troupe\"\n")],
            vec![
                "<root>/troupe.toml:3:11: error: `url_env` must be the name of an environment variable holding the database URL, not the URL itself\n  = hint: put the URL in an environment variable and name the variable here",
            ],
        ),
        (
            "url_env without postgres",
            vec![("troupe.toml", "[memory]\nurl_env = \"DB\"\n")],
            vec![
                "<root>/troupe.toml:2:11: warning: `url_env` is ignored: backend is `sqlite`\n  = hint: only backend = \"postgres\" reads a URL",
            ],
        ),
    ];
    for (name, files, expected) in cases {
        assert_eq!(diagnostics(&files), expected, "case: {name}");
    }
}

#[test]
fn an_expert_sets_its_own_recall_and_reflecting_needs_a_reflector() {
    let dir = write(&[
        ("troupe.toml", MODELS),
        ("agents/guide.toml", "model = \"small\"\nrecall_k = 0\nrecall_min_score = 0.5\n"),
        ("agents/bad.toml", "model = \"small\"\nrecall_min_score = 2\n"),
        ("experiments/learn.toml", "root = \"guide\"\ntask = \"t\"\nreflect = true\n"),
    ]);
    let loaded = load_workbench(dir.path());
    let messages: Vec<String> =
        loaded.diagnostics.iter().map(|d| format!("{}:{}: {}", d.location.line, d.location.col, d.message)).collect();
    assert!(messages.iter().any(|m| m.starts_with("2:20: `recall_min_score` must be")), "{messages:?}");
    assert!(
        messages.iter().any(|m| m
            == "3:1: `reflect = true` (the expert that writes lessons after each run) names unknown agent `reflector`"),
        "{messages:?}"
    );

    let dir = write(&[
        ("troupe.toml", MODELS),
        ("agents/guide.toml", "model = \"small\"\nrecall_k = 0\nrecall_min_score = 0.5\n"),
        ("agents/reflector.toml", "model = \"small\"\n"),
        ("experiments/learn.toml", "root = \"guide\"\ntask = \"t\"\nreflect = true\n"),
    ]);
    let loaded = load_workbench(dir.path());
    assert_eq!(loaded.diagnostics, vec![]);
    let wb = loaded.workbench.unwrap();
    assert_eq!((wb.agents["guide"].recall_k, wb.agents["guide"].recall_min_score), (Some(0), Some(0.5)));
    assert!(wb.reflects(&wb.experiments["learn"]), "the experiment's reflect wins over [memory]'s default");
}

#[test]
fn mcp_servers_are_read_and_their_mistakes_diagnosed() {
    let dir = write(&[(
        "troupe.toml",
        "[mcp.servers.time]\ncommand = \"mcp-server-time\"\nargs = [\"--local-timezone\", \"UTC\"]\nenv = { TZ_KEY = \"${MY_TZ_KEY}\" }\n\
         [mcp.servers.web]\nurl = \"http://127.0.0.1:8000/mcp\"\nheaders = { Authorization = \"Bearer ${WEB_TOKEN}\" }\ntimeout_seconds = 5\nstart = \"eager\"\n\
         [mcp.servers.local]\ncommand = \"tools/server.py\"\ncwd = \"tools\"\n",
    )]);
    let loaded = load_workbench(dir.path());
    assert_eq!(loaded.diagnostics, vec![]);
    let servers = loaded.workbench.unwrap().settings.mcp_servers;
    assert_eq!(
        servers["time"].transport,
        McpTransport::Stdio {
            command: "mcp-server-time".into(),
            args: vec!["--local-timezone".into(), "UTC".into()],
            env: BTreeMap::from([("TZ_KEY".to_owned(), "${MY_TZ_KEY}".to_owned())]),
            cwd: dir.path().to_path_buf(),
        }
    );
    assert_eq!((servers["time"].timeout_seconds, servers["time"].start), (60, McpStart::Lazy));
    assert_eq!((servers["web"].timeout_seconds, servers["web"].start), (5, McpStart::Eager));
    let McpTransport::Stdio { command, cwd, .. } = &servers["local"].transport else { panic!("stdio") };
    assert_eq!(
        (Path::new(command), cwd.as_path()),
        (dir.path().join("tools/server.py").as_path(), dir.path().join("tools").as_path())
    );

    let shown = diagnostics(&[(
        "troupe.toml",
        "[mcp.servers.none]\ntimeout_seconds = 3\n\
         [mcp.servers.both]\ncommand = \"x\"\nurl = \"http://h/mcp\"\n\
         [mcp.servers.mixed]\ncommand = \"x\"\nheaders = { A = \"b\" }\n\
         [mcp.servers.web]\nurl = \"ftp://h\"\nargs = [\"-v\"]\n\
         [mcp.servers.leak]\ncommand = \"x\"\nenv = { API_KEY = \"sk-123\" }\nflavour = 1\n",
    )]);
    assert_eq!(
        shown,
        [
            "<root>/troupe.toml:1:1: error: [mcp.servers.none] needs `command` or `url`\n  = hint: for a program: command = \"mcp-server-time\"; for a server over HTTP: url = \"http://127.0.0.1:8000/mcp\"",
            "<root>/troupe.toml:5:7: error: a server has `command` (stdio) or `url` (streamable HTTP), not both\n  = hint: keep the one this server speaks",
            "<root>/troupe.toml:8:1: error: `headers` is for servers reached by `url`\n  = hint: a stdio server reads its settings from `args` and `env`",
            "<root>/troupe.toml:10:7: error: `url` must be an http:// or https:// address, found `ftp://h`\n  = hint: for example: url = \"http://127.0.0.1:8000/mcp\"",
            "<root>/troupe.toml:11:1: error: `args` is for servers started by `command`\n  = hint: a server reached by `url` takes `headers`",
            "<root>/troupe.toml:14:19: error: `env.API_KEY` would put a secret in this file\n  = hint: name the variable that holds it: API_KEY = \"${MY_API_KEY}\"",
            "<root>/troupe.toml:15:1: error: unknown key `flavour`\n  = hint: known keys: command, args, env, cwd, url, headers, timeout_seconds, start",
        ]
    );
}
