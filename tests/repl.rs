//! `spur repl` through the real binary: values and persistent variables, dry-run
//! calls shown and not sent, `--live` through a configured connection, multi-line
//! blocks, the `:` commands and errors that do not end the session; and one session
//! in a pseudo-terminal (line editing, Tab completion, history).
//! Run with: cargo nextest run --test repl

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use spur::testing::FakeHttp;

/// Runs `spur ARGS` in `cwd` with `input` piped to stdin; returns (status, stdout, stderr).
fn repl(cwd: &Path, args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spur"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    // Written from a thread so a large output can never block the writer.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn repl_async(cwd: &Path, args: &[&str], input: &str) -> (i32, String, String) {
    let cwd = cwd.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let input = input.to_owned();
    tokio::task::spawn_blocking(move || {
        repl(
            &cwd,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &input,
        )
    })
    .await
    .unwrap()
}

#[test]
fn evaluates_expressions_and_keeps_variables_between_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = repl(
        dir.path(),
        &["repl"],
        "1 + 2\nlet x = 40;\nx + 2\n\"plain text\"\n#{ a: 1, b: [true] }\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out, "3\n42\nplain text\n{\n  \"a\": 1,\n  \"b\": [\n    true\n  ]\n}\n",
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_shows_calls_and_sends_nothing() {
    let fake = FakeHttp::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let input = format!(
        "let r = http::post(\"{}/x\", #{{ a: 1 }});\n:calls\nr.status\n",
        fake.base_url
    );
    let (code, out, err) = repl_async(dir.path(), &["repl"], &input).await;
    assert_eq!(code, 0, "{out}{err}");
    let shown = format!("  → POST {}/x (dry run)\n    {{\"a\":1}}\n", fake.base_url);
    // Printed after the input, `:calls` repeats it, the recorder answered.
    assert_eq!(out, format!("{shown}{shown}200\n"), "{err}");
    assert!(fake.received().is_empty(), "{:?}", fake.received());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sends_through_the_configured_connection() {
    let mut fake =
        FakeHttp::start(|_| spur::testing::Reply::json(201, &json!({ "id": "it_1" }))).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("live.toml"),
        format!(
            "[connections.svc]\nbase_url = \"{}\"\nbearer = \"tok-live\"\n",
            fake.base_url
        ),
    )
    .unwrap();
    let input = "let r = http::request(#{ connection: \"svc\", method: \"POST\", path: \"/items\", json: #{ n: 1 } });\nr.json.id\n";
    let (session, req) = tokio::join!(
        repl_async(
            dir.path(),
            &["--config", "live.toml", "repl", "--live"],
            input
        ),
        fake.next(5)
    );
    let (code, out, err) = session;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/items");
    assert_eq!(req.header("authorization"), Some("Bearer tok-live"));
    assert_eq!(req.json, Some(json!({ "n": 1 })));
    assert!(
        out.contains(&format!("→ POST {}/items 201", fake.base_url)),
        "{out}"
    );
    assert!(out.ends_with("it_1\n"), "{out}");
    assert!(!out.contains("dry run"), "{out}");
    assert!(!out.contains("tok-live"), "{out}");
}

#[test]
fn multi_line_blocks_evaluate_once_complete() {
    let dir = tempfile::tempdir().unwrap();
    let input = "\
fn triple(n) {
    n * 3
}
triple(5)
let total = 0;
for i in [1, 2, 3] {
    total += i;
}
total
let sum = 1 +
    2;
sum
#{
    nested: `${triple(1)}`
}
let broken = 1 +

broken
";
    let (code, out, err) = repl(dir.path(), &["repl"], input);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["15", "6", "3"], "{out}");
    assert_eq!(&lines[3..6], ["{", "  \"nested\": \"3\"", "}"], "{out}");
    // An unfinished line ends at an empty line and reports the error; the
    // variable was never defined.
    assert!(lines[6].starts_with("error: "), "{out}");
    assert!(
        lines[7].starts_with("error: Variable not found: broken"),
        "{out}"
    );
    assert_eq!(lines.len(), 8, "{out}");
}

