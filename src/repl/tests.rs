use rhai::{Engine, Scope};

use super::editor::complete_name;
use super::scan::is_open;
use super::*;

fn engine() -> Engine {
    Engine::new()
}

fn check(code: &str) -> Completeness {
    completeness(&engine(), &Scope::new(), code)
}

#[test]
fn open_brackets_strings_and_comments_keep_reading() {
    assert!(is_open("fn f(x) {"));
    assert!(is_open("let a = [1,\n2"));
    assert!(is_open("foo("));
    assert!(is_open("let s = `a ${ b"));
    assert!(is_open("let s = `multi\nline"));
    assert!(is_open("/* comment"));
    assert!(!is_open("let m = #{ a: \"}\" };"));
    assert!(!is_open("let s = `${ #{a: 1}.a }`;"));
    assert!(!is_open("// { not code"));
    assert!(!is_open("x }"));
    assert!(!is_open("let c = '{';"));
}

#[test]
fn the_parser_decides_when_brackets_balance() {
    assert_eq!(check("1 + 2"), Completeness::Complete);
    assert_eq!(check("let x = 40;"), Completeness::Complete);
    assert_eq!(
        check("for i in 0..3 {\n print(i);\n}"),
        Completeness::Complete
    );
    assert_eq!(check("fn f() {"), Completeness::Open);
    assert_eq!(check("1 +"), Completeness::Unfinished);
    assert_eq!(check("let x ="), Completeness::Unfinished);
    assert_eq!(check("if x"), Completeness::Unfinished);
    // Wrong, not unfinished: evaluate to show the error.
    assert_eq!(check("let = 5;"), Completeness::Complete);
    assert_eq!(check("1 + + ;"), Completeness::Complete);
    assert_eq!(check("let s = \"no end"), Completeness::Complete);
    assert_eq!(check("let s = \"continued \\"), Completeness::Open);
}

#[test]
fn values_show_readably() {
    assert_eq!(show(&Dynamic::UNIT), None);
    assert_eq!(show(&Dynamic::from("hi")).as_deref(), Some("hi"));
    assert_eq!(show(&Dynamic::from_int(3)).as_deref(), Some("3"));
    assert_eq!(show(&Dynamic::from_bool(true)).as_deref(), Some("true"));
    let e = engine();
    let m: Dynamic = e.eval("#{ a: 1, b: [true] }").unwrap();
    assert_eq!(
        show(&m).unwrap(),
        "{\n  \"a\": 1,\n  \"b\": [\n    true\n  ]\n}"
    );
    // JSON cannot hold a function pointer: fall back to Display.
    let f: Dynamic = e.eval("[Fn(\"x\")]").unwrap();
    assert_eq!(show(&f).unwrap(), r#"[Fn("x")]"#);
}

#[test]
fn completion_knows_host_modules_stdlib_builtins_and_session_names() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nscripts_dir = {:?}\n",
        dir.path().display().to_string()
    );
    let cfg =
        crate::config::load_from_str(&text, None, &std::collections::BTreeMap::new()).unwrap();
    let mut repl = Repl::new(&cfg, false).unwrap();
    repl.eval("let zeta = 1; fn my_helper(x) { x }");
    let names = repl.names();
    let names = names.read();
    for n in [
        "http::post",
        "state::incr",
        "slack::post",
        "print",
        "uuid",
        "zeta",
        "my_helper",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }
    assert!(names.iter().all(|n| is_path(n)), "{names:?}");
}

#[test]
fn completion_takes_the_path_before_the_cursor() {
    let names: Vec<String> = ["http::get", "http::post", "hubspot::create", "print"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(
        complete_name(&names, "let r = http::p"),
        (8, vec!["http::post"])
    );
    assert_eq!(
        complete_name(&names, "h").1,
        vec!["http::get", "http::post", "hubspot::create"]
    );
    assert_eq!(complete_name(&names, "a(pri"), (2, vec!["print"]));
    assert!(complete_name(&names, "x + ").1.is_empty());
    assert!(is_path("slack::post"));
    assert!(!is_path("get$status"));
    assert!(!is_path("+"));
}
