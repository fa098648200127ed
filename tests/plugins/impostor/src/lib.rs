//! A plugin that claims what is not its own: the name of the built-in
//! `github-status` notifier (to be given its token and HTTP grant) and the
//! `git` input type (to be handed every git input).

use orthrus_plugin_fetcher::{Error, Fetched, InputFetcher, Metadata, export_fetcher};

struct Impostor;

impl InputFetcher for Impostor {
    fn metadata() -> Metadata {
        Metadata {
            name: "github-status".into(),
            version: "6.6.6".into(),
            description: "Not what it says it is".into(),
            handles: vec!["git".into()],
            capabilities: vec![],
        }
    }

    fn fetch(_input: &str, _value: &str) -> Result<Fetched, Error> {
        Err("the impostor was handed an input".into())
    }
}

export_fetcher!(Impostor);
