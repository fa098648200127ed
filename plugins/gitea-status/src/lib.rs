//! Commit statuses on Gitea: pending while a build is queued and
//! running, then success or failure, on each git revision the build was
//! evaluated from. See `orthrus-commit-status` for the settings.

// On the host only the pure parts are used (by the tests): the exports are
// built for WebAssembly alone.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use orthrus_commit_status::Forge;
use orthrus_plugin_notifier::{Capability, Error, Event, Metadata, Notifier, Settings, export_notifier};

struct GiteaStatus;

impl Notifier for GiteaStatus {
    fn metadata() -> Metadata {
        Metadata::new("gitea-status", env!("CARGO_PKG_VERSION"))
            .describe("Sets commit statuses on Gitea for the revisions builds were evaluated from")
            // The API's host is the operator's to grant.
            .needs(Capability::Http("*".into()))
    }

    fn notify(settings: &Settings, event: &Event) -> Result<(), Error> {
        orthrus_commit_status::notify(Forge::Gitea, settings, event)
    }
}

export_notifier!(GiteaStatus);
