//! What a plugin can ask of the server, each request checked against the
//! operator's grant on every call. A refused call is an `Err` for the
//! plugin to report, never a trap and never a system call.

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::orthrus::plugin::{key_value, log, nix_store, process, types};
use super::{Grants, Services};

/// Output a program may write to each of stdout and stderr.
const MAX_PROGRAM_OUTPUT: usize = 16 << 20;

/// The data of one plugin call's store.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) plugin: String,
    pub(super) grants: Grants,
    /// The plugin's scratch directory (`/scratch` for the plugin).
    pub(super) scratch: PathBuf,
    pub(super) services: Services,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HostState {
    fn denied(&self, what: &str) -> String {
        format!(
            "not granted: plugin ‘{}’ may not {what} (the operator grants it in [plugins.grants.{}])",
            self.plugin, self.plugin
        )
    }

    /// A path the plugin names, inside its scratch directory, without
    /// following anything outside it.
    fn scratch_path(&self, relative: &str) -> Result<PathBuf, String> {
        let relative = relative.strip_prefix("/scratch").unwrap_or(relative).trim_start_matches('/');
        let path = Path::new(relative);
        if path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(format!("{relative:?} is not a path inside the scratch directory"));
        }
        let full = self.scratch.join(path);
        // Links could lead out: the resolved path must still be inside.
        let resolved = full.canonicalize().map_err(|e| format!("{relative:?}: {e}"))?;
        let root = self.scratch.canonicalize().map_err(|e| e.to_string())?;
        if resolved.starts_with(&root) {
            Ok(resolved)
        } else {
            Err(format!("{relative:?} leads outside the scratch directory"))
        }
    }
}

/// Reads a program's output to its end, keeping the first
/// [`MAX_PROGRAM_OUTPUT`] bytes (the rest is read and dropped, so that the
/// program is never stuck on a full pipe).
async fn read_capped(stream: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = MAX_PROGRAM_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    async fn write(&mut self, level: log::Level, message: String) -> Result<(), String> {
        if !self.grants.log {
            return Err(self.denied("write to the log"));
        }
        let plugin = self.plugin.as_str();
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}

impl process::Host for HostState {
    async fn run(&mut self, program: String, args: Vec<String>, directory: String) -> Result<process::Output, String> {
        if !self.grants.programs.contains(&program) {
            return Err(self.denied(&format!("run {program:?}")));
        }
        let directory = self.scratch_path(&directory)?;
        let mut command = tokio::process::Command::new(&program);
        command
            .args(&args)
            .current_dir(&directory)
            .env_clear()
            .env("PATH", &self.services.path)
            .env("HOME", &self.scratch)
            .env("LANG", "C.UTF-8")
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The call's time limit drops this future, and the program with it.
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (out, err) = tokio::join!(read_capped(&mut stdout), read_capped(&mut stderr));
        let (out, err) = (
            out.map_err(|e| format!("reading the output of {program}: {e}"))?,
            err.map_err(|e| format!("reading the output of {program}: {e}"))?,
        );
        let status = child.wait().await.map_err(|e| format!("waiting for {program}: {e}"))?;
        tracing::debug!(plugin = %self.plugin, %program, ?args, status = ?status.code(), "program run for a plugin");
        Ok(process::Output { status: status.code().unwrap_or(-1), stdout: out, stderr: err })
    }
}

impl nix_store::Host for HostState {
    async fn add(&mut self, path: String) -> Result<String, String> {
        if !self.grants.add_to_store {
            return Err(self.denied("add paths to the Nix store"));
        }
        let path = self.scratch_path(&path)?;
        self.services.nix.add_to_store(&path).await.map(|p| p.to_string()).map_err(|e| e.to_string())
    }
}

impl key_value::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        if !self.grants.key_value {
            return Err(self.denied("use a key-value store"));
        }
        self.services.db.plugin_kv_get(&self.plugin, &key).await.map_err(|e| e.to_string())
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if !self.grants.key_value {
            return Err(self.denied("use a key-value store"));
        }
        self.services.db.plugin_kv_set(&self.plugin, &key, &value).await.map_err(|e| e.to_string())
    }

    async fn delete(&mut self, key: String) -> Result<(), String> {
        if !self.grants.key_value {
            return Err(self.denied("use a key-value store"));
        }
        self.services.db.plugin_kv_delete(&self.plugin, &key).await.map_err(|e| e.to_string())
    }
}
