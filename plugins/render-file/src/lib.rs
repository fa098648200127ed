//! Renders `file` products (`file source-dist …`, `file binary-dist …`):
//! a download link with the file's kind, size and SHA-256, as Hydra's
//! build page lists them.

// On the host only the pure parts are used (by the tests): the exports are
// built for WebAssembly alone.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use orthrus_plugin_renderer::html::{escape, size};
use orthrus_plugin_renderer::{BuildRef, Error, Metadata, Product, Rendered, Renderer, export_renderer};

/// The fragment for one file.
pub fn fragment(product: &Product, build: &BuildRef) -> String {
    let mut html = format!(
        "<div class=\"product product-file\"><a href=\"{}\">{}</a>",
        escape(&build.download_url),
        escape(&product.name)
    );
    if !product.subtype.is_empty() {
        html.push_str(&format!(" <span class=\"subtype\">{}</span>", escape(&product.subtype)));
    }
    if let Some(bytes) = product.size {
        html.push_str(&format!(" <span class=\"size\">{}</span>", size(bytes)));
    }
    if let Some(hash) = &product.sha256 {
        html.push_str(&format!(" <code class=\"hash\">SHA-256: {}</code>", escape(hash)));
    }
    html.push_str("</div>");
    html
}

struct File;

impl Renderer for File {
    fn metadata() -> Metadata {
        Metadata::new("file", env!("CARGO_PKG_VERSION"))
            .describe("Shows a file product: a download link with its size and SHA-256")
            .handles(["file"])
    }

    fn render(product: &Product, build: &BuildRef) -> Result<Rendered, Error> {
        Ok(Rendered::Html(fragment(product, build)))
    }
}

export_renderer!(File);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_sizes_shown() {
        let product = Product {
            nr: 1,
            type_: "file".into(),
            subtype: "source-dist".into(),
            name: "<b>x</b>.tar.gz".into(),
            path: "/nix/store/x".into(),
            default_path: String::new(),
            size: Some(2048),
            sha256: Some("ab".repeat(32)),
        };
        let build = BuildRef {
            id: 1,
            project: "p".into(),
            jobset: "j".into(),
            job: "tarball".into(),
            nix_name: "x".into(),
            release_name: None,
            url: "http://ci/build/1".into(),
            download_url: "http://ci/build/1/download/1".into(),
        };
        let html = fragment(&product, &build);
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;.tar.gz"), "{html}");
        assert!(html.contains("2.0 KiB") && html.contains("source-dist") && html.contains(&"ab".repeat(32)), "{html}");
        assert!(html.contains("href=\"http://ci/build/1/download/1\""), "{html}");
    }
}
