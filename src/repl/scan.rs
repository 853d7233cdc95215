//! Whether an input is finished: open brackets, strings and comments, or code the
//! parser says ends too early, continue on the next line.

use rhai::{Engine, LexError, ParseError, ParseErrorType, Scope};

use super::Completeness;

/// Whether `code` is ready to evaluate: brackets, strings and comments closed, and
/// the parser not stopped by the end of the input.
pub(crate) fn completeness(engine: &Engine, scope: &Scope, code: &str) -> Completeness {
    if is_open(code) {
        return Completeness::Open;
    }
    match engine.compile_with_scope(scope, code) {
        Err(e) if ends_early(&e, code) => Completeness::Unfinished,
        _ => Completeness::Complete,
    }
}

/// Whether the parser failed only because the input ended.
fn ends_early(err: &ParseError, code: &str) -> bool {
    match err.err_type() {
        ParseErrorType::UnexpectedEOF => true,
        // A "…" string left open on its line is a mistake, not a block.
        ParseErrorType::BadInput(LexError::UnterminatedString) => false,
        _ => {
            let pos = err.position();
            let Some(line) = pos.line() else {
                return false;
            };
            let trimmed = code.trim_end();
            let last_line = trimmed.lines().count().max(1);
            let last_len = trimmed.lines().last().map_or(0, |l| l.chars().count());
            line > last_line || (line == last_line && pos.position().is_some_and(|c| c > last_len))
        }
    }
}

/// Whether `code` ends inside an open bracket, string or block comment.
pub(crate) fn is_open(code: &str) -> bool {
    // `{ ( [` in code, '`' inside a template string, '$' for a `${` interpolation.
    let mut stack: Vec<char> = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if stack.last() == Some(&'`') {
            match c {
                '\\' => {
                    chars.next();
                }
                '`' => {
                    stack.pop();
                }
                '$' if chars.peek() == Some(&'{') => {
                    chars.next();
                    stack.push('$');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                // A string ends at its quote or at its line's end, unless the
                // line ends with `\` (continued).
                loop {
                    match chars.next() {
                        None => return false,
                        Some('\\') => {
                            if chars.next().is_none() {
                                return true;
                            }
                        }
                        Some('"' | '\n') => break,
                        Some(_) => {}
                    }
                }
            }
            '\'' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '\'' | '\n' => break,
                        _ => {}
                    }
                }
            }
            '`' => stack.push('`'),
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut depth = 1;
                while depth > 0 {
                    match chars.next() {
                        None => return true,
                        Some('*') if chars.peek() == Some(&'/') => {
                            chars.next();
                            depth -= 1;
                        }
                        Some('/') if chars.peek() == Some(&'*') => {
                            chars.next();
                            depth += 1;
                        }
                        Some(_) => {}
                    }
                }
            }
            '{' | '(' | '[' => stack.push(c),
            '}' | ')' | ']' => {
                let opener = match c {
                    '}' => '{',
                    ')' => '(',
                    _ => '[',
                };
                match stack.last() {
                    Some(&top) if top == opener || (c == '}' && top == '$') => {
                        stack.pop();
                    }
                    // A stray closer: let the parser report it.
                    _ => return false,
                }
            }
            _ => {}
        }
    }
    !stack.is_empty()
}