const HOOK: &str = r#"
on_track("Signup", |e| {
    log::info(`welcome ${e.userId}`);
    http::post("https://hooks.invalid/welcome", #{ user: e.userId });
});
on_identify(|e| { state::incr("identified"); });
"#;

#[test]
fn commands_load_fire_and_help_and_errors_do_not_end_the_session() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hook.rhai"), HOOK).unwrap();
    let input = r#":help
:load hook.rhai
:event {"type": "track", "event": "Signup", "userId": "ada"}
:calls
:event {"type": "track"}
nosuch(1)
let after = "still here";
after
:quit
40 + 2
"#;
    let (code, out, err) = repl(dir.path(), &["repl"], input);
    assert_eq!(code, 0, "{out}{err}");
    // :help lists the commands and the host and connector modules.
    for c in [":help", ":load", ":event", ":calls", ":quit"] {
        assert!(out.contains(&format!("\n  {c}")), "{c} in {out}");
    }
    for m in ["http", "state", "segment", "approval", "slack", "hubspot"] {
        assert!(out.contains(&format!("\n  {m} ")), "{m} in {out}");
    }
    assert!(out.contains("post, put, request"), "{out}");
    // :load registers the handlers and fires a sample at each kind.
    assert!(
        out.contains(
            "loaded hook.rhai: 2 handler(s) — hook · on_track(Signup)#0, hook · on_identify#0"
        ),
        "{out}"
    );
    assert!(out.contains("▶ track \"Signup\" · user usr_"), "{out}");
    assert!(out.contains("✔ hook · on_track(Signup)#0 · ok"), "{out}");
    assert!(out.contains("▶ identify · user "), "{out}");
    assert!(out.contains("✔ hook · on_identify#0 · ok"), "{out}");
    // :event with inline JSON runs the matching handler and prints the run.
    let fired = out
        .split("▶ track \"Signup\" · user ada")
        .nth(1)
        .unwrap_or_else(|| panic!("no run for ada in {out}"));
    assert!(fired.contains("  [info] welcome ada\n"), "{out}");
    assert!(
        fired
            .contains("  → POST https://hooks.invalid/welcome (dry run)\n    {\"user\":\"ada\"}\n"),
        "{out}"
    );
    // :calls repeats them.
    let after_calls = fired.split("{\"user\":\"ada\"}\n").nth(1).unwrap();
    assert!(
        after_calls.starts_with("  → POST https://hooks.invalid/welcome (dry run)"),
        "{out}"
    );
    // Bad input and errors are reported, and the session goes on until :quit.
    assert!(out.contains("error: event 0: track requires "), "{out}");
    assert!(
        out.contains("error: Function not found: nosuch (i64) (1:1)\n"),
        "{out}"
    );
    assert!(out.ends_with("still here\n"), "{out}");
    assert!(!out.contains("\n42\n"), "nothing runs after :quit: {out}");
}

/// Reads a child's output on a thread and waits for text to appear in it.
struct Screen {
    rx: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Screen {
    #[track_caller]
    fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.seen.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(bytes) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(e) => panic!("waiting for {text:?} ({e}); got:\n{}", self.seen),
            }
        }
        // Later expectations look only at what comes after.
        let at = self.seen.find(text).unwrap() + text.len();
        self.seen.drain(..at);
    }

    /// Waits until the line editor has taken a line (it then leaves bracketed-paste
    /// mode) and prompts with `prompt` again: keys sent earlier could be read in the
    /// same chunk as the previous line and dropped with it.
    #[track_caller]
    fn next_prompt(&mut self, prompt: &str) {
        self.expect("\x1b[?2004l");
        self.expect(prompt);
    }
}

#[test]
fn a_terminal_session_edits_completes_continues_and_keeps_history() {
    // `script` (util-linux) runs the REPL in a pseudo-terminal.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command for a pseudo-terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let command = format!("{} repl", env!("CARGO_BIN_EXE_spur"));
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .current_dir(dir.path())
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut send = |keys: &str| {
        stdin.write_all(keys.as_bytes()).unwrap();
        stdin.flush().unwrap();
    };
    let mut screen = Screen {
        rx,
        seen: String::new(),
    };
    screen.expect("dry run: calls are recorded, not sent");
    screen.expect("spur> ");
    send("let zeta_count = 41;\r");
    screen.next_prompt("spur> ");
    // Tab completes a variable and a module function.
    send("zeta_c\t + 1\r");
    screen.expect("42\r\n");
    screen.expect("spur> ");
    send("slack::po\t(\"#t\", \"hi\").ok\r");
    screen.expect("→ POST https://slack.invalid/chat.postMessage (dry run)");
    screen.expect("true\r\n");
    screen.expect("spur> ");
    // An open block continues with the continuation prompt.
    send("fn twice(x) {\r");
    screen.next_prompt("...   ");
    send("x * 2\r");
    screen.next_prompt("...   ");
    send("}\r");
    screen.next_prompt("spur> ");
    send("twice(21) + 100\r");
    screen.expect("142\r\n");
    screen.expect("spur> ");
    send(":q\r");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let history = std::fs::read_to_string(dir.path().join(".spur/repl_history")).unwrap();
    assert!(history.contains("zeta_count + 1"), "{history}");
    assert!(history.contains("fn twice(x) {"), "{history}");
}
