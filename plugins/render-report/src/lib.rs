//! Renders `report` products: a link that opens the report in the
//! browser at its default page (`report SUBTYPE PATH DEFAULT`).

use orthrus_plugin_renderer::html::browse_link;
use orthrus_plugin_renderer::{BuildRef, Error, Metadata, Product, Rendered, Renderer, export_renderer};

// On the host only the metadata is compiled: the exports are built for
// WebAssembly alone.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Report;

impl Renderer for Report {
    fn metadata() -> Metadata {
        Metadata::new("report", env!("CARGO_PKG_VERSION"))
            .describe("Shows a report product (coverage, …): a link to browse it")
            .handles(["report"])
    }

    fn render(product: &Product, build: &BuildRef) -> Result<Rendered, Error> {
        Ok(Rendered::Link(browse_link(product, build, "Report")))
    }
}

export_renderer!(Report);
