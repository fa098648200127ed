//! What a finished build leaves in `$out/nix-support/` for Hydra-style
//! servers: `hydra-build-products`, `hydra-metrics`, `hydra-release-name`
//! and `failed`. Parsed with Hydra's rules, so that existing jobs keep
//! showing the same products.
//!
//! A build is written by an attacker as far as this file knows: every path
//! it names is read only once its real location is known to be inside the
//! output that names it ([`Confined`]), each file is read up to
//! [`MAX_SUPPORT_FILE`], and at most [`MAX_PRODUCTS`] products and
//! [`MAX_METRICS`] metrics are kept. What was refused or cut is said in
//! [`BuildResults::errors`], which the build's page shows.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::confined::{Confined, Refused};
use crate::db::{NewMetric, NewProduct};
use crate::nix::StorePath;

/// A `nix-support` file is a few kilobytes; more is a mistake or an attack,
/// and only this much of it is read.
pub const MAX_SUPPORT_FILE: u64 = 1 << 20;
/// Products recorded for one build at most.
pub const MAX_PRODUCTS: usize = 1000;
/// Metrics recorded for one build at most.
pub const MAX_METRICS: usize = 1000;
/// Problems recorded for one build at most (then how many more there were).
const MAX_ERRORS: usize = 50;
/// Longest product path and default path kept, in bytes.
const MAX_PATH: usize = 4096;
/// Longest product type and subtype.
const MAX_TYPE: usize = 64;

/// Everything read from a build's outputs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BuildResults {
    pub products: Vec<NewProduct>,
    pub metrics: Vec<NewMetric>,
    pub release_name: Option<String>,
    /// `nix-support/failed` exists: the build "failed with output" (status 6).
    pub failed: bool,
    /// What was refused or cut, one sentence each.
    pub errors: Vec<String>,
}

fn is_token(s: &str, extra: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// One output of the build, opened (or why it could not be).
struct Output<'a> {
    name: &'a str,
    path: &'a str,
    root: Result<Confined, Refused>,
}

/// Reads the build's outputs (name, path). Runs blocking file I/O, so call
/// it through `spawn_blocking`.
pub fn read_build_results(outputs: &[(String, String)]) -> BuildResults {
    // Checked when the evaluation was recorded, and again here: the
    // server's root, or any directory but a store path, is never read.
    let (paths, others): (Vec<_>, Vec<_>) = outputs.iter().cloned().partition(|(_, p)| StorePath::parse(p).is_ok());
    let mut results = read_outputs(&paths);
    for (name, path) in others {
        results.errors.push(format!("output ‘{name}’ is not read: {path:?} is not a store path"));
    }
    results
}

/// [`read_build_results`] of outputs known to be store paths.
fn read_outputs(outputs: &[(String, String)]) -> BuildResults {
    let outputs: Vec<Output> =
        outputs.iter().map(|(name, path)| Output { name, path, root: Confined::open(Path::new(path)) }).collect();
    let mut reader =
        Reader { outputs: &outputs, results: BuildResults::default(), hashes: HashMap::new(), errors_dropped: 0 };
    let mut listed_products = false;
    for output in &outputs {
        let root = match &output.root {
            Ok(root) => root,
            // Gone from the store: nothing to read, nothing to say.
            Err(Refused::Missing(_)) => continue,
            Err(Refused::RootIsLink(_)) => {
                reader.error(format!(
                    "output ‘{}’ is a symbolic link, so it has no products and nothing in it is read",
                    output.name
                ));
                continue;
            }
            Err(other) => {
                reader.error(format!("output ‘{}’: {other}", output.name));
                continue;
            }
        };
        if let Some(text) = reader.support_file(output, root, "hydra-build-products") {
            listed_products = true;
            reader.products(output, &text);
        }
        if let Some(text) = reader.support_file(output, root, "hydra-metrics") {
            reader.metrics(&text);
        }
        if let Some(text) = reader.support_file(output, root, "hydra-release-name") {
            let name = text.trim();
            if is_token(name, ".@:_-") {
                reader.results.release_name = Some(name.to_owned());
            }
        }
        match root.exists(Path::new("nix-support/failed")) {
            Ok(failed) => reader.results.failed |= failed,
            Err(e) => reader.error(format!("nix-support/failed of output ‘{}’ is ignored: {e}", output.name)),
        }
    }
    if !listed_products {
        // Hydra's default: each output directory is a `nix-build` product.
        for output in &outputs {
            let Ok(root) = &output.root else { continue };
            if !root.resolve(Path::new("")).is_ok_and(|real| real.is_dir()) {
                continue;
            }
            let product_name = StorePath::parse(output.path).map(|p| p.name().to_owned()).unwrap_or_default();
            reader.results.products.push(NewProduct {
                kind: "nix-build".into(),
                subtype: if output.name == "out" { String::new() } else { output.name.to_owned() },
                file_size: None,
                sha256_hash: None,
                path: output.path.to_owned(),
                name: product_name,
                default_path: String::new(),
                error: None,
            });
        }
    }
    if reader.errors_dropped > 0 {
        let more = reader.errors_dropped;
        reader.results.errors.push(format!("… and {more} more problems like these"));
    }
    reader.results
}

