//! The state of one plugin call's store: WASI, the limits, who the
//! plugin is and what it was granted (one `Option` per capability, checked
//! on every call by the host functions of `capability/`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::capability::{Capability, NotGranted};
use super::wit::latest::Error as WitError;
use super::{Grants, PluginId, Services};
use crate::confined::{Confined, Refused};

/// The data of one plugin call's store.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: super::call::CallLimiter,
    pub(super) plugin: PluginId,
    pub(super) grants: Arc<Grants>,
    /// The plugin's scratch directory (`/scratch` for the plugin).
    pub(super) scratch: PathBuf,
    pub(super) services: Arc<Services>,
    /// The project a release-set call is about: its queries see no other.
    pub(super) project_scope: Option<i64>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HostState {
    /// The refusal of a call that needs `capability`.
    pub(super) fn not_granted(&self, capability: Capability) -> NotGranted {
        NotGranted { plugin: self.plugin.clone(), capability }
    }

    /// The grant of a capability, or the refusal of a call that needs
    /// `capability` (which that grant would give).
    pub(super) fn granted<'a, G>(&self, grant: &'a Option<G>, capability: Capability) -> Result<&'a G, NotGranted> {
        grant.as_ref().ok_or_else(|| self.not_granted(capability))
    }

    /// A path the plugin names, inside its scratch directory, without
    /// following anything outside it.
    pub(super) fn scratch_path(&self, relative: &str) -> Result<PathBuf, WitError> {
        let relative = relative.strip_prefix("/scratch").unwrap_or(relative).trim_start_matches('/');
        // Links could lead out: the resolved path must still be inside.
        let scratch = Confined::open(&self.scratch).map_err(|e| WitError::Failed(e.to_string()))?;
        scratch.resolve(Path::new(relative)).map_err(|refused| match refused {
            Refused::NotInside { .. } => {
                WitError::InvalidInput(format!("{relative:?} is not a path inside the scratch directory"))
            }
            Refused::LeadsOut { .. } => {
                WitError::InvalidInput(format!("{relative:?} leads outside the scratch directory"))
            }
            Refused::Io { source, .. } => WitError::Failed(format!("{relative:?}: {source}")),
            other => WitError::InvalidInput(format!("{relative:?}: {other}")),
        })
    }
}
