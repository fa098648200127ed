//! Release sets: the releases of a set, computed by the plugin from
//! read-only queries on one project.

use std::collections::BTreeMap;

use super::super::api::Release;
use super::super::wit::latest::release_set::exports::orthrus::plugin::releases as wit_releases;
use super::super::wit::{since_v0_1_0 as v0_1, since_v0_2_0 as v0_2};
use super::super::{PluginError, PluginKind, PluginRuntime};
use super::{WorldPre, wit_settings};

impl PluginRuntime {
    /// The releases of a release set of project `project_id`, newest first.
    /// The plugin's queries see only that project.
    pub async fn releases(
        &self,
        plugin: &str,
        project_id: i64,
        settings: &BTreeMap<String, String>,
        limit: u32,
    ) -> Result<Vec<Release>, PluginError> {
        let plugin = self.plugin_of_kind(plugin, PluginKind::ReleaseSet)?;
        let settings = wit_settings(settings);
        let releases = self
            .inner
            .call(&plugin, false, self.inner.release_set_limits, Some(project_id), async move |store, pre| match pre {
                WorldPre::V0_1(v0_1::Pre::ReleaseSet(pre)) => v0_1::call::releases(pre, store, settings, limit).await,
                WorldPre::V0_2(v0_2::Pre::ReleaseSet(pre)) => {
                    let instance = pre.instantiate_async(&mut *store).await?;
                    instance.orthrus_plugin_releases().call_releases(store, &settings, limit).await
                }
                _ => unreachable!("checked by plugin_of_kind"),
            })
            .await?
            .map_err(|e| PluginError::answered(&plugin.info.id, e))?;
        Ok(releases.into_iter().map(from_wit).collect())
    }
}

fn from_wit(release: wit_releases::Release) -> Release {
    Release {
        name: release.name,
        timestamp: release.timestamp,
        members: release.members.into_iter().map(|m| (i64::try_from(m.build).unwrap_or(-1), m.label)).collect(),
    }
}
