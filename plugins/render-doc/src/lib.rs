//! Renders `doc` products: a link that opens the documentation in the
//! browser at its default page (`doc SUBTYPE PATH DEFAULT`).

use orthrus_plugin_renderer::html::browse_link;
use orthrus_plugin_renderer::{BuildRef, Error, Metadata, Product, Rendered, Renderer, export_renderer};

// On the host only the metadata is compiled: the exports are built for
// WebAssembly alone.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Doc;

impl Renderer for Doc {
    fn metadata() -> Metadata {
        Metadata::new("doc", env!("CARGO_PKG_VERSION"))
            .describe("Shows a doc product: a link to browse the documentation")
            .handles(["doc"])
    }

    fn render(product: &Product, build: &BuildRef) -> Result<Rendered, Error> {
        Ok(Rendered::Link(browse_link(product, build, "Documentation")))
    }
}

export_renderer!(Doc);
