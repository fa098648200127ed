//! Build products as their renderer plugins show them. A renderer runs
//! under a strict budget (fuel and a deadline); what it returns is
//! sanitised here (no scripts, styles, event handlers or `javascript:`
//! links) and bounded in size, and the result — an error included — is
//! kept, so that a slow or hostile renderer costs one call per product,
//! not one per page view. Only a missed deadline (the machine may have
//! been busy) is tried again at the next view.

use std::sync::Arc;

use serde_json::{Value, json};

use super::AppState;
use crate::db::BuildView;
use crate::plugins::api::{BuildRef, ProductToRender, Rendered};

/// HTML a renderer may return for one product.
const MAX_HTML: usize = 64 * 1024;

/// Rendered products by build, product number, and what identifies the
/// product of this run (a restarted build gets new products).
type RenderKey = (i64, i32, i64, String);

pub struct RenderCache {
    cache: quick_cache::sync::Cache<RenderKey, Arc<RenderedProduct>>,
}

/// A product as its renderer showed it.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedProduct {
    /// The plugin that rendered it.
    pub renderer: String,
    pub shown: Shown,
}

/// What a renderer's answer became.
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    /// Sanitised HTML.
    Html(String),
    /// A checked link, and the same as (escaped) HTML.
    Link { href: String, text: String, html: String },
    /// Why there is nothing to show (the page offers the download instead).
    Error(String),
}

impl Shown {
    /// The HTML to put on the page, safe as it is.
    pub fn html(&self) -> Option<&str> {
        match self {
            Shown::Html(html) | Shown::Link { html, .. } => Some(html),
            Shown::Error(_) => None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Shown::Error(error) => Some(error),
            _ => None,
        }
    }
}

impl RenderedProduct {
    /// As the JSON API gives it (`rendered` of a build product):
    /// `{renderer, html}`, `{renderer, link: {href, text}, html}` or
    /// `{renderer, error}`.
    pub fn to_json(&self) -> Value {
        match &self.shown {
            Shown::Html(html) => json!({ "renderer": self.renderer, "html": html }),
            Shown::Link { href, text, html } => {
                json!({ "renderer": self.renderer, "link": { "href": href, "text": text }, "html": html })
            }
            Shown::Error(error) => json!({ "renderer": self.renderer, "error": error }),
        }
    }
}

impl Default for RenderCache {
    fn default() -> Self {
        RenderCache { cache: quick_cache::sync::Cache::new(10_000) }
    }
}

/// The products of one build that renderers handle, as they showed them.
pub struct RenderedProducts {
    /// By product number.
    pub products: Vec<(i32, Arc<RenderedProduct>)>,
    /// Whether the next view will show the same: none was left plain
    /// because the renderers were busy or missed a deadline.
    pub lasting: bool,
}

