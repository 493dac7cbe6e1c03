//! Nothing that runs while file systems are frozen may panic: a panic there
//! would leave the guard's deadline as the only thaw. This reads the sources
//! of the frozen path and fails on `.expect(`, `.unwrap()`, `panic!`,
//! `unreachable!`, `todo!`, `unimplemented!` outside `#[cfg(test)]`.
//!
//! Whole files: the run's machine and freeze stage, the guard's parent side,
//! the freeze gate, credentials and signing (every ECS call signs, and reads
//! the credentials). Single functions: the ECS client's path of the two calls
//! made while frozen, wherever under `src/cloud` they live (so moving them to
//! another file keeps them checked).

mod source_tree;

use source_tree::{rust_files, src};

/// Files every line of which may run while frozen (relative to `src/`);
/// a directory means every file under it.
const WHOLE: &[&str] = &[
    "job/machine",
    "job/freeze_stage.rs",
    "job/freeze_gate.rs",
    "host/handle.rs",
    "cloud/credentials.rs",
    "cloud/sign.rs",
];

/// Functions under `src/cloud` on the path of CreateSnapshotGroup and
/// DescribeSnapshotGroups (each must be found at least once).
const FUNCTIONS: &[&str] = &[
    "create_snapshot_group",
    "describe_snapshot_groups",
    "paged",
    "call",
    "attempt",
    "decode_error",
    "parse_retry_after",
];

const FORBIDDEN: &[&str] = &[
    ".expect(",
    ".unwrap()",
    "panic!(",
    "unreachable!(",
    "todo!(",
    "unimplemented!(",
];

/// The text before the file's test module, with `//` comments removed.
fn production_code(text: &str) -> String {
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `(line, text)` of each forbidden call in `code`, numbered from `first_line`.
fn violations(code: &str, first_line: usize) -> Vec<(usize, String)> {
    code.lines()
        .enumerate()
        .filter(|(_, l)| FORBIDDEN.iter().any(|f| l.contains(f)))
        .map(|(i, l)| (first_line + i, l.trim().to_string()))
        .collect()
}

/// The bodies of every `fn name` in `code`: `(line of the fn, body)`.
fn function_bodies(code: &str, name: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let needle = format!("fn {name}");
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle) {
        let start = from + at;
        from = start + needle.len();
        // A whole name only: `fn call(` or `fn call<`, not `fn caller(`.
        if !matches!(code[from..].chars().next(), Some('(' | '<')) {
            continue;
        }
        let Some(open) = code[from..].find('{').map(|i| from + i) else {
            continue;
        };
        let mut depth = 0usize;
        let mut end = open;
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let line = code[..start].lines().count().max(1);
        out.push((line, code[start..=end].to_string()));
    }
    out
}

#[test]
fn nothing_on_the_frozen_path_can_panic() {
    let root = src();
    let mut found = Vec::new();
    for rel in WHOLE {
        let p = root.join(rel);
        let mut files = Vec::new();
        if p.is_dir() {
            rust_files(&p, &mut files);
        } else {
            assert!(
                p.is_file(),
                "{} is gone: update WHOLE to where its code lives now",
                p.display()
            );
            files.push(p);
        }
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (line, l) in violations(&production_code(&text), 1) {
                found.push(format!("{}:{line}: {l}", f.display()));
            }
        }
    }
    let mut cloud = Vec::new();
    rust_files(&root.join("cloud"), &mut cloud);
    for name in FUNCTIONS {
        let mut seen = false;
        for f in &cloud {
            let code = production_code(&std::fs::read_to_string(f).unwrap());
            for (line, body) in function_bodies(&code, name) {
                seen = true;
                for (l, text) in violations(&body, line) {
                    found.push(format!("{}:{l} (in fn {name}): {text}", f.display()));
                }
            }
        }
        assert!(
            seen,
            "fn {name} is no longer under src/cloud: update FUNCTIONS"
        );
    }
    assert!(
        found.is_empty(),
        "may panic while file systems are frozen:\n{}",
        found.join("\n")
    );
}

/// The scanner itself finds what it must, and only in production code.
#[test]
fn the_scanner_sees_a_panic_and_ignores_tests_and_comments() {
    let code = "fn call(x: Option<u8>) -> u8 {\n    // x.unwrap() in a comment\n    let y = x.unwrap_or(0);\n    x.expect(\"set\")\n}\nfn caller() { panic!(\"no\") }\n#[cfg(test)]\nmod tests { fn t() { None::<u8>.unwrap(); } }\n";
    let prod = production_code(code);
    let v = violations(&prod, 1);
    assert_eq!(
        v,
        vec![
            (4, "x.expect(\"set\")".to_string()),
            (6, "fn caller() { panic!(\"no\") }".to_string())
        ]
    );
    let bodies = function_bodies(&prod, "call");
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(violations(&bodies[0].1, bodies[0].0).len(), 1);
    assert!(function_bodies(&prod, "cal").is_empty());
}
