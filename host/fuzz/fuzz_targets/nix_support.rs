//! `nix-support/hydra-build-products` and `hydra-metrics` lines, as a
//! build (an attacker) writes them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orthrus::queue::{ProductLine, parse_metric_line};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Some(product) = ProductLine::parse(line) {
            // A default path never leaves its product.
            let inside = std::path::Path::new(product.default_path)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            assert!(inside, "{line:?} gave the default path {:?}", product.default_path);
            assert!(!product.path.contains(['<', '>', '"']));
        }
        if let Some(metric) = parse_metric_line(line) {
            assert!(metric.value.is_finite());
        }
    }
});
