//! Where inputs come from (a rustyline editor on a terminal, plain stdin otherwise)
//! and the editor's glue: completion of names and commands, history.

use std::borrow::Cow;
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Editor};

use super::{COMMANDS, HISTORY_FILE, Names};

/// What reading a line gave.
pub(super) enum Read {
    Line(String),
    /// Ctrl-C: drop the input so far.
    Interrupted,
    Eof,
}

/// Where inputs come from: a line editor on a terminal, or plain stdin.
pub(super) enum Lines {
    Editor {
        editor: Box<Editor<ReplHelper, DefaultHistory>>,
        history: PathBuf,
    },
    Plain(std::io::StdinLock<'static>),
}

impl Lines {
    /// A line editor with completion from `names` and history in `data_dir`
    /// (plain stdin when the terminal cannot be driven).
    pub(super) fn editor(names: Names, data_dir: &Path) -> Self {
        let builder = rustyline::Config::builder()
            .completion_type(CompletionType::List)
            .auto_add_history(false)
            .bracketed_paste(true);
        let config = builder
            .clone()
            .max_history_size(1000)
            .unwrap_or(builder)
            .build();
        let Ok(mut editor) = Editor::<ReplHelper, DefaultHistory>::with_config(config) else {
            return Self::Plain(std::io::stdin().lock());
        };
        editor.set_helper(Some(ReplHelper {
            names,
            files: FilenameCompleter::new(),
        }));
        let _ = std::fs::create_dir_all(data_dir);
        let history = data_dir.join(HISTORY_FILE);
        let _ = editor.load_history(&history);
        Self::Editor {
            editor: Box::new(editor),
            history,
        }
    }

    pub(super) fn read(&mut self, prompt: &str) -> Read {
        match self {
            Self::Editor { editor, .. } => match editor.readline(prompt) {
                Ok(line) => Read::Line(line),
                Err(ReadlineError::Interrupted) => Read::Interrupted,
                Err(ReadlineError::Eof) => Read::Eof,
                Err(e) => {
                    eprintln!("error: reading input: {e}");
                    Read::Eof
                }
            },
            Self::Plain(stdin) => {
                let _ = std::io::stdout().flush();
                let mut line = String::new();
                match stdin.read_line(&mut line) {
                    Ok(0) => Read::Eof,
                    Ok(_) => {
                        let end = line.trim_end_matches(['\n', '\r']).len();
                        line.truncate(end);
                        Read::Line(line)
                    }
                    Err(e) => {
                        eprintln!("error: reading input: {e}");
                        Read::Eof
                    }
                }
            }
        }
    }

    /// Adds a finished input to the history.
    pub(super) fn remember(&mut self, entry: &str) {
        if let Self::Editor { editor, .. } = self {
            let _ = editor.add_history_entry(entry);
        }
    }

    /// Saves the history.
    pub(super) fn close(&mut self) {
        if let Self::Editor { editor, history } = self {
            let _ = editor.save_history(history);
        }
    }
}

/// Tab completion of commands, `module::fn` names, functions and variables, and
/// file paths after `:load` and `:event`.
pub(super) struct ReplHelper {
    names: Names,
    files: FilenameCompleter,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        if before.trim_start().starts_with(':') {
            if before.trim_start().contains(char::is_whitespace) {
                return self.files.complete(line, pos, ctx);
            }
            let start = before.len() - before.trim_start().len();
            let word = before.trim_start();
            let pairs = COMMANDS
                .iter()
                .flat_map(|(c, _)| c.split(", "))
                .filter_map(|c| c.split(' ').next())
                .filter(|c| c.starts_with(word))
                .map(pair)
                .collect();
            return Ok((start, pairs));
        }
        let names = self.names.read();
        let (start, found) = complete_name(&names, before);
        Ok((start, found.into_iter().map(pair).collect()))
    }
}

pub(super) fn pair(text: &str) -> Pair {
    Pair {
        display: text.to_owned(),
        replacement: text.to_owned(),
    }
}

/// Completes the name (an identifier or `module::fn` path) that ends `before`:
/// where it starts, and the `names` it may become.
pub(crate) fn complete_name<'a>(names: &'a [String], before: &str) -> (usize, Vec<&'a str>) {
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == ':'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let word = &before[start..];
    if word.is_empty() {
        return (start, Vec::new());
    }
    let found = names
        .iter()
        .filter(|n| n.starts_with(word))
        .map(String::as_str)
        .collect();
    (start, found)
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        Cow::Borrowed(line)
    }
}

impl Validator for ReplHelper {}

impl rustyline::Helper for ReplHelper {}
