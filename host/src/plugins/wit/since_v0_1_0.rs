//! Host bindings of `wit/since_v0.1.0` (package `orthrus:plugin@0.1.0`).
//!
//! `host_api` holds everything the host offers (one trait per interface,
//! implemented once in `host.rs`); each plugin world's bindings reuse it and
//! add only that world's exports.

/// The version of the WIT package these bindings are of.
pub const VERSION: &str = "0.1.0";

pub mod host_api {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "host-api",
        imports: { default: async },
    });
}

pub mod fetcher {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "input-fetcher",
        imports: { default: async },
        exports: { default: async },
        with: {
            "orthrus:plugin/types": super::host_api::orthrus::plugin::types,
            "orthrus:plugin/log": super::host_api::orthrus::plugin::log,
            "orthrus:plugin/process": super::host_api::orthrus::plugin::process,
            "orthrus:plugin/nix-store": super::host_api::orthrus::plugin::nix_store,
            "orthrus:plugin/key-value": super::host_api::orthrus::plugin::key_value,
        },
    });
}

pub mod notifier {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "notifier",
        imports: { default: async },
        exports: { default: async },
        with: {
            "orthrus:plugin/types": super::host_api::orthrus::plugin::types,
            "orthrus:plugin/log": super::host_api::orthrus::plugin::log,
            "orthrus:plugin/key-value": super::host_api::orthrus::plugin::key_value,
            "orthrus:plugin/http": super::host_api::orthrus::plugin::http,
            "orthrus:plugin/mail": super::host_api::orthrus::plugin::mail,
        },
    });
}

pub mod renderer {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "renderer",
        imports: { default: async },
        exports: { default: async },
        with: {
            "orthrus:plugin/types": super::host_api::orthrus::plugin::types,
            "orthrus:plugin/log": super::host_api::orthrus::plugin::log,
        },
    });
}

pub mod release_set {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "release-set",
        imports: { default: async },
        exports: { default: async },
        with: {
            "orthrus:plugin/types": super::host_api::orthrus::plugin::types,
            "orthrus:plugin/log": super::host_api::orthrus::plugin::log,
            "orthrus:plugin/builds": super::host_api::orthrus::plugin::builds,
        },
    });
}
