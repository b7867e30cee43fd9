//! The house rules of `src/`, checked on the source itself (see `docs/architecture.md`,
//! "Layers"):
//! - imports run downward only: every `crate::<module>` a top-level module names is one the
//!   layer table below allows it (the table is a DAG, so there is no circle between modules);
//! - no file is longer than about 500 lines unless it says at its top why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and the modules it may import. Leaves (`oci`, `metrics`,
/// `memory`, `clock`) import nothing of berth; nothing imports `http` or `server`.
const LAYERS: &[(&str, &[&str])] = &[
    ("oci", &[]),
    ("metrics", &[]),
    ("memory", &[]),
    ("clock", &[]),
    ("config", &["oci"]),
    ("storage", &["oci", "metrics", "memory"]),
    ("cache", &["storage", "oci", "metrics", "memory"]),
    ("upstream", &["config", "oci", "metrics", "memory", "clock"]),
    ("auth", &["config", "oci", "metrics", "memory"]),
    ("bundle", &["upstream", "config", "oci"]),
    (
        "registry",
        &[
            "auth", "cache", "storage", "upstream", "config", "oci", "metrics", "memory", "clock",
        ],
    ),
    (
        "http",
        &[
            "registry", "auth", "cache", "upstream", "config", "oci", "metrics", "memory",
        ],
    ),
    (
        "server",
        &[
            "http", "registry", "auth", "cache", "storage", "upstream", "config", "oci", "metrics",
            "memory", "clock",
        ],
    ),
];

/// Lines a file may have without saying why it is longer.
const LONG_FILE: usize = 520;
/// What a longer file's opening comment says.
const LONG_FILE_REASON: &str = "Longer than 500 lines because";

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for the crate roots).
fn module_of(path: &Path) -> Option<String> {
    let relative = path.strip_prefix(src()).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let module = first.trim_end_matches(".rs");
    (!matches!(module, "lib" | "main")).then(|| module.to_owned())
}

/// The `crate::<module>` names in the code of `text` (comments, doc links included, are not
/// imports and are skipped), with their line numbers.
fn imports(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((number + 1, name));
            }
        }
        // `use crate::{a::X, b::{Y, Z}}` names several at once: the first component of each
        // top-level item of the group.
        if let Some(at) = code.find("crate::{") {
            let mut depth = 0;
            let mut item = String::new();
            for c in code[at + "crate::{".len()..].chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_first(&mut found, number + 1, &item);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            push_first(&mut found, number + 1, &item);
        }
    }
    found
}

fn push_first(found: &mut Vec<(usize, String)>, line: usize, item: &str) {
    let name = item.trim().split("::").next().unwrap_or_default();
    if !name.is_empty() {
        found.push((line, name.to_owned()));
    }
}

#[test]
fn imports_run_downward_only() {
    let table: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut violations = Vec::new();
    let mut modules_seen = 0;
    for path in &files {
        let Some(module) = module_of(path) else {
            continue;
        };
        modules_seen += 1;
        let Some(allowed) = table.get(module.as_str()) else {
            violations.push(format!(
                "{}: module {module} is not in the layer table of tests/layers.rs",
                path.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        for (line, imported) in imports(&text) {
            if imported != module && !allowed.contains(&imported.as_str()) {
                violations.push(format!(
                    "{}:{line}: {module} imports crate::{imported}",
                    path.display()
                ));
            }
        }
    }
    assert!(
        modules_seen > 50,
        "found only {modules_seen} files under src/"
    );
    assert!(
        violations.is_empty(),
        "imports against the layer rule:\n{}",
        violations.join("\n")
    );
}

/// The layer table itself has no circle: a module's allowed imports are all listed before it.
#[test]
fn the_layer_table_is_ordered() {
    for (at, (module, allowed)) in LAYERS.iter().enumerate() {
        for dependency in *allowed {
            let position = LAYERS.iter().position(|(m, _)| m == dependency);
            assert!(
                position.is_some_and(|p| p < at),
                "{module} may import {dependency}, which is not listed before it"
            );
        }
    }
}

#[test]
fn the_checker_sees_imports() {
    let text = "use crate::oci::Digest;\n// crate::http in a comment\nuse crate::{cache::{Cache, Fill}, storage};\nlet x = crate::metrics::inc(); // crate::server";
    let names: Vec<String> = imports(text).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["oci", "cache", "storage", "metrics"]);
}

#[test]
fn long_files_say_why() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let unexplained: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let lines = text.lines().count();
            let explained = text.lines().take(20).any(|l| l.contains(LONG_FILE_REASON));
            (lines > LONG_FILE && !explained).then(|| format!("{}: {lines} lines", path.display()))
        })
        .collect();
    assert!(
        unexplained.is_empty(),
        "files over {LONG_FILE} lines without \"{LONG_FILE_REASON} …\" at their top:\n{}",
        unexplained.join("\n")
    );
}
