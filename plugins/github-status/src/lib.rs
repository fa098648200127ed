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
        Metadata::new("github-status", env!("CARGO_PKG_VERSION"))
            .describe("Sets commit statuses on GitHub for the revisions builds were evaluated from")
            // The API's host is the operator's to grant.
            .needs(Capability::Http("*".into()))
    }

    fn notify(settings: &Settings, event: &Event) -> Result<(), Error> {
        orthrus_commit_status::notify(Forge::GitHub, settings, event)
    }
}

export_notifier!(GitHubStatus);
