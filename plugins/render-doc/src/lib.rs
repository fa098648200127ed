//! Renders `doc` products: a link that opens the documentation
//! in the browser, at its default page (`doc SUBTYPE PATH DEFAULT`).

// On the host only the pure parts are used (by the tests): the exports are
// built for WebAssembly alone.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use orthrus_plugin_sdk::{BuildRef, Link, Metadata, Product, Rendered, Renderer, export_renderer};

/// Where the product is browsed: its default page inside it, if it has one.
pub fn link(product: &Product, build: &BuildRef) -> Link {
    let href = if product.default_path.is_empty() {
        build.download_url.clone()
    } else {
        format!("{}/{}", build.download_url, product.default_path.trim_start_matches('/'))
    };
    let what = if product.subtype.is_empty() { product.name.clone() } else { product.subtype.clone() };
    Link { href, text: format!("Documentation: {what}") }
}

struct Doc;

impl Renderer for Doc {
    fn metadata() -> Metadata {
        Metadata {
            name: "doc".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Shows a doc product: a link to browse the documentation".into(),
            handles: vec!["doc".into()],
            capabilities: vec![],
        }
    }

    fn render(product: &Product, build: &BuildRef) -> Result<Rendered, String> {
        Ok(Rendered::Link(link(product, build)))
    }
}

export_renderer!(Doc);
