//! A renderer built against `orthrus:plugin@0.1.0`, as plugins were before
//! 0.2.0 typed the errors: it must keep loading and working. It asks the
//! host to log (not granted: the host's refusal comes back in words, as
//! 0.1.0 has it) and fails products of subtype `fail` with a string.

wit_bindgen::generate!({
    path: "../../../wit/since_v0.1.0",
    world: "renderer",
});

use exports::orthrus::plugin::render::{BuildRef, Guest as Render, Product, Rendered};
use orthrus::plugin::log;
use orthrus::plugin::types::Capability;

struct Legacy;

impl Guest for Legacy {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "legacy-renderer".into(),
            version: "0.1.0".into(),
            description: "A renderer of WIT 0.1.0".into(),
            handles: vec!["legacy".into()],
            capabilities: vec![Capability::Log],
        }
    }
}

impl Render for Legacy {
    fn render(product: Product, build: BuildRef) -> Result<Rendered, String> {
        if product.subtype == "fail" {
            return Err(format!("the 0.1.0 renderer refuses {} of build {}", product.name, build.id));
        }
        let logged = match log::write(log::Level::Info, "rendering") {
            Ok(()) => "logged".to_owned(),
            Err(refusal) => refusal,
        };
        Ok(Rendered::Html(format!("<p>shown by a 0.1.0 renderer: {} [{logged}]</p>", product.name)))
    }
}

export!(Legacy);
