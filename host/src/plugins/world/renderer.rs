//! Renderers: a build product shown on its build's page.

use super::super::api::{BuildRef, ProductToRender, Rendered};
use super::super::wit::latest::renderer::exports::orthrus::plugin::render as wit_render;
use super::super::wit::{since_v0_1_0 as v0_1, since_v0_2_0 as v0_2};
use super::super::{PluginError, PluginKind, PluginRuntime};
use super::{WorldPre, unsigned};

impl PluginRuntime {
    /// Renders a build product with the renderer of its type. The result is
    /// what the plugin returned: the caller sanitises it.
    pub async fn render(
        &self,
        renderer: &str,
        product: &ProductToRender,
        build: &BuildRef,
    ) -> Result<Rendered, PluginError> {
        let plugin = self.plugin_of_kind(renderer, PluginKind::Renderer)?;
        let (product, build) = (wit_product(product), wit_build_ref(build));
        let rendered = self
            .inner
            .call(&plugin, false, self.inner.render_limits, None, async move |store, pre| match pre {
                WorldPre::V0_1(v0_1::Pre::Renderer(pre)) => v0_1::call::render(pre, store, product, build).await,
                WorldPre::V0_2(v0_2::Pre::Renderer(pre)) => {
                    let instance = pre.instantiate_async(&mut *store).await?;
                    instance.orthrus_plugin_render().call_render(store, &product, &build).await
                }
                _ => unreachable!("checked by plugin_of_kind"),
            })
            .await?
            .map_err(|e| PluginError::answered(&plugin.info.id, e))?;
        Ok(from_wit(rendered))
    }
}

fn wit_product(product: &ProductToRender) -> wit_render::Product {
    wit_render::Product {
        nr: product.nr,
        type_: product.kind.clone(),
        subtype: product.subtype.clone(),
        name: product.name.clone(),
        path: product.path.clone(),
        default_path: product.default_path.clone(),
        size: product.size,
        sha256: product.sha256.clone(),
    }
}

fn wit_build_ref(build: &BuildRef) -> wit_render::BuildRef {
    wit_render::BuildRef {
        id: unsigned(build.id),
        project: build.project.clone(),
        jobset: build.jobset.clone(),
        job: build.job.clone(),
        nix_name: build.nix_name.clone(),
        release_name: build.release_name.clone(),
        url: build.url.clone(),
        download_url: build.download_url.clone(),
    }
}

fn from_wit(rendered: wit_render::Rendered) -> Rendered {
    match rendered {
        wit_render::Rendered::Html(html) => Rendered::Html(html),
        wit_render::Rendered::Link(link) => Rendered::Link { href: link.href, text: link.text },
    }
}