/// The state of reading one build's outputs.
struct Reader<'a> {
    outputs: &'a [Output<'a>],
    results: BuildResults,
    /// Size and hash by real path: a thousand product lines naming one
    /// large file hash it once.
    hashes: HashMap<PathBuf, Result<(i64, String), String>>,
    /// Problems past [`MAX_ERRORS`], only counted.
    errors_dropped: usize,
}

impl Reader<'_> {
    fn error(&mut self, message: String) {
        if self.results.errors.len() < MAX_ERRORS {
            self.results.errors.push(message);
        } else {
            self.errors_dropped += 1;
        }
    }

    /// `nix-support/NAME` of an output, as text, cut at [`MAX_SUPPORT_FILE`]
    /// (after its last whole line).
    fn support_file(&mut self, output: &Output, root: &Confined, name: &str) -> Option<String> {
        let relative = Path::new("nix-support").join(name);
        match root.read(&relative, MAX_SUPPORT_FILE) {
            Ok(None) => None,
            Ok(Some(read)) => {
                let mut bytes = read.bytes;
                if read.truncated {
                    self.error(format!(
                        "nix-support/{name} of output ‘{}’ is larger than {} KiB: only its first {} KiB were read",
                        output.name,
                        MAX_SUPPORT_FILE / 1024,
                        MAX_SUPPORT_FILE / 1024
                    ));
                    let whole_lines = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                    bytes.truncate(whole_lines);
                }
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            Err(e) => {
                self.error(format!("nix-support/{name} of output ‘{}’ is not read: {e}", output.name));
                None
            }
        }
    }

    fn products(&mut self, output: &Output, text: &str) {
        let mut lines = text.lines().enumerate();
        for (number, line) in lines.by_ref() {
            if self.results.products.len() >= MAX_PRODUCTS {
                let skipped = 1 + lines.by_ref().filter(|(_, l)| !l.trim().is_empty()).count();
                self.error(format!(
                    "nix-support/hydra-build-products of output ‘{}’ lists more than {MAX_PRODUCTS} products: \
                     the {skipped} lines after the first {MAX_PRODUCTS} products were skipped",
                    output.name
                ));
                return;
            }
            let Some(line) = ProductLine::parse(line) else { continue };
            let Some(path) = canonical_path(line.path) else { continue };
            let Some(owner) = self.outputs.iter().find(|o| path.starts_with(o.path)) else {
                self.error(format!(
                    "line {} of nix-support/hydra-build-products of output ‘{}’ names {path:?}, \
                     which is not inside an output of this build: skipped",
                    number + 1,
                    output.name
                ));
                continue;
            };
            let product = self.product(line, &path, owner);
            self.results.products.push(product);
        }
    }

    /// A product line naming `path` inside `owner`: with its size and hash
    /// when it is a file inside the output, with an error when it leads out.
    fn product(&mut self, line: ProductLine, path: &Path, owner: &Output) -> NewProduct {
        let is_output_itself = path == Path::new(owner.path);
        let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut product = NewProduct {
            kind: line.kind.to_owned(),
            subtype: line.subtype.to_owned(),
            file_size: None,
            sha256_hash: None,
            path: path.to_string_lossy().into_owned(),
            name: if !is_output_itself && is_token(&base, ".@:_+ -") { base } else { String::new() },
            default_path: line.default_path.to_owned(),
            error: None,
        };
        let root = match &owner.root {
            Ok(root) => root,
            Err(refused) => {
                product.error = Some(format!("its output cannot be read: {refused}"));
                return product;
            }
        };
        match root.resolve_named(path) {
            Ok(real) if real.is_file() => {
                let measured = self.hashes.entry(real).or_insert_with(|| measure_file(root, path)).clone();
                match measured {
                    Ok((size, hash)) => {
                        product.file_size = Some(size);
                        product.sha256_hash = Some(hash);
                    }
                    Err(refused) => product.error = Some(refused),
                }
            }
            Ok(_) => {}
            Err(refused) => product.error = Some(refused.to_string()),
        }
        product
    }

    fn metrics(&mut self, text: &str) {
        let mut index: HashMap<String, usize> =
            self.results.metrics.iter().enumerate().map(|(i, m)| (m.name.clone(), i)).collect();
        let mut dropped = 0usize;
        for metric in text.lines().filter_map(parse_metric_line) {
            match index.get(&metric.name) {
                // A later line with the same name wins.
                Some(&i) => self.results.metrics[i] = metric,
                None if self.results.metrics.len() >= MAX_METRICS => dropped += 1,
                None => {
                    index.insert(metric.name.clone(), self.results.metrics.len());
                    self.results.metrics.push(metric);
                }
            }
        }
        if dropped > 0 {
            self.error(format!(
                "nix-support/hydra-metrics names more than {MAX_METRICS} metrics: {dropped} lines of other metrics \
                 were skipped"
            ));
        }
    }
}

