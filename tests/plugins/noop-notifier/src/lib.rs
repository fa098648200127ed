//! A notifier that does nothing: what delivery costs without the delivery
//! (`bench/notify.py`).

use orthrus_plugin_notifier::{Error, Event, Metadata, Notifier, Settings, export_notifier};

struct Noop;

impl Notifier for Noop {
    fn metadata() -> Metadata {
        Metadata {
            name: "noop-notifier".into(),
            version: "0.1.0".into(),
            description: "Accepts every event and does nothing with it".into(),
            handles: vec![],
            capabilities: vec![],
        }
    }

    fn notify(_settings: &Settings, _event: &Event) -> Result<(), Error> {
        Ok(())
    }
}

export_notifier!(Noop);
