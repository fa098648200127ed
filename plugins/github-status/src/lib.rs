//! Commit statuses on GitHub: pending while a build is queued and
//! running, then success or failure, on each git revision the build was
//! evaluated from. See `orthrus-commit-status` for the settings.

// On the host only the pure parts are used (by the tests): the exports are
// built for WebAssembly alone.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use orthrus_commit_status::Forge;
use orthrus_plugin_notifier::{Capability, Error, Event, Metadata, Notifier, Settings, export_notifier};

struct GitHubStatus;

impl Notifier for GitHubStatus {
    fn metadata() -> Metadata {
        Metadata {
            name: "github-status".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Sets commit statuses on GitHub for the revisions builds were evaluated from".into(),
            handles: vec![],
            // The API's host is the operator's to grant.
            capabilities: vec![Capability::Http("*".into())],
        }
    }

    fn notify(settings: &Settings, event: &Event) -> Result<(), Error> {
        orthrus_commit_status::notify(Forge::GitHub, settings, event)
    }
}

export_notifier!(GitHubStatus);
