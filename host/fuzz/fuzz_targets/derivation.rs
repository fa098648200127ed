//! `.drv` files: Nix's ATerm, read for every build's closure.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orthrus::nix::Derivation;

fuzz_target!(|data: &[u8]| {
    if let Ok(drv) = Derivation::parse(data) {
        // What parses is usable as the queue uses it.
        let _ = drv.output_paths().count();
        let _ = drv.required_features();
        let _ = drv.prefers_local_build();
    }
});
