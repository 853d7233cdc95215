//! The command line through the real binary: `spur check`, configuration errors, the
//! loopback guard, the log format, shell completions and the man page. Run with:
//! cargo nextest run --test cli

use std::process::Command;

fn spur(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    spur_with_env(dir, args, &[])
}

fn spur_with_env(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spur"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("SPUR_LOG_FORMAT")
        .envs(env.iter().copied())
        .output()
        .expect("running spur");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_file_line_col_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(
        scripts.join("ok.rhai"),
        "on_track(|e| { log::info(e.event); });",
    )
    .unwrap();
    std::fs::write(
        scripts.join("syntax.rhai"),
        "on_track(|e| {\n    let = 1;\n});",
    )
    .unwrap();
    std::fs::write(scripts.join("arity.rhai"), "on_identify(|a, b| { });").unwrap();
    std::fs::write(
        scripts.join("toplevel.rhai"),
        "let x = 1;\nhttp::get(\"http://example.com\");",
    )
    .unwrap();
    let (code, out, _) = spur(dir.path(), &["check", "scripts"]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&"scripts/syntax.rhai:2:9: Expecting name of a variable"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("scripts/arity.rhai:1:1: on_identify handler must take 1 argument")),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "scripts/toplevel.rhai:2:7: http calls are only allowed inside a handler"
        )),
        "{out}"
    );
    assert!(out.contains("3 error(s)"), "{out}");

    std::fs::remove_file(scripts.join("syntax.rhai")).unwrap();
    std::fs::remove_file(scripts.join("arity.rhai")).unwrap();
    std::fs::remove_file(scripts.join("toplevel.rhai")).unwrap();
    let (code, out, _) = spur(dir.path(), &["check"]);
    assert_eq!((code, out.trim()), (0, "1 scripts OK, 1 handlers"));
}

