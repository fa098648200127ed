//! Input fetchers: a value checked, an input fetched, the changes between
//! two revisions.

use super::super::wit::latest::fetcher::exports::orthrus::plugin::fetcher;
use super::super::wit::{since_v0_1_0 as v0_1, since_v0_2_0 as v0_2};
use super::super::{AttrValue, Change, FetchedSource, HostState, PluginError, PluginRuntime};
use super::WorldPre;
use crate::nix::StorePath;

impl PluginRuntime {
    pub async fn check_value(&self, input_type: &str, value: &str) -> Result<(), PluginError> {
        let plugin = self.fetcher(input_type)?;
        let value = value.to_owned();
        self.inner
            .call(&plugin, false, self.inner.io_limits, None, async move |store, pre| match fetcher_pre(pre) {
                Fetcher::V0_1(pre) => v0_1::call::check_value(pre, store, &value).await,
                Fetcher::V0_2(pre) => {
                    pre.instantiate_async(&mut *store)
                        .await?
                        .orthrus_plugin_fetcher()
                        .call_check_value(store, &value)
                        .await
                }
            })
            .await?
            .map_err(|e| PluginError::answered(&plugin.info.id, e))
    }

    /// Fetches an input through the plugin that handles its type.
    pub async fn fetch(&self, input_type: &str, input_name: &str, value: &str) -> Result<FetchedSource, PluginError> {
        let plugin = self.fetcher(input_type)?;
        let (name, value) = (input_name.to_owned(), value.to_owned());
        let fetched = self
            .inner
            .call(&plugin, true, self.inner.io_limits, None, async move |store, pre| match fetcher_pre(pre) {
                Fetcher::V0_1(pre) => v0_1::call::fetch(pre, store, &name, &value).await,
                Fetcher::V0_2(pre) => {
                    pre.instantiate_async(&mut *store)
                        .await?
                        .orthrus_plugin_fetcher()
                        .call_fetch(store, &name, &value)
                        .await
                }
            })
            .await?
            .map_err(|e| PluginError::answered(&plugin.info.id, e))?;
        let store_path = StorePath::parse(&fetched.store_path).map_err(|e| PluginError::Crashed {
            plugin: plugin.info.id.to_string(),
            what: format!("returned a source that is not in the Nix store: {e}"),
            transient: false,
        })?;
        Ok(FetchedSource {
            store_path,
            revision: fetched.revision,
            uri: fetched.uri,
            attrs: fetched
                .attrs
                .into_iter()
                .map(|a| {
                    let value = match a.value {
                        fetcher::AttrValue::Str(s) => AttrValue::String(s),
                        fetcher::AttrValue::Int(i) => AttrValue::Int(i),
                        fetcher::AttrValue::Boolean(b) => AttrValue::Bool(b),
                    };
                    (a.name, value)
                })
                .collect(),
        })
    }

    /// The changes after revision `since` up to `until` of an input.
    pub async fn changes(
        &self,
        input_type: &str,
        value: &str,
        since: &str,
        until: &str,
    ) -> Result<Vec<Change>, PluginError> {
        let plugin = self.fetcher(input_type)?;
        let (value, since, until) = (value.to_owned(), since.to_owned(), until.to_owned());
        let changes = self
            .inner
            .call(&plugin, true, self.inner.io_limits, None, async move |store, pre| match fetcher_pre(pre) {
                Fetcher::V0_1(pre) => v0_1::call::changes(pre, store, [&value, &since, &until]).await,
                Fetcher::V0_2(pre) => {
                    let instance = pre.instantiate_async(&mut *store).await?;
                    instance.orthrus_plugin_fetcher().call_changes(store, &value, &since, &until).await
                }
            })
            .await?
            .map_err(|e| PluginError::answered(&plugin.info.id, e))?;
        Ok(changes
            .into_iter()
            .map(|c| Change {
                revision: c.revision,
                author: c.author,
                email: c.email,
                time: c.time,
                message: c.message,
            })
            .collect())
    }
}

/// An input-fetcher plugin, in its version.
enum Fetcher<'a> {
    V0_1(&'a v0_1::fetcher::InputFetcherPre<HostState>),
    V0_2(&'a v0_2::fetcher::InputFetcherPre<HostState>),
}

fn fetcher_pre(pre: &WorldPre) -> Fetcher<'_> {
    match pre {
        WorldPre::V0_1(v0_1::Pre::InputFetcher(pre)) => Fetcher::V0_1(pre),
        WorldPre::V0_2(v0_2::Pre::InputFetcher(pre)) => Fetcher::V0_2(pre),
        _ => unreachable!("fetchers are input-fetcher plugins"),
    }
}
