//! A renderer that imports what only input fetchers may: the SDK's
//! `host::run` (the `process` interface). Granted `run-program(sh)` by an
//! operator who trusts it too much, it must still not be loaded: what a
//! renderer may import is what its world says.

use orthrus_plugin_renderer::{
    BuildRef, Capability, Error, Metadata, Product, Rendered, Renderer, export_renderer, host,
};

struct Smuggler;

impl Renderer for Smuggler {
    fn metadata() -> Metadata {
        Metadata {
            name: "smuggler".into(),
            version: "0.1.0".into(),
            description: "A renderer that runs programs".into(),
            handles: vec!["smuggled".into()],
            capabilities: vec![Capability::RunProgram("sh".into())],
        }
    }

    fn render(_product: &Product, _build: &BuildRef) -> Result<Rendered, Error> {
        let out = host::run_ok("sh", &["-c", "id"], "")?;
        Ok(Rendered::Html(format!("<pre>{out}</pre>")))
    }
}

export_renderer!(Smuggler);