#[test]
fn config_problems_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spur.toml"),
        "[server]\nlisten = \"here\"\nport = 1\n[limits]\ntimeout_ms = -5\n[connections.crm]\nbearer = \"${NOPE_NOT_SET}\"\n",
    )
    .unwrap();
    let (code, _, err) = spur(dir.path(), &["check"]);
    assert_eq!(code, 2);
    for needle in [
        "spur.toml: server.listen: expected host:port",
        "spur.toml: server.port: unknown key",
        "spur.toml: limits.timeout_ms: -5 is out of range",
        "spur.toml: connections.crm.bearer: environment variable NOPE_NOT_SET is not set",
        "spur.toml: connections.crm.base_url: is required",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn serve_refuses_a_public_address_without_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = spur(dir.path(), &["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(code, 2);
    assert!(err.contains("not a loopback address"), "{err}");
    std::fs::write(
        dir.path().join("spur.toml"),
        "[server]\nlisten = \"0.0.0.0:8088\"\n",
    )
    .unwrap();
    let (code, _, err) = spur(dir.path(), &["serve"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("spur.toml: server.listen: 0.0.0.0:8088 is not a loopback address"),
        "{err}"
    );
}

/// A scripts dir whose one script logs `loaded` (a warning) when it is loaded.
fn loud_scripts() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(
        scripts.join("loud.rhai"),
        "log::warn(\"loaded\");\non_track(|e| {});",
    )
    .unwrap();
    dir
}

/// The stderr lines that are JSON objects.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(serde_json::Value::is_object)
        .collect()
}

#[test]
fn log_format_json_writes_each_log_line_as_a_json_object() {
    let dir = loud_scripts();
    let is_loaded = |v: &serde_json::Value| {
        v["level"] == "WARN" && v["fields"]["message"] == "loaded" && v["target"] == "script"
    };

    let (code, out, err) = spur(dir.path(), &["check", "--log-format", "json"]);
    assert_eq!((code, out.trim()), (0, "1 scripts OK, 1 handlers"), "{err}");
    let lines = json_lines(&err);
    assert!(lines.iter().any(is_loaded), "{err}");
    assert!(lines.iter().all(|v| v["timestamp"].is_string()), "{err}");
    assert_eq!(
        lines.len(),
        err.lines().count(),
        "a line is not JSON:\n{err}"
    );

    let (code, _, err) = spur_with_env(dir.path(), &["check"], &[("SPUR_LOG_FORMAT", "json")]);
    assert_eq!(code, 0, "{err}");
    assert!(json_lines(&err).iter().any(is_loaded), "{err}");

    // The default is text, and the flag wins over the variable.
    for env in [&[][..], &[("SPUR_LOG_FORMAT", "json")][..]] {
        let args: &[&str] = if env.is_empty() {
            &["check"]
        } else {
            &["check", "--log-format", "text"]
        };
        let (code, _, err) = spur_with_env(dir.path(), args, env);
        assert_eq!(code, 0, "{err}");
        assert!(json_lines(&err).is_empty(), "{err}");
        assert!(
            err.lines()
                .any(|l| l.contains("WARN") && l.contains("script: loaded")),
            "{err}"
        );
    }

    let (code, _, err) = spur(dir.path(), &["check", "--log-format", "yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("possible values: text, json"), "{err}");
}

#[test]
fn bash_completion_completes_a_command_name() {
    let dir = tempfile::tempdir().unwrap();
    let (code, script, err) = spur(dir.path(), &["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    let path = dir.path().join("spur.bash");
    std::fs::write(&path, script).unwrap();
    // What bash does on `spur se<TAB>`: the registered function, called with the
    // command, the word being completed and the word before it.
    let complete = r#"
        source "$1" || exit 3
        COMP_WORDS=(spur se)
        COMP_CWORD=1
        COMP_LINE="spur se"
        COMP_POINT=${#COMP_LINE}
        fn=$(complete -p spur | sed -n 's/.*-F \([^ ]*\).*/\1/p')
        [ -n "$fn" ] || exit 4
        "$fn" spur se spur
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", complete, "bash"])
        .arg(&path)
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let words: Vec<&str> = stdout.lines().collect();
    assert_eq!(words, ["serve"], "{stdout}");
}

#[test]
fn man_prints_roff_without_reading_the_config() {
    let dir = tempfile::tempdir().unwrap();
    // Neither `man` nor `completions` needs the configuration, even a broken one.
    std::fs::write(dir.path().join("spur.toml"), "[server]\nport = 1\n").unwrap();
    let (code, page, err) = spur(dir.path(), &["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(page.starts_with(".ie"), "not roff:\n{page}");
    assert!(page.contains(".TH spur 1"), "{page}");
    for needle in ["serve", "completions", "log\\-format", "SPUR_LOG_FORMAT"] {
        assert!(page.contains(needle), "missing {needle:?} in:\n{page}");
    }
    let (code, script, err) = spur(dir.path(), &["completions", "zsh"]);
    assert_eq!(code, 0, "{err}");
    assert!(script.contains("#compdef spur"), "{script}");
    let (code, _, err) = spur(dir.path(), &["check"]);
    assert_eq!(code, 2, "the config is broken after all: {err}");
}

/// `deploy/spur.toml` with its commented-out settings enabled (`# key = …`, `# [table]`).
fn uncommented(text: &str) -> String {
    let setting = |l: &str| {
        l.starts_with('[')
            || l.split_once(" = ").is_some_and(|(key, _)| {
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
    };
    text.lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if setting(rest) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn deploy_config_loads_with_and_without_its_commented_settings() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/spur.toml")).unwrap();
    let full = uncommented(&text);
    assert!(full.contains("\n[connections.slack]\n"), "{full}");
    // Every ${VAR} the file names, set.
    let vars: Vec<String> = text
        .split("${")
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(v, _)| v.to_owned()))
        .collect();
    assert!(vars.iter().any(|v| v == "SPUR_ADMIN_TOKEN"), "{vars:?}");
    let env: Vec<(&str, &str)> = vars.iter().map(|v| (v.as_str(), "x")).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    for (name, config) in [("as-shipped.toml", &text), ("uncommented.toml", &full)] {
        std::fs::write(dir.path().join(name), config).unwrap();
        let (code, out, err) =
            spur_with_env(dir.path(), &["check", "--config", name, "scripts"], &env);
        assert_eq!(
            (code, out.trim()),
            (0, "0 scripts OK, 0 handlers"),
            "{name}: {err}"
        );
    }
    // Without the token the file names, spur does not start.
    let (code, _, err) = spur(
        dir.path(),
        &["check", "--config", "as-shipped.toml", "scripts"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("admin.token: environment variable SPUR_ADMIN_TOKEN is not set"),
        "{err}"
    );
}

/// A tool with an input schema, and the command calling it.
const GREET: &str = r#"tool("greet", #{ input: #{ type: "object", properties: #{ name: #{ type: "string" } }, required: ["name"] } },
            |args| #{ greeting: `hello ${args.name}` });"#;
const RUN_GREET: [&str; 6] = [
    "run",
    "tools.rhai",
    "--tool",
    "greet",
    "--args",
    r#"{"name":"Ada"}"#,
];

#[test]
fn run_tool_calls_a_tool_offline_and_checks_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tools.rhai"),
        [
            GREET,
            r#"           tool("bad", #{ input: #{ type: "object", properties: #{ id: #{ pattern: "^u" } } } }, |args| 1);"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let (code, out, err) = spur(dir.path(), &RUN_GREET);
    assert_eq!(code, 1, "the bad tool is a load error: {out}{err}");
    assert!(
        err.contains("tools.rhai:3:12: tool(\"bad\"): input.properties.id.pattern: the keyword \"pattern\" is not supported"),
        "{out}{err}"
    );
    std::fs::write(dir.path().join("tools.rhai"), GREET).unwrap();
    let (code, out, err) = spur(dir.path(), &RUN_GREET);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(r#"result: {"greeting":"hello Ada"}"#), "{out}");
    let (code, _, err) = spur(dir.path(), &["run", "tools.rhai", "--tool", "greet"]);
    assert_ne!(code, 0);
    assert!(err.contains("arguments.name: is required"), "{err}");
}

#[test]
fn a_tool_result_that_breaks_its_output_schema_fails_the_call() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tools.rhai"),
        r#"tool("count", #{ output: #{ type: "object", properties: #{ n: #{ type: "integer" } }, required: ["n"] } },
            |args| #{ n: "three" });"#,
    )
    .unwrap();
    let (code, out, err) = spur(dir.path(), &["run", "tools.rhai", "--tool", "count"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("the tool's result does not match its output schema: result.n: expected integer, got string \"three\""),
        "{out}"
    );
}

#[test]
fn a_tool_name_registered_twice_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(scripts.join("a.rhai"), r#"tool("lookup", |args| 1);"#).unwrap();
    std::fs::write(scripts.join("b.rhai"), r#"tool("lookup", |args| 2);"#).unwrap();
    std::fs::write(scripts.join("c.rhai"), r#"tool("run_status", |args| 3);"#).unwrap();
    let (code, out, _) = spur(dir.path(), &["check", "scripts"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(r#"scripts/b.rhai:1:0: tool("lookup"): the tool is already registered by a"#),
        "{out}"
    );
    assert!(
        out.contains(
            r#"tool("run_status"): the tool name "run_status" is reserved for a built-in tool"#
        ),
        "{out}"
    );
}
