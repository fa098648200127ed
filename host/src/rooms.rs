//! Keeps the rooms apart: every part (folder of `src/`) may use only the
//! parts its row of ARCHITECTURE.md's table "Who may use whom" names, the
//! table has no circles, and it names no edge the code does not have.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const ARCHITECTURE: &str = include_str!("../../ARCHITECTURE.md");
const TABLE_TITLE: &str = "## Who may use whom";

/// The table: each part and the parts it may use (`None`: every part).
fn allowed() -> BTreeMap<String, Option<BTreeSet<String>>> {
    let section = ARCHITECTURE.split(TABLE_TITLE).nth(1).expect("ARCHITECTURE.md has the table");
    let mut table = BTreeMap::new();
    for line in section.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')).skip(2) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let part = cells[1].trim_matches('`').to_owned();
        let uses = match cells[2] {
            "every part" => None,
            "—" | "" => Some(BTreeSet::new()),
            list => Some(list.split(',').map(|p| p.trim().trim_matches('`').to_owned()).collect()),
        };
        table.insert(part, uses);
    }
    table
}

/// The parts each part's files name as `crate::PART`, outside comments.
fn used() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut used = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        let part = entry.file_name().to_string_lossy().into_owned();
        let mut names = BTreeSet::new();
        for file in rust_files(&entry.path()) {
            let text = std::fs::read_to_string(&file).unwrap();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (at, _) in line.match_indices("crate::") {
                    let name: String =
                        line[at + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if !name.is_empty() && name != part {
                        names.insert(name);
                    }
                }
            }
        }
        used.insert(part, names);
    }
    used
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn parts_use_only_what_the_map_allows() {
    let allowed = allowed();
    let used = used();
    let mut wrong = Vec::new();
    for (part, names) in &used {
        let Some(may) = allowed.get(part) else {
            wrong.push(format!("{part}: not in the table of ARCHITECTURE.md"));
            continue;
        };
        let Some(may) = may else { continue };
        for name in names.difference(may) {
            wrong.push(format!("{part} uses {name}, which its row does not allow"));
        }
        for name in may.difference(names) {
            wrong.push(format!("{part} may use {name} but does not: take it out of the table"));
        }
    }
    for part in allowed.keys().filter(|p| !used.contains_key(*p)) {
        wrong.push(format!("{part}: in the table, but there is no such folder"));
    }
    assert!(wrong.is_empty(), "ARCHITECTURE.md, \"{TABLE_TITLE}\":\n{}", wrong.join("\n"));
}

#[test]
fn the_map_has_no_circles() {
    let allowed = allowed();
    let edges: BTreeMap<&str, Vec<&str>> = allowed
        .iter()
        .filter_map(|(part, may)| Some((part.as_str(), may.as_ref()?.iter().map(String::as_str).collect())))
        .collect();
    // Depth-first, with the path walked so far: a part met again on it is a circle.
    fn visit<'a>(
        part: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|p| *p == part) {
            panic!("a circle between rooms: {} -> {part}", path[at..].join(" -> "));
        }
        if !done.insert(part) {
            return;
        }
        path.push(part);
        for next in edges.get(part).into_iter().flatten() {
            visit(next, edges, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for part in edges.keys() {
        visit(part, &edges, &mut Vec::new(), &mut done);
    }
}
