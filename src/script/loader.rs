//! Loading a scripts dir: compile connector modules (stdlib, overridden by files of
//! the same name in the scripts dir, plus `lib/*.rhai`), then compile every handler
//! script and run its top level once to collect its handlers.
//!
//! A script that fails to compile or load is reported with file, line and column;
//! the others still load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::{Module, Scope};
use sha2::{Digest, Sha256};

use super::engine::{EngineOptions, build_engine};
use super::{Handler, Modules, Script, ScriptError, ScriptSet, registry, stdlib};

/// A source file to load.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Script or module name: the file stem.
    pub name: String,
    pub path: PathBuf,
    pub text: String,
}

/// Loads every `.rhai` file of `dir` (test files `*_test.rhai` excepted).
pub(crate) fn load_dir(dir: &Path, opts: &EngineOptions) -> ScriptSet {
    let (scripts, modules, mut errors) = read_dir(dir);
    let mut set = load_sources(scripts, modules, opts);
    errors.append(&mut set.errors);
    set.errors = errors;
    set
}

/// Reads a scripts dir into handler scripts and module files.
pub(crate) fn read_dir(dir: &Path) -> (Vec<SourceFile>, Vec<SourceFile>, Vec<ScriptError>) {
    let mut scripts = Vec::new();
    let mut modules = Vec::new();
    let mut errors = Vec::new();
    let mut read = |path: PathBuf, into_modules: bool| {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            return;
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let file = SourceFile { name, path, text };
                if into_modules || stdlib::is_module(&file.name) {
                    modules.push(file);
                } else {
                    scripts.push(file);
                }
            }
            Err(e) => errors.push(ScriptError {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    };
    for (sub, into_modules) in [(dir.to_path_buf(), false), (dir.join("lib"), true)] {
        let Ok(entries) = std::fs::read_dir(&sub) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension().is_some_and(|e| e == "rhai")
                    && !p
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .is_some_and(|s| s.ends_with("_test") || s.starts_with('.'))
            })
            .collect();
        paths.sort();
        for p in paths {
            read(p, into_modules);
        }
    }
    (scripts, modules, errors)
}

/// Compiles modules then scripts into a [`ScriptSet`].
pub fn load_sources(
    scripts: Vec<SourceFile>,
    module_files: Vec<SourceFile>,
    opts: &EngineOptions,
) -> ScriptSet {
    let mut errors = Vec::new();
    let (modules, module_sources) = compile_modules(&module_files, opts, &mut errors);
    let engine = build_engine(opts, &modules);
    let mut loaded = Vec::new();
    for file in scripts {
        match compile_script(&engine, file) {
            Ok(script) => loaded.push(Arc::new(script)),
            Err(mut e) => errors.append(&mut e),
        }
    }
    ScriptSet::new(loaded, modules, module_sources, errors)
}

/// Compiles one handler script and runs its top level to collect its handlers.
///
/// # Errors
/// Every problem, placed at file, line and column.
pub(crate) fn compile_script(
    engine: &rhai::Engine,
    file: SourceFile,
) -> Result<Script, Vec<ScriptError>> {
    let label = file.path.display().to_string();
    let mut ast = engine
        .compile(&file.text)
        .map_err(|e| vec![ScriptError::from_parse(&label, &e)])?;
    ast.set_source(label.as_str());
    registry::begin();
    let ran = engine.run_ast(&ast);
    let handlers = registry::finish();
    ran.map_err(|e| vec![ScriptError::from_eval(&label, &e)])?;
    let arity_errors = check_arity(&label, &ast, &handlers);
    if !arity_errors.is_empty() {
        return Err(arity_errors);
    }
    Ok(Script {
        name: file.name,
        path: file.path,
        hash: hash_source(&file.text),
        source: Arc::from(file.text),
        ast,
        handlers,
    })
}

/// The content hash runs are pinned to.
pub(crate) fn hash_source(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn compile_modules(
    files: &[SourceFile],
    opts: &EngineOptions,
    errors: &mut Vec<ScriptError>,
) -> (Modules, Vec<(String, String)>) {
    let mut plan: Vec<(String, String, &str, bool)> = stdlib::MODULES
        .iter()
        .map(|(name, text)| {
            (
                (*name).to_owned(),
                format!("stdlib/{name}.rhai"),
                *text,
                true,
            )
        })
        .collect();
    for f in files {
        let label = f.path.display().to_string();
        match plan.iter_mut().find(|(n, ..)| *n == f.name) {
            Some(slot) => *slot = (f.name.clone(), label, f.text.as_str(), false),
            None => plan.push((f.name.clone(), label, f.text.as_str(), false)),
        }
    }
    let mut modules: Vec<(String, Arc<Module>)> = Vec::new();
    let mut sources = Vec::new();
    for (name, label, text, builtin) in plan {
        let engine = build_engine(opts, &Arc::new(modules.clone()));
        match compile_module(&engine, &label, text) {
            Ok(m) => {
                modules.push((name, m));
                sources.push((label.clone(), label));
            }
            Err(e) => {
                errors.push(e);
                // A broken override falls back to the built-in module of that name.
                if let Some((_, text)) = stdlib::MODULES.iter().find(|(n, _)| *n == name)
                    && !builtin
                {
                    let fallback = format!("stdlib/{name}.rhai");
                    if let Ok(m) = compile_module(&engine, &fallback, text) {
                        modules.push((name, m));
                        sources.push((fallback.clone(), fallback));
                    }
                }
            }
        }
    }
    let sources = modules
        .iter()
        .zip(sources)
        .map(|((name, _), (label, _))| (name.clone(), label))
        .collect();
    (Arc::new(modules), sources)
}

fn compile_module(
    engine: &rhai::Engine,
    label: &str,
    text: &str,
) -> Result<Arc<Module>, ScriptError> {
    let mut ast = engine
        .compile(text)
        .map_err(|e| ScriptError::from_parse(label, &e))?;
    ast.set_source(label);
    let module = Module::eval_ast_as_new(Scope::new(), &ast, engine)
        .map_err(|e| ScriptError::from_eval(label, &e))?;
    Ok(module.into())
}

fn check_arity(label: &str, ast: &rhai::AST, handlers: &[Handler]) -> Vec<ScriptError> {
    let mut errors = Vec::new();
    for h in handlers {
        let name = h.func.fn_name();
        let Some(f) = ast.iter_functions().find(|f| f.name == name) else {
            continue;
        };
        let declared = f.params.len().saturating_sub(h.func.curry().len());
        let wanted = h.kind.arity();
        if declared != wanted {
            let what = if wanted == 1 {
                "1 argument (the event)".to_owned()
            } else {
                "2 arguments (the event and the value)".to_owned()
            };
            errors.push(ScriptError {
                file: label.to_owned(),
                line: h.line,
                column: 1,
                message: format!(
                    "{} handler must take {what}, this one takes {declared}",
                    h.key.split('#').next().unwrap_or_default()
                ),
            });
        }
    }
    errors
}
