//! Nix machines files, as operators write them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(machines) = orthrus::machines::spec::parse_machines_file(text, "machines") {
        for machine in machines {
            let _ = machine.is_local();
        }
    }
});
