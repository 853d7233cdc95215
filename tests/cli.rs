//! The command line through the real binary: `spur check`, configuration errors, and
//! the loopback guard. Run with: cargo nextest run --test cli

use std::process::Command;

fn spur(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spur"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
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
