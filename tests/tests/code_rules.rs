//! Rules of the code that no compiler lint checks here.
//!
//! **No import circle.** The crates' modules import one another downward only.
//! Each source file is a module. A `crate::a::b` or `super::…` path in one
//! module (comments and `#[cfg(test)] mod tests` left out) is an arrow to the
//! longest module that path names. Arrows between a module and its own
//! ancestors or descendants (a parent re-exporting its children) do not
//! count. Every other arrow is lifted to the two sibling subtrees it joins
//! (`config::delta → compiled` is `config → compiled`), and the siblings'
//! graph must have no cycle.
//!
//! **A SAFETY comment on every unsafe block of the eBPF crate.** Clippy's
//! `undocumented_unsafe_blocks` checks the host crates; the eBPF crate is built
//! with Debian's toolchain, which has no clippy, so this test reads it instead.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

type Module = Vec<String>;

/// Every `.rs` file under `src`, by module path.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(src)
                    .expect("under src")
                    .with_extension("");
                let mut module: Module = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    module.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    module.pop();
                }
                found.insert(module, path);
            }
        }
    }
    found
}

/// The source without comments and without the trailing test module.
fn code(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    for line in source.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The module paths that `crate::` and `super::` paths in `source` name, as
/// written from `module` (a use tree's braces are expanded one level deep).
fn referenced(module: &Module, source: &str) -> Vec<Module> {
    let code = code(source);
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find(['c', 's']) {
        let before_ok = !rest[..at].ends_with(|c: char| is_word(c) || c == ':');
        rest = &rest[at..];
        let base = if rest.starts_with("crate::") {
            Some(Vec::new())
        } else if rest.starts_with("super::") {
            Some(module[..module.len().saturating_sub(1)].to_vec())
        } else {
            None
        };
        let Some(mut start) = base.filter(|_| before_ok) else {
            rest = &rest[1..];
            continue;
        };
        let end = rest
            .find(|c: char| {
                !(is_word(c) || c == ':' || c == '{' || c == '}' || c == ',' || c == ' ')
            })
            .unwrap_or(rest.len());
        let text = &rest[..end];
        rest = &rest[end..];
        let (head, tree) = match text.find('{') {
            Some(i) => (&text[..i], Some(&text[i + 1..])),
            None => (text, None),
        };
        let mut parts: Vec<&str> = head.split("::").filter(|p| !p.is_empty()).collect();
        parts.remove(0); // crate or super
        while parts.first() == Some(&"super") {
            parts.remove(0);
            start.pop();
        }
        start.extend(parts.iter().map(|p| p.trim().to_string()));
        paths.push(start.clone());
        for item in tree.into_iter().flat_map(|t| t.split(',')) {
            let item: Vec<String> = item
                .split("::")
                .map(|p| p.trim().trim_matches(|c| c == '{' || c == '}').to_string())
                .filter(|p| !p.is_empty() && p != "self")
                .collect();
            if !item.is_empty() {
                paths.push(start.iter().cloned().chain(item).collect());
            }
        }
    }
    paths
}

/// Arrows between sibling subtrees: (from, to) → an example file-level arrow.
fn sibling_arrows(src: &Path) -> BTreeMap<(Module, Module), (Module, Module)> {
    let all = modules(src);
    let mut arrows = BTreeMap::new();
    for (module, path) in &all {
        let source = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for target in referenced(module, &source) {
            let Some(to) = (1..=target.len())
                .rev()
                .map(|n| target[..n].to_vec())
                .find(|m| all.contains_key(m))
            else {
                continue;
            };
            if to.starts_with(module) || module.starts_with(&to) {
                continue;
            }
            let common = module.iter().zip(&to).take_while(|(a, b)| a == b).count();
            let key = (module[..=common].to_vec(), to[..=common].to_vec());
            arrows.entry(key).or_insert((module.clone(), to));
        }
    }
    arrows
}

/// Every cycle's members (strongly connected sets of more than one module).
fn circles(arrows: &BTreeMap<(Module, Module), (Module, Module)>) -> Vec<BTreeSet<Module>> {
    let nodes: BTreeSet<&Module> = arrows.keys().flat_map(|(a, b)| [a, b]).collect();
    let reach = |from: &Module| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for (a, b) in arrows.keys() {
                if *a == m && seen.insert(b.clone()) {
                    todo.push(b.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&Module, BTreeSet<Module>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut found: Vec<BTreeSet<Module>> = Vec::new();
    for n in &nodes {
        let set: BTreeSet<Module> = nodes
            .iter()
            .filter(|m| reachable[*n].contains(**m) && reachable[**m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        if set.len() > 1 && !found.contains(&set) {
            found.push(set);
        }
    }
    found
}

fn describe(
    arrows: &BTreeMap<(Module, Module), (Module, Module)>,
    set: &BTreeSet<Module>,
) -> String {
    let mut lines = Vec::new();
    for ((a, b), (from, to)) in arrows {
        if set.contains(a) && set.contains(b) {
            lines.push(format!("  {} -> {}", from.join("::"), to.join("::")));
        }
    }
    lines.join("\n")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut report = Vec::new();
    for krate in [
        "gateway-user",
        "gateway-common",
        "gateway-ebpf",
        "tests",
        "xtask",
    ] {
        let src = workspace().join(krate).join("src");
        let arrows = sibling_arrows(&src);
        assert!(
            krate != "gateway-user" || arrows.len() > 20,
            "only {} arrows in gateway-user: the scan is broken",
            arrows.len()
        );
        for set in circles(&arrows) {
            report.push(format!("{krate}: circle\n{}", describe(&arrows, &set)));
        }
    }
    assert!(report.is_empty(), "import circles:\n{}", report.join("\n"));
}

#[test]
fn the_scan_finds_a_planted_circle() {
    let dir = std::env::temp_dir().join(format!("module-graph-{}", std::process::id()));
    fs::create_dir_all(dir.join("a")).unwrap();
    fs::write(dir.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    fs::write(
        dir.join("a/mod.rs"),
        "mod inner;\n// use crate::b; (a comment)\n",
    )
    .unwrap();
    fs::write(dir.join("a/inner.rs"), "use crate::{b::Thing, c};\n").unwrap();
    fs::write(dir.join("b.rs"), "pub struct Thing(super::a::X);\n").unwrap();
    let arrows = sibling_arrows(&dir);
    let found = circles(&arrows);
    fs::remove_dir_all(&dir).unwrap();
    let names: Vec<Vec<String>> = found
        .iter()
        .map(|s| s.iter().map(|m| m.join("::")).collect())
        .collect();
    assert_eq!(
        names,
        vec![vec!["a".to_string(), "b".to_string()]],
        "{arrows:?}"
    );
}

/// The `unsafe` blocks and impls in `source` with no `SAFETY:` comment in the
/// lines just above them (a comment may sit above a multi-line statement).
fn undocumented_unsafe(source: &str) -> Vec<usize> {
    let lines: Vec<&str> = source.lines().collect();
    let opens_unsafe = |line: &str| {
        let code = line.split("//").next().unwrap_or("");
        code.contains("unsafe {") || code.contains("unsafe impl")
    };
    (0..lines.len())
        .filter(|&i| opens_unsafe(lines[i]))
        .filter(|&i| {
            !lines[i.saturating_sub(6)..=i]
                .iter()
                .any(|l| l.contains("SAFETY:"))
        })
        .map(|i| i + 1)
        .collect()
}

#[test]
fn every_unsafe_block_of_the_ebpf_crate_says_why_it_is_safe() {
    let src = workspace().join("gateway-ebpf/src");
    let mut missing = Vec::new();
    let mut seen = 0;
    for path in modules(&src).into_values() {
        let source =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += source.matches("unsafe {").count();
        missing.extend(
            undocumented_unsafe(&source)
                .into_iter()
                .map(|line| format!("{}:{line}", path.display())),
        );
    }
    assert!(
        seen > 20,
        "only {seen} unsafe blocks found: the scan is broken"
    );
    assert!(
        missing.is_empty(),
        "unsafe without a SAFETY comment:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_unsafe_scan_finds_a_bare_block() {
    let source = "fn a() {\n    // SAFETY: fine.\n    unsafe { x() };\n}\n\n\n\n\n\n\nfn b() {\n    unsafe { y() };\n}\n";
    assert_eq!(undocumented_unsafe(source), vec![12]);
}
