//! The WIT versions the host speaks, one module each, as Zed's extension
//! host keeps them: a plugin built against any of them keeps loading when
//! a later one is added beside it. `latest` is the version the host's own
//! code (the capabilities, the world facades) is written against; an older
//! version's module adapts its calls to the latest and back, and nothing
//! else knows it exists.

pub mod since_v0_1_0;
pub mod since_v0_2_0;

pub use since_v0_2_0 as latest;

/// A version of the WIT package `orthrus:plugin` a component was built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum WitVersion {
    #[serde(rename = "0.1.0")]
    V0_1_0,
    #[serde(rename = "0.2.0")]
    V0_2_0,
}

impl std::fmt::Display for WitVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WitVersion::V0_1_0 => since_v0_1_0::VERSION,
            WitVersion::V0_2_0 => since_v0_2_0::VERSION,
        })
    }
}

/// The bindings of one WIT version (a folder of `wit/`): `host_api` holds
/// everything the host offers (one trait per interface); each world's
/// module reuses its imports and adds only that world's exports. Beside
/// them, `Pre`: a component of that version ready to instantiate, as the
/// world it exports, and `add_world`, which links a world's imports (and
/// nothing else) for it.
macro_rules! bindings_of_version {
    ($path:tt) => {
        pub mod host_api {
            wasmtime::component::bindgen!({
                path: $path,
                world: "host-api",
                imports: { default: async },
            });
        }

        pub mod fetcher {
            wasmtime::component::bindgen!({
                path: $path,
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
                path: $path,
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
                path: $path,
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
                path: $path,
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

        use wasmtime::component::{HasSelf, InstancePre, Linker};
        use $crate::plugins::PluginKind;
        use $crate::plugins::state::HostState;

        /// A component of this version, ready to instantiate, as the world
        /// it exports.
        #[derive(Clone)]
        pub enum Pre {
            InputFetcher(fetcher::InputFetcherPre<HostState>),
            Notifier(notifier::NotifierPre<HostState>),
            Renderer(renderer::RendererPre<HostState>),
            ReleaseSet(release_set::ReleaseSetPre<HostState>),
        }

        impl Pre {
            /// The world of this version whose exports `pre`'s component
            /// has; else why each world does not fit.
            pub fn exported(pre: InstancePre<HostState>) -> Result<Pre, Vec<String>> {
                let mut errors = Vec::new();
                match fetcher::InputFetcherPre::new(pre.clone()) {
                    Ok(p) => return Ok(Pre::InputFetcher(p)),
                    Err(e) => errors.push(format!("input-fetcher: {e:#}")),
                }
                match notifier::NotifierPre::new(pre.clone()) {
                    Ok(p) => return Ok(Pre::Notifier(p)),
                    Err(e) => errors.push(format!("notifier: {e:#}")),
                }
                match renderer::RendererPre::new(pre.clone()) {
                    Ok(p) => return Ok(Pre::Renderer(p)),
                    Err(e) => errors.push(format!("renderer: {e:#}")),
                }
                match release_set::ReleaseSetPre::new(pre) {
                    Ok(p) => return Ok(Pre::ReleaseSet(p)),
                    Err(e) => errors.push(format!("release-set: {e:#}")),
                }
                Err(errors)
            }

            pub fn kind(&self) -> PluginKind {
                match self {
                    Pre::InputFetcher(_) => PluginKind::InputFetcher,
                    Pre::Notifier(_) => PluginKind::Notifier,
                    Pre::Renderer(_) => PluginKind::Renderer,
                    Pre::ReleaseSet(_) => PluginKind::ReleaseSet,
                }
            }

            /// What the plugin says it is, in this version's words.
            pub async fn metadata(
                &self,
                store: &mut wasmtime::Store<HostState>,
            ) -> wasmtime::Result<host_api::orthrus::plugin::types::PluginMetadata> {
                match self {
                    Pre::InputFetcher(pre) => pre.instantiate_async(&mut *store).await?.call_metadata(store).await,
                    Pre::Notifier(pre) => pre.instantiate_async(&mut *store).await?.call_metadata(store).await,
                    Pre::Renderer(pre) => pre.instantiate_async(&mut *store).await?.call_metadata(store).await,
                    Pre::ReleaseSet(pre) => pre.instantiate_async(&mut *store).await?.call_metadata(store).await,
                }
            }
        }

        /// Adds everything the host offers in this version (to tell which
        /// world a component exports).
        pub fn add_host_api(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
            host_api::HostApi::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
        }

        /// Adds the imports of one world of this version, as its bindings
        /// list them: what a kind of plugin may import is what `worlds.wit`
        /// says, not a list kept by hand.
        pub fn add_world(kind: PluginKind, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
            type Own = HasSelf<HostState>;
            match kind {
                PluginKind::InputFetcher => fetcher::InputFetcher::add_to_linker::<HostState, Own>(linker, |s| s),
                PluginKind::Notifier => notifier::Notifier::add_to_linker::<HostState, Own>(linker, |s| s),
                PluginKind::Renderer => renderer::Renderer::add_to_linker::<HostState, Own>(linker, |s| s),
                PluginKind::ReleaseSet => release_set::ReleaseSet::add_to_linker::<HostState, Own>(linker, |s| s),
            }
        }
    };
}

use bindings_of_version;
