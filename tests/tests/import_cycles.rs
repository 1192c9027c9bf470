//! The workspace's modules import each other without circles: read from the `use` lines and the
//! `crate::`/`super::` paths of every crate's source, each file one module.
//!
//! A module may use its ancestors' items (the `Daemon` in `cri/mod.rs`) and a module declares and
//! calls its own children; neither makes a circle. Any other path from a module back to itself
//! does: two modules that need each other share a piece that belongs below both.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path inside its crate: `["cri", "container", "status"]`; the crate root is empty.
type Module = Vec<String>;

/// Circles left on purpose, as `crate: a, b` with the modules sorted. Each must still exist (the
/// list cannot go stale).
const KNOWN: &[&str] = &[];

#[test]
fn no_module_imports_itself_through_others() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut found = BTreeSet::new();
    for krate in [
        "agent",
        "bench",
        "cni",
        "cri-api",
        "runtime",
        "sys",
        "test-support",
        "tests",
    ] {
        for (dir, root_file) in crate_roots(&workspace.join(krate)) {
            let modules = modules(&dir, &root_file);
            let edges = edges(&modules);
            for circle in circles(&edges) {
                let names: Vec<String> = circle.iter().map(|m| m.join("/")).collect();
                found.insert(format!("{krate}: {}", names.join(", ")));
            }
        }
    }
    let known: BTreeSet<String> = KNOWN.iter().map(|s| s.to_string()).collect();
    let new: Vec<&String> = found.difference(&known).collect();
    let gone: Vec<&String> = known.difference(&found).collect();
    assert!(new.is_empty(), "import circles: {new:#?}");
    assert!(
        gone.is_empty(),
        "circles in KNOWN that no longer exist: {gone:#?}"
    );
}

#[test]
fn the_reader_sees_the_circles_it_should() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    let write = |p: &str, s: &str| std::fs::write(src.join(p), s).unwrap();
    write(
        "lib.rs",
        "mod a;\nmod b;\nmod c;\nmod d;\nmod e;\npub struct Root;\n",
    );
    write("a/mod.rs", "mod x;\nmod y;\nuse x::X;\n");
    // A child using its parent and its parent's other child: no circle.
    write("a/x.rs", "use super::{y::Y, Root2};\npub struct X;\n");
    write("a/y.rs", "use crate::Root;\npub struct Y;\n");
    // b and c need each other, one through a `use` group, one through an inline path.
    write(
        "b.rs",
        "use crate::{c::{self, C}, Root};\n// crate::a::x is only mentioned\n",
    );
    write(
        "c.rs",
        "pub struct C;\nfn f() { crate::b::g(\"crate::a::y\") }\n#[cfg(test)]\nmod tests {\n    use crate::a::x::X;\n}\n",
    );
    // A circle through a parent: d's child v needs e, which needs d.
    std::fs::create_dir_all(src.join("d")).unwrap();
    write("d/mod.rs", "mod v;\npub struct D;\n");
    write("d/v.rs", "use crate::e::E;\n");
    write("e.rs", "use crate::d::D;\npub struct E;\n");
    let m = modules(&src, "lib.rs");
    let e = edges(&m);
    let c: Vec<Vec<String>> = circles(&e)
        .into_iter()
        .map(|c| c.into_iter().map(|m| m.join("/")).collect())
        .collect();
    let names = |ms: &[&str]| ms.iter().map(|m| m.to_string()).collect::<Vec<_>>();
    assert_eq!(c, vec![names(&["b", "c"]), names(&["d", "d/v", "e"])]);
    assert!(!e[&vec!["c".to_string()]].contains(&vec!["a".to_string(), "x".to_string()]));
}

/// `src/lib.rs`, `src/main.rs` and every `src/bin/<name>/main.rs`: the roots that have modules.
fn crate_roots(krate: &Path) -> Vec<(PathBuf, String)> {
    let src = krate.join("src");
    let mut roots: Vec<(PathBuf, String)> = ["lib.rs", "main.rs"]
        .iter()
        .filter(|f| src.join(f).exists())
        .map(|f| (src.clone(), f.to_string()))
        .collect();
    if let Ok(bins) = std::fs::read_dir(src.join("bin")) {
        for b in bins.flatten() {
            if b.path().join("main.rs").exists() {
                roots.push((b.path(), "main.rs".into()));
            }
        }
    }
    roots
}

/// Every module file under `dir` (a root's directory; `src/bin` belongs to other roots).
fn modules(dir: &Path, root_file: &str) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(dir.to_path_buf(), Vec::<String>::new())];
    while let Some((d, segs)) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !(segs.is_empty() && name == "bin") {
                    stack.push((path, [segs.clone(), vec![name]].concat()));
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(".rs") else {
                continue;
            };
            let module = match (segs.is_empty(), stem) {
                (true, "lib" | "main") if name == root_file => segs.clone(),
                (true, "lib" | "main") => continue,
                (_, "mod") => segs.clone(),
                _ => [segs.clone(), vec![stem.to_string()]].concat(),
            };
            out.insert(module, path);
        }
    }
    out
}

/// Which modules each module uses, leaving out itself, its own descendants and its ancestors, and
/// its own children, which it declares: a module is made of its children, so one of them that needs
/// a module needing the parent closes a circle (`spec/validate` → `process` → `spec`), while a child
/// that uses its ancestors' items does not.
fn edges(modules: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut out: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for module in modules.keys() {
        if let Some((_, parent)) = module.split_last() {
            let parent = parent.to_vec();
            if modules.contains_key(&parent) {
                out.entry(parent).or_default().insert(module.clone());
            }
        }
    }
    for (module, path) in modules {
        let code = code_of(&std::fs::read_to_string(path).unwrap());
        let mut targets = BTreeSet::new();
        for p in paths(&code) {
            let Some(full) = absolute(module, &p) else {
                continue;
            };
            let target = (0..=full.len())
                .rev()
                .map(|n| full[..n].to_vec())
                .find(|m| modules.contains_key(m))
                .unwrap_or_default();
            if !target.starts_with(module) && !module.starts_with(&target) {
                targets.insert(target);
            }
        }
        out.entry(module.clone()).or_default().extend(targets);
    }
    out
}

