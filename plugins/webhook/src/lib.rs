//! POSTs each event it is told about, as JSON (the event's `json`), to the
//! URL of its settings, signed with HMAC-SHA256 the way GitHub signs its
//! webhooks, so that the receiver can check that Orthrus sent it:
//!
//! - `X-Orthrus-Event`: the event's kind (`build-finished`, …);
//! - `X-Orthrus-Delivery`: the event's id (the same on a repeated delivery);
//! - `X-Orthrus-Signature-256`: `sha256=` and the hex HMAC of the body with
//!   the setting `secret` (left out when there is no secret).
//!
//! Settings: `url` (required), `secret`. The operator grants the URL's
//! host: `[plugins.grants.webhook] http = ["hooks.example.org"]`.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use hmac::{Hmac, Mac};
use orthrus_plugin_notifier::host::http;
use orthrus_plugin_notifier::{Capability, Error, Event, Metadata, Notifier, Settings, export_notifier};
use sha2::Sha256;

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

struct Webhook;

impl Notifier for Webhook {
    fn metadata() -> Metadata {
        Metadata::new("webhook", env!("CARGO_PKG_VERSION"))
            .describe("POSTs each event as JSON, signed with HMAC-SHA256")
            // The receiving host is the operator's to grant.
            .needs(Capability::Http("*".into()))
    }

    fn notify(settings: &Settings, event: &Event) -> Result<(), Error> {
        let url = settings.required("url")?;
        let id = event.id.to_string();
        let mut headers = vec![("X-Orthrus-Event", event.kind.as_str()), ("X-Orthrus-Delivery", id.as_str())];
        let signed;
        if let Some(secret) = settings.get("secret").filter(|s| !s.is_empty()) {
            signed = signature(secret, event.json.as_bytes());
            headers.push(("X-Orthrus-Signature-256", signed.as_str()));
        }
        http::send_ok(&http::json_request("POST", url, &event.json, &headers)).map(drop)
    }
}

export_notifier!(Webhook);

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_a_known_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
