//! Notifiers: an event handed to the plugin, at least once.

use std::collections::BTreeMap;

use super::super::api::NotifyEvent;
use super::super::wit::latest::notifier::exports::orthrus::plugin::notify as wit_notify;
use super::super::wit::{since_v0_1_0 as v0_1, since_v0_2_0 as v0_2};
use super::super::{PluginError, PluginKind, PluginRuntime};
use super::{WorldPre, unsigned, wit_settings};

impl PluginRuntime {
    /// Tells notifier `plugin` about an event.
    pub async fn notify(
        &self,
        plugin: &str,
        settings: &BTreeMap<String, String>,
        event: &NotifyEvent,
    ) -> Result<(), PluginError> {
        let plugin = self.plugin_of_kind(plugin, PluginKind::Notifier)?;
        let settings = wit_settings(settings);
        let event = wit_event(event);
        self.inner
            .call(&plugin, false, self.inner.io_limits, None, async move |store, pre| match pre {
                WorldPre::V0_1(v0_1::Pre::Notifier(pre)) => v0_1::call::notify(pre, store, settings, event).await,
                WorldPre::V0_2(v0_2::Pre::Notifier(pre)) => {
                    let instance = pre.instantiate_async(&mut *store).await?;
                    instance.orthrus_plugin_notify().call_notify(store, &settings, &event).await
                }
                _ => unreachable!("checked by plugin_of_kind"),
            })
            .await?
            .map_err(|e| PluginError::answered(&plugin.info.id, e))
    }
}

fn wit_event(event: &NotifyEvent) -> wit_notify::Event {
    let outputs = |outputs: &[(String, String)]| {
        outputs.iter().map(|(name, path)| wit_notify::Output { name: name.clone(), path: path.clone() }).collect()
    };
    wit_notify::Event {
        id: unsigned(event.id),
        kind: event.kind.clone(),
        time: event.time,
        jobset: wit_notify::JobsetInfo {
            project: event.jobset.project.clone(),
            name: event.jobset.name.clone(),
            email_enabled: event.jobset.email_enabled,
            email_override: event.jobset.email_override.clone(),
            url: event.jobset.url.clone(),
        },
        eval_id: event.eval_id.map(unsigned),
        inputs: event
            .inputs
            .iter()
            .map(|i| wit_notify::InputRevision {
                name: i.name.clone(),
                type_: i.kind.clone(),
                value: i.value.clone(),
                uri: i.uri.clone(),
                revision: i.revision.clone(),
            })
            .collect(),
        build: event.build.as_ref().map(|b| wit_notify::BuildInfo {
            id: unsigned(b.id),
            job: b.job.clone(),
            nix_name: b.nix_name.clone(),
            system: b.system.clone(),
            drv_path: b.drv_path.clone(),
            status: b.status,
            previous_id: b.previous_id.map(unsigned),
            previous_status: b.previous_status,
            queued: b.queued,
            started: b.started,
            stopped: b.stopped,
            machine: b.machine.clone(),
            maintainers: b.maintainers.clone(),
            outputs: outputs(&b.outputs),
            release_name: b.release_name.clone(),
            log_tail: b.log_tail.clone(),
            url: b.url.clone(),
            log_url: b.log_url.clone(),
        }),
        step_nr: event.step_nr,
        data: event.data.to_string(),
        json: serde_json::to_string(event).unwrap_or_default(),
    }
}
