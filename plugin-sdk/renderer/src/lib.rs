//! Orthrus plugins of the `renderer` world: a plugin that shows build products on a build's page.
//! Implement [`Renderer`], call its export macro, build for
//! `wasm32-wasip2`; see `plugin-sdk/README.md`. Everything of the SDK's
//! core (`Metadata`, `Settings`, `host`, `BuildStatus`, …) is re-exported
//! here, so a plugin depends on this crate alone.

#![deny(missing_docs)]

// The generated code names this crate by its absolute path, which must
// resolve here as well as in the plugins.
extern crate self as orthrus_plugin_renderer;

pub use orthrus_plugin_sdk::*;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/since_v0.2.0",
        world: "renderer",
        with: {
            "orthrus:plugin/types@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::types,
            "orthrus:plugin/log@0.2.0": ::orthrus_plugin_sdk::bindings::host::orthrus::plugin::log,
        },
        pub_export_macro: true,
        export_macro_name: "__export_renderer",
        default_bindings_module: "::orthrus_plugin_renderer::bindings",
        runtime_path: "::orthrus_plugin_renderer::__private::wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

/// A product, its build, and what a renderer returns.
pub use crate::bindings::exports::orthrus::plugin::render::{BuildRef, Link, Product, Rendered};

/// A plugin that shows build products of the types it
/// [handles](crate::Metadata::handles) on the build's page.
///
/// It runs under a strict budget of instructions and time, and its HTML is
/// sanitised by the host: scripts, styles and event handlers are removed.
pub trait Renderer {
    /// What the plugin is and asks for; called once when it is loaded.
    fn metadata() -> crate::Metadata;

    /// An HTML fragment or a link for one product.
    fn render(product: &Product, build: &BuildRef) -> Result<Rendered, crate::Error>;
}

/// Helpers for writing HTML fragments.
pub mod html {
    /// Escapes text for HTML element content and attribute values.
    pub fn escape(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&#39;"),
                c => out.push(c),
            }
        }
        out
    }

    /// A link that opens a browsable product (`doc`, `report`, …) at its
    /// default page, titled `TITLE: SUBTYPE` (or the product's name).
    pub fn browse_link(product: &super::Product, build: &super::BuildRef, title: &str) -> super::Link {
        let href = if product.default_path.is_empty() {
            build.download_url.clone()
        } else {
            format!("{}/{}", build.download_url, product.default_path.trim_start_matches('/'))
        };
        let what = if product.subtype.is_empty() { &product.name } else { &product.subtype };
        super::Link { href, text: format!("{title}: {what}") }
    }

    /// A size in bytes for people: `1.5 MiB`.
    pub fn size(bytes: u64) -> String {
        const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
        let mut value = bytes as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 { format!("{bytes} bytes") } else { format!("{value:.1} {}", UNITS[unit]) }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn escapes_and_sizes() {
            assert_eq!(super::escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
            assert_eq!(super::size(512), "512 bytes");
            assert_eq!(super::size(1536), "1.5 KiB");
            assert_eq!(super::size(3 << 30), "3.0 GiB");
        }
    }
}

/// Exports a type implementing [`Renderer`] as the plugin's renderer.
#[macro_export]
macro_rules! export_renderer {
    ($renderer:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::__export_metadata!($crate::bindings::Guest, $renderer, $crate::Renderer);

            impl $crate::bindings::exports::orthrus::plugin::render::Guest for __OrthrusPlugin {
                fn render(
                    product: $crate::Product,
                    build: $crate::BuildRef,
                ) -> ::std::result::Result<$crate::Rendered, $crate::Error> {
                    <$renderer as $crate::Renderer>::render(&product, &build)
                }
            }

            $crate::bindings::__export_renderer!(__OrthrusPlugin);
        };
    };
}