/// `type subtype path [defaultPath]`, where path may be double-quoted.
#[derive(Debug, PartialEq, Eq)]
pub struct ProductLine<'a> {
    pub kind: &'a str,
    pub subtype: &'a str,
    pub path: &'a str,
    /// A relative path of plain names inside the product (never `..`).
    pub default_path: &'a str,
}

impl<'a> ProductLine<'a> {
    /// A line that does not have this shape is skipped, as Hydra skips it.
    pub fn parse(line: &'a str) -> Option<ProductLine<'a>> {
        let line = line.trim();
        let (kind, rest) = line.split_once(char::is_whitespace)?;
        let rest = rest.trim_start();
        let (subtype, rest) = rest.split_once(char::is_whitespace)?;
        let rest = rest.trim_start();
        if !is_token(kind, "_-") || !is_token(subtype, "_-") || kind.len() > MAX_TYPE || subtype.len() > MAX_TYPE {
            return None;
        }
        let (path, rest) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"')?;
            if end == 0 {
                return None;
            }
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if path.contains(['<', '>', '"']) || path.len() > MAX_PATH {
            return None;
        }
        // A file inside the product (`index.html`): never `..`, never absolute.
        let default_path = rest.trim().trim_start_matches('/');
        let inside = Path::new(default_path).components().all(|c| matches!(c, Component::Normal(_)));
        if default_path.contains(char::is_whitespace)
            || default_path.contains(['<', '>'])
            || !inside
            || default_path.len() > MAX_PATH
        {
            return None;
        }
        Some(ProductLine { kind, subtype, path, default_path })
    }
}

/// The path with `.` and `..` resolved lexically (Nix's `canonPath`), if
/// it is absolute.
fn canonical_path(path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    if !path.is_absolute() {
        return None;
    }
    let mut canonical = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => canonical.push(part),
            Component::ParentDir => {
                canonical.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(canonical)
}

/// Size and SHA-256 (hex) of a file inside an output.
fn measure_file(root: &Confined, path: &Path) -> Result<(i64, String), String> {
    let (mut file, metadata) = root.open_named_file(path).map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("cannot read {path:?}: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok((metadata.len() as i64, hex::encode(hasher.finalize())))
}

/// `name value [unit]`.
pub fn parse_metric_line(line: &str) -> Option<NewMetric> {
    let mut fields = line.split_whitespace();
    let name = fields.next()?;
    let value: f64 = fields.next()?.parse().ok()?;
    if !is_token(name, "._-") || !value.is_finite() {
        return None;
    }
    let unit = fields.next().filter(|u| is_token(u, "._%-")).map(str::to_owned);
    Some(NewMetric { name: name.to_owned(), value, unit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines() {
        assert_eq!(
            parse_metric_line("coverage 87.5 %"),
            Some(NewMetric { name: "coverage".into(), value: 87.5, unit: Some("%".into()) })
        );
        assert_eq!(parse_metric_line("time 3").unwrap().unit, None);
        assert_eq!(parse_metric_line("bad name 3"), None);
        assert_eq!(parse_metric_line("x notanumber"), None);
        assert_eq!(parse_metric_line("lonely"), None);
    }

    #[test]
    fn canonical_paths() {
        assert_eq!(canonical_path("/nix/store/abc-x/./doc/../f"), Some(PathBuf::from("/nix/store/abc-x/f")));
        assert_eq!(canonical_path("/nix/store/../../etc/passwd"), Some(PathBuf::from("/etc/passwd")));
        assert_eq!(canonical_path("relative/path"), None);
    }

    #[test]
    fn product_lines() {
        assert_eq!(
            ProductLine::parse(r#"doc manual "/nix/store/x-y/share/my doc" index.html"#),
            Some(ProductLine {
                kind: "doc",
                subtype: "manual",
                path: "/nix/store/x-y/share/my doc",
                default_path: "index.html"
            })
        );
        assert_eq!(ProductLine::parse("file"), None);
        assert_eq!(ProductLine::parse("fi/le binary-dist /nix/store/x"), None);
        assert_eq!(ProductLine::parse("file x /nix/store/<script>"), None);
        assert_eq!(ProductLine::parse("doc manual /nix/store/x-y/share ../../etc/passwd"), None);
        assert_eq!(
            ProductLine::parse("doc manual /nix/store/x-y/share /index.html").unwrap().default_path,
            "index.html"
        );
        assert_eq!(ProductLine::parse(&format!("file {} /nix/store/x-y", "t".repeat(65))), None);
    }

    /// An output as a hostile build would leave it.
    fn hostile_output() -> (tempfile::TempDir, Vec<(String, String)>) {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("00000000000000000000000000000000-out");
        let other = dir.path().join("11111111111111111111111111111111-other");
        std::fs::create_dir_all(out.join("nix-support")).unwrap();
        std::fs::create_dir_all(out.join("doc")).unwrap();
        std::fs::write(&other, "another store path").unwrap();
        std::fs::write(out.join("f"), "fine").unwrap();
        std::fs::write(out.join("doc/index.html"), "<p>doc</p>").unwrap();
        symlink("/etc", out.join("etc")).unwrap();
        symlink(&other, out.join("other")).unwrap();
        symlink("f", out.join("link-to-f")).unwrap();
        let o = out.display();
        let products = format!(
            "file fine {o}/f\nfile linked {o}/link-to-f\ndoc manual {o}/doc index.html\n\
             file secret {o}/etc/hostname\nfile other {o}/other\nfile up {o}/../../../../etc/passwd\n\
             file dotted {o}/doc/../f\nnot a product line\n"
        );
        std::fs::write(out.join("nix-support/hydra-build-products"), products).unwrap();
        symlink("/etc/passwd", out.join("nix-support/hydra-metrics")).unwrap();
        let release: String = "r".repeat(MAX_SUPPORT_FILE as usize + 10);
        std::fs::write(out.join("nix-support/hydra-release-name"), release).unwrap();
        (dir, vec![("out".to_owned(), out.display().to_string())])
    }

    #[test]
    fn products_are_read_only_inside_their_output() {
        let (_dir, outputs) = hostile_output();
        let results = read_outputs(&outputs);
        let by_subtype = |s: &str| results.products.iter().find(|p| p.subtype == s).unwrap();
        assert_eq!(by_subtype("fine").file_size, Some(4));
        assert_eq!(by_subtype("fine").sha256_hash, by_subtype("linked").sha256_hash);
        assert_eq!(by_subtype("dotted").file_size, Some(4));
        assert_eq!(by_subtype("manual").error, None);
        for refused in ["secret", "other"] {
            let product = by_subtype(refused);
            assert_eq!((product.file_size, &product.sha256_hash), (None, &None), "{refused}");
            assert!(product.error.as_ref().unwrap().contains("leads outside"), "{refused}: {:?}", product.error);
        }
        assert!(results.products.iter().all(|p| p.subtype != "up"), "a path outside the outputs is no product");
        let errors = results.errors.join("\n");
        assert!(errors.contains("line 6") && errors.contains("\"/etc/passwd\""), "{errors}");
        assert!(errors.contains("hydra-metrics") && errors.contains("leads outside"), "{errors}");
        assert!(errors.contains("hydra-release-name") && errors.contains("larger than 1024 KiB"), "{errors}");
        assert!(results.metrics.is_empty());
        assert_eq!(results.release_name, None, "a cut release name is no name");
    }

    #[test]
    fn problems_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("00000000000000000000000000000000-out");
        std::fs::create_dir_all(out.join("nix-support")).unwrap();
        let lines: String = (0..120).map(|i| format!("file x /etc/passwd{i}\n")).collect();
        std::fs::write(out.join("nix-support/hydra-build-products"), lines).unwrap();
        let results = read_outputs(&[("out".to_owned(), out.display().to_string())]);
        assert_eq!(results.errors.len(), MAX_ERRORS + 1);
        assert_eq!(results.errors.last().unwrap(), "… and 70 more problems like these");
    }

    #[test]
    fn an_output_that_is_no_store_path_is_not_read() {
        // What an expression that sets `outPath = "/"` would make recorded.
        let results = read_build_results(&[("out".to_owned(), "/".to_owned())]);
        assert!(results.products.is_empty());
        assert_eq!(results.errors, ["output ‘out’ is not read: \"/\" is not a store path"]);
    }

    #[test]
    fn an_output_that_is_a_link_has_no_products() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("00000000000000000000000000000000-out");
        std::os::unix::fs::symlink("/", &out).unwrap();
        let results = read_outputs(&[("out".to_owned(), out.display().to_string())]);
        assert!(results.products.is_empty());
        assert!(!results.failed);
        assert_eq!(results.errors.len(), 1);
        assert!(results.errors[0].contains("symbolic link"), "{:?}", results.errors);
        // Nothing in it was read.
        let missing = read_outputs(&[("out".to_owned(), dir.path().join("gone").display().to_string())]);
        assert_eq!(missing, BuildResults::default());
    }

    #[test]
    fn products_and_metrics_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("00000000000000000000000000000000-out");
        std::fs::create_dir_all(out.join("nix-support")).unwrap();
        std::fs::write(out.join("f"), "x").unwrap();
        let line = format!("file x {}/f\n", out.display());
        std::fs::write(out.join("nix-support/hydra-build-products"), line.repeat(MAX_PRODUCTS + 5)).unwrap();
        let metrics: String = (0..MAX_METRICS + 7).map(|i| format!("m{i} {i}\n")).collect::<String>() + "m0 42\n";
        std::fs::write(out.join("nix-support/hydra-metrics"), metrics).unwrap();
        let results = read_outputs(&[("out".to_owned(), out.display().to_string())]);
        assert_eq!(results.products.len(), MAX_PRODUCTS);
        assert_eq!(results.metrics.len(), MAX_METRICS);
        assert_eq!(results.metrics[0].value, 42.0, "a later line with the same name wins");
        let errors = results.errors.join("\n");
        assert!(errors.contains("the 5 lines after the first 1000 products were skipped"), "{errors}");
        assert!(errors.contains("7 lines of other metrics were skipped"), "{errors}");
    }
}