/// The source without comments, string and character literals, and the trailing `#[cfg(test)] mod`.
fn code_of(src: &str) -> String {
    let mut kept = String::new();
    let mut lines = src.lines().peekable();
    while let Some(line) = lines.next() {
        let test_mod = lines
            .peek()
            .is_some_and(|n| n.trim_start().starts_with("mod "));
        if line.trim_start().starts_with("#[cfg(test)]") && test_mod {
            break;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    strip_literals(&kept)
}

fn strip_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let skip_to = |from: usize, end: &str| {
        let end: Vec<char> = end.chars().collect();
        (from..c.len())
            .find(|&k| c[k..].starts_with(&end))
            .map_or(c.len(), |k| k + end.len())
    };
    while i < c.len() {
        let rest = &c[i..];
        let next = if rest.starts_with(&['/', '/']) {
            skip_to(i, "\n")
        } else if rest.starts_with(&['/', '*']) {
            skip_to(i + 2, "*/")
        } else if rest.starts_with(&['r', '#', '"']) {
            skip_to(i + 3, "\"#")
        } else if rest[0] == '"' {
            let mut k = i + 1;
            while k < c.len() && c[k] != '"' {
                k += if c[k] == '\\' { 2 } else { 1 };
            }
            k + 1
        } else if rest[0] == '\'' && rest.get(1) == Some(&'\\') {
            skip_to(i + 3, "'")
        } else if rest[0] == '\'' && rest.get(2) == Some(&'\'') {
            i + 3
        } else {
            i + 1
        };
        // A literal or comment leaves a space, so the code around it stays apart.
        out.push(if next == i + 1 { rest[0] } else { ' ' });
        i = next;
    }
    out
}

/// Every `crate::`/`super::`/`self::` path: the trees of `use` items expanded, and inline paths.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = find_word(rest, "use") {
        let after = &rest[i + 3..];
        let end = after.find(';').unwrap_or(after.len());
        let tree: String = without_renames(&after[..end])
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        out.extend(expand(&tree));
        rest = &after[end..];
    }
    for start in ["crate::", "super::", "self::"] {
        let mut rest = code;
        while let Some(i) = find_word(rest, start.trim_end_matches("::")) {
            let tail = &rest[i..];
            let len = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            if tail[..len].starts_with(start) {
                out.push(tail[..len].to_string());
            }
            rest = &tail[len.max(1)..];
        }
    }
    out
}

/// A `use` tree without its `as name` parts, which would run into the path once spaces go.
fn without_renames(tree: &str) -> String {
    let mut out = String::new();
    let mut words = tree.split_whitespace();
    while let Some(w) = words.next() {
        if w == "as" {
            let renamed = words.next().unwrap_or("");
            out.extend(
                renamed
                    .chars()
                    .filter(|c| !(c.is_alphanumeric() || *c == '_')),
            );
        } else {
            out.push_str(w);
            out.push(' ');
        }
    }
    out
}

/// The index of `word` in `s` where it stands alone (not part of a longer name).
fn find_word(s: &str, word: &str) -> Option<usize> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(i) = s[from..].find(word).map(|i| i + from) {
        let before = s[..i].chars().next_back();
        let after = s[i + word.len()..].chars().next();
        if !before.is_some_and(ident) && !after.is_some_and(ident) {
            return Some(i);
        }
        from = i + word.len();
    }
    None
}

/// `a::{b, c::{d, e as f}}` as `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut part, mut out) = (0, String::new(), Vec::new());
    for ch in inner.chars().chain(std::iter::once(',')) {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if ch == ',' && depth == 0 {
            if !part.is_empty() {
                out.extend(expand(&part).into_iter().map(|p| format!("{prefix}{p}")));
            }
            part.clear();
        } else {
            part.push(ch);
        }
    }
    out
}

/// `path` from inside `module` as a path from the crate root; `None` for other crates' paths.
fn absolute(module: &Module, path: &str) -> Option<Module> {
    let mut segs = path
        .split("::")
        .map(|s| s.trim_start_matches("r#"))
        .filter(|s| !s.is_empty() && *s != "*")
        .peekable();
    let mut base = match *segs.peek()? {
        "crate" => {
            segs.next();
            Vec::new()
        }
        "super" | "self" => module.clone(),
        _ => return None,
    };
    while let Some(s) = segs.peek() {
        match *s {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        segs.next();
    }
    base.extend(segs.map(str::to_string));
    Some(base)
}

/// The strongly connected groups of more than one module (Tarjan), each sorted.
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, (usize, usize)>,
        stack: Vec<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a Module) -> usize {
            let n = self.index.len();
            self.index.insert(v, (n, n));
            self.stack.push(v);
            let mut low = n;
            let edges = self.edges;
            for w in edges.get(v).into_iter().flatten() {
                low = match self.index.get(w) {
                    None => low.min(self.visit(w)),
                    Some(&(i, _)) if self.stack.contains(&w) => low.min(i),
                    Some(_) => low,
                };
            }
            self.index.insert(v, (n, low));
            if low == n {
                let at = self.stack.iter().rposition(|m| *m == v).unwrap();
                let mut group: Vec<Module> = self.stack.drain(at..).cloned().collect();
                if group.len() > 1 {
                    group.sort();
                    self.out.push(group);
                }
            }
            low
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.out.sort();
    walk.out
}
