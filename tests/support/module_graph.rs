//! The crate's rooms import one another in one direction only, and `lib.rs` says which way:
//! the checker shared by the scheduler's and the simulator's `tests/module_graph.rs`, which
//! include it as a module (it reads the `src/` of the crate it is compiled into).
//!
//! Reads every file under `src/`, follows its `crate::`, `super::`, `self::` and child-module
//! paths (in `use` items and inline, production code only: a file is read up to its
//! `#[cfg(test)]`, and a `tests.rs` of unit tests not at all), and checks that
//! - no circle of imports exists between files, nor between rooms (top-level modules);
//! - the room graph listed in `lib.rs`'s doc ("Module graph") is exactly the one found;
//! - every file starts with a `//!` line of purpose and stays under 800 lines.
//!
//! `cargo test -p shoal-scheduler --test module_graph -- --nocapture` (or
//! `-p shoal-simulations`) prints both graphs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;
type Graph = BTreeMap<String, BTreeSet<String>>;

const MAX_LINES: usize = 800;

/// One source file: its module path and its production text without comments.
struct Source {
    module: Module,
    path: PathBuf,
    code: String,
    lines: usize,
    first_line: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("src dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(path: &Path) -> Module {
    let rel = path.strip_prefix(src_dir()).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "lib" || p == "mod") {
        parts.pop();
    }
    parts
}

/// The text up to `#[cfg(test)]`, with `//` comments removed.
fn production_code(text: &str) -> String {
    let body = text.split("#[cfg(test)]").next().unwrap_or("");
    body.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn read_sources() -> Vec<Source> {
    let mut files = Vec::new();
    rs_files(&src_dir(), &mut files);
    files
        .into_iter()
        // Unit tests kept beside a module (`#[cfg(test)] mod tests;`) are no production code.
        .filter(|path| path.file_name().is_none_or(|n| n != "tests.rs"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable source");
            Source {
                module: module_of(&path),
                code: production_code(&text),
                lines: text.lines().count(),
                first_line: text.lines().next().unwrap_or("").to_string(),
                path,
            }
        })
        .collect()
}

/// Expands a `use` tree (`a::{b, c::{self, D}}`) into its paths.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let words: Vec<&str> = tree.split_whitespace().collect();
    let mut plain = String::new();
    let mut k = 0;
    while k < words.len() {
        if words[k] == "as" {
            // `x as y,` keeps only the separator that followed the new name.
            let renamed = words.get(k + 1).copied().unwrap_or("");
            plain.extend(
                renamed
                    .chars()
                    .filter(|c| !(c.is_alphanumeric() || *c == '_')),
            );
            k += 2;
            continue;
        }
        plain.push_str(words[k]);
        k += 1;
    }
    expand_plain(&plain)
}

fn expand_plain(tree: &str) -> Vec<Vec<String>> {
    let Some(open) = tree.find('{') else {
        return vec![segments(tree)];
    };
    let prefix = segments(tree[..open].trim_end_matches("::"));
    let inner = &tree[open + 1..tree.rfind('}').expect("balanced use tree")];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (k, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(expand_plain)
        .map(|tail| prefix.iter().cloned().chain(tail).collect())
        .collect()
}

fn segments(path: &str) -> Vec<String> {
    path.split("::")
        .filter(|s| !s.is_empty() && *s != "*")
        .map(str::to_string)
        .collect()
}

/// Every path a file names that may lead into the crate: its `use` items, and inline paths
/// starting at `crate`, `super`, `self` or one of its child modules `kids`.
fn paths(code: &str, kids: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(k) = rest.find("use ") {
        let before = rest[..k].chars().last();
        let after = &rest[k + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
            out.extend(expand(&after[..end]));
            rest = &after[end..];
        } else {
            rest = after;
        }
    }
    let anchors = ["crate", "super", "self"]
        .into_iter()
        .map(str::to_string)
        .chain(kids.iter().cloned())
        .map(|a| a + "::");
    for anchor in anchors {
        let anchor = anchor.as_str();
        let mut rest = code;
        while let Some(k) = rest.find(anchor) {
            let before = rest[..k].chars().last();
            let tail = &rest[k..];
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            let path = segments(&tail[..end]);
            // A bare `crate::{..}` is a `use` tree, already expanded above.
            if path.len() > 1 && before.is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != ':')
            {
                out.push(path);
            }
            rest = &tail[end..];
        }
    }
    out
}

/// Child modules declared in `code` (`mod x;`, `pub mod x;`).
fn children(code: &str) -> BTreeSet<String> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or(l.strip_prefix("pub "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect()
}

/// The module file a path leads to, if it leads into the crate.
fn resolve(
    from: &Module,
    kids: &BTreeSet<String>,
    path: &[String],
    known: &BTreeSet<Module>,
) -> Option<Module> {
    let (mut base, mut rest) = match path.first()?.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (from.clone(), &path[1..]),
        "super" => {
            let mut base = from.clone();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        first if kids.contains(first) => (from.clone(), path),
        _ => return None,
    };
    while let Some(next) = rest.first() {
        let mut deeper = base.clone();
        deeper.push(next.clone());
        if !known.contains(&deeper) {
            break;
        }
        base = deeper;
        rest = &rest[1..];
    }
    Some(base)
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("/")
    }
}

