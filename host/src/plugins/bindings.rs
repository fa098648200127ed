//! Host bindings of `wit/since_v0.1.0`. A later version of the WIT package
//! gets a module of its own beside this one, so that plugins built against
//! 0.1.0 keep loading.

wasmtime::component::bindgen!({
    path: "../wit/since_v0.1.0",
    world: "input-fetcher",
    imports: { default: async },
    exports: { default: async },
});
