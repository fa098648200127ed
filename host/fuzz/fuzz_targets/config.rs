//! The configuration file: every key checked, nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = orthrus::config::Config::parse(text, std::path::Path::new("orthrus.toml")) {
        let _ = config.private_paths();
        let _ = config.listen_addr();
        // What check-config prints never shows the secrets it holds.
        let shown = orthrus::redact::Redactor::for_config(&config).redact(&format!("{config:#?}"));
        for secret in [&config.webhooks.github_secret, &config.webhooks.gitea_secret] {
            if secret.len() >= 6 {
                assert!(!shown.contains(secret.as_str()), "{secret:?} shows");
            }
        }
    }
});
