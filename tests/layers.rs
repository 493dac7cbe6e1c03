//! The layering ARCHITECTURE promises, checked on the source text so that a
//! back edge fails the build's tests instead of waiting for a reviewer:
//! `cloud/`, `host/` and `policy/` never name `job`, `daemon` or `schedule`;
//! `policy/` names only the leaf `securefs`, which names nothing; and no
//! module names another that names it back, between the top-level modules or
//! between the files of one directory module.
//!
//! A reference is any `crate::name` (and, inside a directory module,
//! `super::name` for a sibling file), comments included: the same text the
//! issue's `grep` reads, so a doc link that points up a layer counts too.

mod source_tree;

use std::collections::{BTreeMap, BTreeSet};

use source_tree::{rust_files, src};

/// The library's source files with their module path split in parts
/// (`src/cloud/ecs/mod.rs` -> `["cloud", "ecs"]`); the binary's own
/// `main.rs` and `cli/` are not part of the library's layers.
fn library() -> Vec<(Vec<String>, String)> {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|l| l == "mod") {
            parts.pop();
        }
        if parts == ["main"] || parts == ["lib"] || parts.first().is_some_and(|p| p == "cli") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        out.push((parts, text));
    }
    out
}

/// The identifiers that follow `prefix` in `text` (`crate::job::x` -> `job`).
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        // `$crate::` or `foo_crate::` are not this crate's paths.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// Edges between top-level modules: `a -> b` when a file of `a` names `crate::b`.
fn top_level_edges(lib: &[(Vec<String>, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let tops: BTreeSet<String> = lib.iter().map(|(p, _)| p[0].clone()).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in lib {
        for n in names_after(text, "crate::") {
            if n != path[0] && tops.contains(&n) {
                edges.entry(path[0].clone()).or_default().insert(n);
            }
        }
    }
    edges
}

/// Edges between the files directly inside directory module `dir`
/// (`cloud`): a file of child `a` (or of its own subdirectory) naming
/// `crate::cloud::b` or, from a direct child, `super::b`.
fn child_edges(lib: &[(Vec<String>, String)], dir: &str) -> BTreeMap<String, BTreeSet<String>> {
    let children: BTreeSet<String> = lib
        .iter()
        .filter(|(p, _)| p.len() >= 2 && p[0] == dir)
        .map(|(p, _)| p[1].clone())
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in lib.iter().filter(|(p, _)| p.len() >= 2 && p[0] == dir) {
        let mut named = names_after(text, &format!("crate::{dir}::"));
        if path.len() == 2 {
            named.extend(names_after(text, "super::"));
        }
        for n in named {
            if n != path[1] && children.contains(&n) {
                edges.entry(path[1].clone()).or_default().insert(n);
            }
        }
    }
    edges
}

/// A cycle in `edges`, as the path that closes it, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn cloud_host_and_policy_never_name_the_layers_above() {
    let lib = library();
    let mut found = Vec::new();
    for (path, text) in &lib {
        if !["cloud", "host", "policy"].contains(&path[0].as_str()) {
            continue;
        }
        for n in names_after(text, "crate::") {
            if [
                "job",
                "daemon",
                "schedule",
                "retention",
                "cli",
                "notify",
                "metrics",
                "alerts",
            ]
            .contains(&n.as_str())
            {
                found.push(format!("{} names crate::{n}", path.join("::")));
            }
        }
    }
    assert!(found.is_empty(), "back edges:\n{}", found.join("\n"));
}

/// Telling the operator sits above the run: a run never waits on a sink,
/// so `job` (and the layers below it) never name `notify`, `metrics` or
/// `alerts`; the daemon and the CLI call them after the run.
#[test]
fn the_run_never_names_what_tells_the_operator() {
    let lib = library();
    let mut found = Vec::new();
    for (path, text) in &lib {
        if !["job", "schedule", "state", "logging", "securefs", "owner"].contains(&path[0].as_str())
        {
            continue;
        }
        for n in names_after(text, "crate::") {
            if ["notify", "metrics", "alerts"].contains(&n.as_str()) {
                found.push(format!("{} names crate::{n}", path.join("::")));
            }
        }
    }
    assert!(found.is_empty(), "back edges:\n{}", found.join("\n"));
}

#[test]
fn policy_names_only_the_leaf_securefs_and_securefs_names_nothing() {
    let lib = library();
    let edges = top_level_edges(&lib);
    let policy = edges.get("policy").cloned().unwrap_or_default();
    let beyond: Vec<_> = policy.iter().filter(|n| *n != "securefs").collect();
    assert!(beyond.is_empty(), "policy/ names {beyond:?}");
    assert_eq!(
        edges.get("securefs"),
        None,
        "securefs must stay a leaf every layer can use"
    );
}

#[test]
fn no_module_names_one_that_names_it_back() {
    let lib = library();
    let top = top_level_edges(&lib);
    assert_eq!(find_cycle(&top), None, "top-level modules: {top:?}");
    let dirs: BTreeSet<String> = lib
        .iter()
        .filter(|(p, _)| p.len() >= 2)
        .map(|(p, _)| p[0].clone())
        .collect();
    for d in dirs {
        let e = child_edges(&lib, &d);
        assert_eq!(find_cycle(&e), None, "files of {d}/: {e:?}");
    }
}

#[test]
fn the_checks_see_edges_and_cycles() {
    // The scanners find what they look for, so the tests above can fail.
    let n = names_after(
        "use crate::job::x; $crate::no; my_crate::no; crate::cloud",
        "crate::",
    );
    assert_eq!(n, ["cloud", "job"].iter().map(|s| s.to_string()).collect());
    let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    e.entry("a".into()).or_default().insert("b".into());
    assert_eq!(find_cycle(&e), None);
    e.entry("b".into()).or_default().insert("a".into());
    assert!(find_cycle(&e).is_some());
    // And the library is really read: the job layer names the cloud.
    assert!(top_level_edges(&library())["job"].contains("cloud"));
}
