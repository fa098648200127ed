//! What a finished build leaves in `$out/nix-support/` for Hydra-style
//! servers: `hydra-build-products`, `hydra-metrics`, `hydra-release-name`
//! and `failed`. Parsed with Hydra's rules, so that existing jobs keep
//! showing the same products.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::db::{NewMetric, NewProduct};
use crate::nix::{StorePath, store_dir};

/// Everything read from a build's outputs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BuildResults {
    pub products: Vec<NewProduct>,
    pub metrics: Vec<NewMetric>,
    pub release_name: Option<String>,
    /// `nix-support/failed` exists: the build "failed with output" (status 6).
    pub failed: bool,
}

fn is_token(s: &str, extra: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// Reads the build's outputs (name, path). Runs blocking file I/O, so call
/// it through `spawn_blocking`.
pub fn read_build_results(outputs: &[(String, String)]) -> BuildResults {
    let mut results = BuildResults::default();
    let mut listed_products = false;
    for (_, out) in outputs {
        let support = Path::new(out).join("nix-support");
        if let Ok(text) = std::fs::read_to_string(support.join("hydra-build-products")) {
            listed_products = true;
            for line in text.lines() {
                if let Some(product) = parse_product_line(line, outputs) {
                    results.products.push(product);
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string(support.join("hydra-metrics")) {
            for metric in text.lines().filter_map(parse_metric_line) {
                // A later line with the same name wins.
                results.metrics.retain(|m| m.name != metric.name);
                results.metrics.push(metric);
            }
        }
        if let Ok(text) = std::fs::read_to_string(support.join("hydra-release-name")) {
            let name = text.trim();
            if is_token(name, ".@:_-") {
                results.release_name = Some(name.to_owned());
            }
        }
        if support.join("failed").exists() {
            results.failed = true;
        }
    }
    if !listed_products {
        for (name, out) in outputs {
            if Path::new(out).is_dir() {
                let product_name = StorePath::parse(out).map(|p| p.name().to_owned()).unwrap_or_default();
                results.products.push(NewProduct {
                    kind: "nix-build".into(),
                    subtype: if name == "out" { String::new() } else { name.clone() },
                    file_size: None,
                    sha256_hash: None,
                    path: out.clone(),
                    name: product_name,
                    default_path: String::new(),
                });
            }
        }
    }
    results
}

/// `type subtype path [defaultPath]`, where path may be double-quoted; a
/// line that does not have this shape, or names a file outside the build's
/// outputs, is skipped as Hydra skips it.
fn parse_product_line(line: &str, outputs: &[(String, String)]) -> Option<NewProduct> {
    let line = line.trim();
    let (kind, rest) = line.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (subtype, rest) = rest.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    if !is_token(kind, "_-") || !is_token(subtype, "_-") {
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
    if path.contains(['<', '>', '"']) {
        return None;
    }
    let default_path = rest.trim();
    if default_path.contains(char::is_whitespace) || default_path.contains(['<', '>']) {
        return None;
    }
    let path = canonical_store_path(path)?;
    let inside_outputs = outputs.iter().any(|(_, out)| path.starts_with(out));
    if !inside_outputs {
        return None;
    }
    let metadata = std::fs::symlink_metadata(&path).ok()?;
    let is_output_itself = outputs.iter().any(|(_, out)| path == Path::new(out));
    let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = if !is_output_itself && is_token(&base, ".@:_+ -") { base } else { String::new() };
    let (file_size, sha256_hash) =
        if metadata.is_file() { (Some(metadata.len() as i64), sha256_file(&path)) } else { (None, None) };
    Some(NewProduct {
        kind: kind.to_owned(),
        subtype: subtype.to_owned(),
        file_size,
        sha256_hash,
        path: path.to_string_lossy().into_owned(),
        name,
        default_path: default_path.to_owned(),
    })
}

/// The path with `.` and `..` resolved lexically (Nix's `canonPath`), if
/// it is absolute and inside the store.
fn canonical_store_path(path: &str) -> Option<PathBuf> {
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
    canonical.starts_with(store_dir()).then_some(canonical)
}

fn sha256_file(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Some(hex::encode(hasher.finalize()))
}

/// `name value [unit]`.
fn parse_metric_line(line: &str) -> Option<NewMetric> {
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
    fn canonical_paths_stay_in_the_store() {
        let store = store_dir();
        assert_eq!(
            canonical_store_path(&format!("{store}/abc-x/./doc/../f")),
            Some(PathBuf::from(format!("{store}/abc-x/f")))
        );
        assert_eq!(canonical_store_path(&format!("{store}/../../etc/passwd")), None);
        assert_eq!(canonical_store_path("relative/path"), None);
    }

    #[test]
    fn product_lines_outside_the_outputs_are_skipped() {
        let outputs = vec![("out".to_owned(), format!("{}/00000000000000000000000000000000-x", store_dir()))];
        assert_eq!(parse_product_line("file binary-dist /etc/passwd", &outputs), None);
        assert_eq!(parse_product_line("file", &outputs), None);
        assert_eq!(parse_product_line("fi/le binary-dist /nix/store/x", &outputs), None);
    }
}