fn file_graph(sources: &[Source]) -> Graph {
    let known: BTreeSet<Module> = sources.iter().map(|s| s.module.clone()).collect();
    let mut graph = Graph::new();
    for s in sources {
        let kids = children(&s.code);
        let edges = graph.entry(name(&s.module)).or_default();
        for path in paths(&s.code, &kids) {
            if let Some(to) = resolve(&s.module, &kids, &path, &known)
                && to != s.module
            {
                edges.insert(name(&to));
            }
        }
    }
    graph
}

/// The graph between top-level modules (rooms); edges inside a room are dropped.
fn room_graph(files: &Graph) -> Graph {
    let room = |f: &str| f.split('/').next().unwrap_or(f).to_string();
    let mut graph = Graph::new();
    for (from, tos) in files {
        let edges = graph.entry(room(from)).or_default();
        for to in tos {
            if room(to) != room(from) {
                edges.insert(room(to));
            }
        }
    }
    graph
}

/// Every circle of the graph (strongly connected components of more than one node).
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    // Kosaraju: finish order on the graph, then components on the reversed graph.
    fn visit<'a>(g: &'a Graph, n: &'a str, seen: &mut BTreeSet<&'a str>, order: &mut Vec<&'a str>) {
        if !seen.insert(n) {
            return;
        }
        for m in g.get(n).into_iter().flatten() {
            visit(g, m, seen, order);
        }
        order.push(n);
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for n in graph.keys() {
        visit(graph, n, &mut seen, &mut order);
    }
    let mut reversed = Graph::new();
    for (from, tos) in graph {
        for to in tos {
            reversed.entry(to.clone()).or_default().insert(from.clone());
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for n in order.into_iter().rev() {
        let mut component = Vec::new();
        visit(&reversed, n, &mut seen, &mut component);
        if component.len() > 1 {
            component.sort();
            out.push(component.into_iter().map(str::to_string).collect());
        }
    }
    out
}

fn show(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(from, tos)| {
            let tos: Vec<&str> = tos.iter().map(String::as_str).collect();
            let tos = if tos.is_empty() {
                "(nothing)".to_string()
            } else {
                tos.join(", ")
            };
            format!("{from} → {tos}\n")
        })
        .collect()
}

/// The room graph as `lib.rs`'s doc lists it: the `text` block after "Module graph".
fn documented(lib: &str) -> Graph {
    let doc: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(str::trim)
        .collect();
    let start = doc
        .iter()
        .position(|l| l.contains("Module graph"))
        .expect("lib.rs doc has a \"Module graph\" section");
    let block = doc[start..]
        .iter()
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"));
    let mut graph = Graph::new();
    for line in block {
        let (from, tos) = line.split_once('→').expect("`room → rooms` lines");
        let edges = graph.entry(from.trim().to_string()).or_default();
        for to in tos.split(',').map(str::trim) {
            if to != "(nothing)" && !to.is_empty() {
                edges.insert(to.to_string());
            }
        }
    }
    graph
}

#[test]
fn no_circle_of_imports_and_the_documented_graph_is_the_real_one() {
    let sources = read_sources();
    let files = file_graph(&sources);
    let rooms = room_graph(&files);
    println!("files:\n{}\nrooms:\n{}", show(&files), show(&rooms));
    assert_eq!(
        circles(&files),
        Vec::<Vec<String>>::new(),
        "circles between files"
    );
    assert_eq!(
        circles(&rooms),
        Vec::<Vec<String>>::new(),
        "circles between rooms"
    );
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).expect("lib.rs");
    assert_eq!(
        show(&documented(&lib)),
        show(&rooms),
        "lib.rs's \"Module graph\" differs from the imports"
    );
}

#[test]
fn every_file_says_what_it_is_for_and_stays_readable() {
    for s in read_sources() {
        assert!(
            s.first_line.starts_with("//! "),
            "{} does not start with a `//!` line of purpose",
            s.path.display()
        );
        assert!(
            s.lines <= MAX_LINES,
            "{} has {} lines (at most {MAX_LINES})",
            s.path.display(),
            s.lines
        );
    }
}

#[test]
fn the_checker_finds_a_circle() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("d".into()).or_default().insert("a".into());
    assert_eq!(
        circles(&g),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
}

#[test]
fn use_trees_expand_to_paths() {
    let got = expand("crate::{report::{self, Report}, scenario::Scenario as S}");
    let want: Vec<Vec<String>> = [
        vec!["crate", "report", "self"],
        vec!["crate", "report", "Report"],
        vec!["crate", "scenario", "Scenario"],
    ]
    .iter()
    .map(|p| p.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(got, want);
}
