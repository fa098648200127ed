//! Renders `nix-build` products: a store path the build made, and how to
//! get it from this server's binary cache with Nix.

// On the host only the pure parts are used (by the tests): the exports are
// built for WebAssembly alone.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use orthrus_plugin_renderer::html::escape;
use orthrus_plugin_renderer::{BuildRef, Error, Metadata, Product, Rendered, Renderer, export_renderer};

/// The server's root, from the build's URL (`…/build/N`).
fn server_root(build: &BuildRef) -> &str {
    build.url.rsplit_once("/build/").map(|(root, _)| root).unwrap_or(&build.url)
}

pub fn fragment(product: &Product, build: &BuildRef) -> String {
    let root = server_root(build);
    format!(
        "<div class=\"product product-nix-build\"><p>{} is in this server's binary cache:</p>\
         <pre><code>nix-store --realise {} --option extra-substituters {}</code></pre></div>",
        escape(if product.name.is_empty() { &build.nix_name } else { &product.name }),
        escape(&product.path),
        escape(root)
    )
}

struct NixBuild;

impl Renderer for NixBuild {
    fn metadata() -> Metadata {
        Metadata::new("nix-build", env!("CARGO_PKG_VERSION"))
            .describe("Shows a nix-build product: how to get it from the binary cache")
            .handles(["nix-build"])
    }

    fn render(product: &Product, build: &BuildRef) -> Result<Rendered, Error> {
        Ok(Rendered::Html(fragment(product, build)))
    }
}

export_renderer!(NixBuild);
