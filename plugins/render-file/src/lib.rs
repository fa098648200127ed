//! Renders `file` products (`file source-dist …`, `file binary-dist …`):
//! a download link with the file's kind, size and SHA-256, as Hydra's
//! build page lists them.

use orthrus_plugin_sdk::html::{escape, size};
use orthrus_plugin_sdk::{BuildRef, Metadata, Product, Rendered, Renderer, export_renderer};

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
        Metadata {
            name: "file".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Shows a file product: a download link with its size and SHA-256".into(),
            handles: vec!["file".into()],
            capabilities: vec![],
        }
    }

    fn render(product: &Product, build: &BuildRef) -> Result<Rendered, String> {
        Ok(Rendered::Html(fragment(product, build)))
    }
}

export_renderer!(File);
