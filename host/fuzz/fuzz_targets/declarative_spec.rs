//! Declarative projects' spec files (JSON and TOML), and the output of a
//! generator job, as a project's repository holds them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orthrus::projects::declarative::{parse_generated, parse_spec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_spec(text, "spec.json");
    let _ = parse_spec(text, "spec.toml");
    let _ = parse_generated(text);
});
