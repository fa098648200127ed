//! Renders `channel` products: how to subscribe to the jobset's channel,
//! which this server publishes at `/jobset/P/J/channel/latest`.

// On the host only the pure parts are used (by the tests): the exports are
// built for WebAssembly alone.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use orthrus_plugin_renderer::html::escape;
use orthrus_plugin_renderer::{BuildRef, Error, Metadata, Product, Rendered, Renderer, export_renderer};

pub fn fragment(product: &Product, build: &BuildRef) -> String {
    let root = build.url.rsplit_once("/build/").map(|(root, _)| root).unwrap_or(&build.url);
    let channel = format!("{root}/jobset/{}/{}/channel/latest", build.project, build.jobset);
    let name = if product.name.is_empty() { build.jobset.clone() } else { product.name.clone() };
    format!(
        "<div class=\"product product-channel\"><p>Subscribe to the channel <a href=\"{}\">{}</a>:</p>\
         <pre><code>nix-channel --add {} {}\nnix-channel --update</code></pre></div>",
        escape(&channel),
        escape(&name),
        escape(&channel),
        escape(&name)
    )
}

struct Channel;

impl Renderer for Channel {
    fn metadata() -> Metadata {
        Metadata::new("channel", env!("CARGO_PKG_VERSION"))
            .describe("Shows a channel product: how to subscribe to the jobset's channel")
            .handles(["channel"])
    }

    fn render(product: &Product, build: &BuildRef) -> Result<Rendered, Error> {
        Ok(Rendered::Html(fragment(product, build)))
    }
}

export_renderer!(Channel);