/// The rendered view of each product of a finished build that a renderer
/// handles, by product number.
pub async fn render_products(state: &AppState, view: &BuildView) -> RenderedProducts {
    let b = &view.build;
    let mut rendered = Vec::new();
    let mut all_lasting = true;
    // A product refused at ingestion (its path leads out of its output)
    // is never handed to a plugin.
    for product in view.products.iter().filter(|p| p.error.is_none()) {
        let Some(renderer) = state.plugins.renderer_for(&product.kind) else { continue };
        let identity = format!("{}\0{}", product.path, product.sha256_hash.as_deref().unwrap_or(""));
        let key = (b.id, product.product_nr, b.stop_time.unwrap_or(0), identity);
        if let Some(value) = state.rendered.cache.get(&key) {
            rendered.push((product.product_nr, value));
            continue;
        }
        let build_url = state.url(&format!("/build/{}", b.id));
        let to_render = ProductToRender {
            nr: u32::try_from(product.product_nr).unwrap_or(0),
            kind: product.kind.clone(),
            subtype: product.subtype.clone(),
            name: product.name.clone(),
            path: product.path.clone(),
            default_path: product.default_path.clone(),
            size: product.file_size.and_then(|s| u64::try_from(s).ok()),
            sha256: product.sha256_hash.clone(),
        };
        let build = BuildRef {
            id: b.id,
            project: view.project.clone(),
            jobset: view.jobset.clone(),
            job: b.job.clone(),
            nix_name: b.nix_name.clone(),
            release_name: b.release_name.clone(),
            download_url: format!("{build_url}/download/{}", product.product_nr),
            url: build_url,
        };
        // A flood of page views renders at most so many products at once;
        // the others show plainly this time.
        let Ok(_slot) = state.plugin_calls.renders.try_acquire() else {
            let busy = Shown::Error("the renderers are busy".into());
            rendered.push((product.product_nr, Arc::new(RenderedProduct { renderer, shown: busy })));
            all_lasting = false;
            continue;
        };
        // What the plugin does with this product is kept, failures
        // included; a deadline missed on a busy machine is not.
        let mut lasting = true;
        let shown = match state.plugins.render(&renderer, &to_render, &build).await {
            Ok(result) => match sanitise(result) {
                Ok(shown) => shown,
                Err(error) => Shown::Error(format!("renderer ‘{renderer}’ {error}")),
            },
            Err(error) => {
                lasting = !error.is_transient();
                Shown::Error(error.to_string())
            }
        };
        if let Some(error) = shown.error() {
            tracing::warn!(build = b.id, product = product.product_nr, "rendering a product failed: {error}");
        }
        let value = Arc::new(RenderedProduct { renderer, shown });
        if lasting {
            state.rendered.cache.insert(key, value.clone());
        }
        all_lasting &= lasting;
        rendered.push((product.product_nr, value));
    }
    RenderedProducts { products: rendered, lasting: all_lasting }
}

/// Safe HTML from what a renderer returned.
fn sanitise(rendered: Rendered) -> Result<Shown, String> {
    match rendered {
        Rendered::Html(html) => {
            if html.len() > MAX_HTML {
                return Err(format!("returned {} bytes of HTML; at most {MAX_HTML} are shown", html.len()));
            }
            Ok(Shown::Html(ammonia::clean(&html)))
        }
        Rendered::Link { href, text } => {
            let safe = href.starts_with("https://") || href.starts_with("http://") || href.starts_with('/');
            if !safe || href.starts_with("//") {
                return Err(format!("returned a link to {href:?}: only http(s) URLs and paths on this server"));
            }
            if href.len() + text.len() > MAX_HTML {
                return Err("returned a link too long to show".into());
            }
            let html = format!("<a href=\"{}\">{}</a>", ammonia::clean_text(&href), ammonia::clean_text(&text));
            Ok(Shown::Link { href, text, html })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_and_handlers_are_removed() {
        let value = sanitise(Rendered::Html(
            "<p onclick=\"steal()\">hi<script>alert(1)</script><a href=\"javascript:x()\">x</a><style>*{}</style></p>"
                .into(),
        ))
        .unwrap();
        let html = value.html().unwrap();
        assert!(html.contains("<p>hi"), "{html}");
        for bad in ["script", "onclick", "javascript:", "style"] {
            assert!(!html.contains(bad), "{bad} in {html}");
        }
    }

    #[test]
    fn links_are_escaped_and_checked() {
        let value = sanitise(Rendered::Link { href: "/build/1/download/1".into(), text: "<b>x</b>".into() }).unwrap();
        assert_eq!(
            value.html().unwrap(),
            "<a href=\"&#47;build&#47;1&#47;download&#47;1\">&lt;b&gt;x&lt;&#47;b&gt;</a>"
        );
        assert!(sanitise(Rendered::Link { href: "javascript:alert(1)".into(), text: "x".into() }).is_err());
        assert!(sanitise(Rendered::Link { href: "//evil.example/x".into(), text: "x".into() }).is_err());
        assert!(sanitise(Rendered::Html("x".repeat(MAX_HTML + 1))).is_err());
    }
}
