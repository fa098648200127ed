//! The state of one plugin call's store: WASI, the limits, who the
//! plugin is and what it was granted (one `Option` per capability, checked
//! on every call by the host functions of `capability/`).

use std::path::{Path, PathBuf};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::capability::NotGranted;
use super::wit::latest::host_api::orthrus::plugin::types;
use super::{Grants, PluginId, Services};
use crate::confined::{Confined, Refused};

/// The data of one plugin call's store.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: super::call::CallLimiter,
    pub(super) plugin: PluginId,
    pub(super) grants: Grants,
    /// The plugin's scratch directory (`/scratch` for the plugin).
    pub(super) scratch: PathBuf,
    pub(super) services: Services,
    /// The project a release-set call is about: its queries see no other.
    pub(super) project_scope: Option<i64>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HostState {
    /// The refusal of a call that was not granted: `action` as in “may not …”.
    pub(super) fn not_granted(&self, action: &str) -> NotGranted {
        NotGranted { plugin: self.plugin.clone(), action: action.to_owned() }
    }

    /// The grant of a capability, or the refusal of `action`.
    pub(super) fn granted<'a, G>(&self, grant: &'a Option<G>, action: &str) -> Result<&'a G, NotGranted> {
        grant.as_ref().ok_or_else(|| self.not_granted(action))
    }

    /// A path the plugin names, inside its scratch directory, without
    /// following anything outside it.
    pub(super) fn scratch_path(&self, relative: &str) -> Result<PathBuf, String> {
        let relative = relative.strip_prefix("/scratch").unwrap_or(relative).trim_start_matches('/');
        // Links could lead out: the resolved path must still be inside.
        let scratch = Confined::open(&self.scratch).map_err(|e| e.to_string())?;
        scratch.resolve(Path::new(relative)).map_err(|refused| match refused {
            Refused::NotInside { .. } => format!("{relative:?} is not a path inside the scratch directory"),
            Refused::LeadsOut { .. } => format!("{relative:?} leads outside the scratch directory"),
            Refused::Io { source, .. } => format!("{relative:?}: {source}"),
            other => format!("{relative:?}: {other}"),
        })
    }
}

impl types::Host for HostState {}
