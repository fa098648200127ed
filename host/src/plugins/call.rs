//! One sandboxed call: a fresh store with the plugin's scratch directory
//! as its only file system, the memory cap, fuel and the deadline; and
//! what a trap means, in words.

use super::*;

/// How long a call may run, and how many instructions it may execute.
#[derive(Debug, Clone, Copy)]
pub(super) struct CallLimits {
    pub(super) timeout: Duration,
    /// `None`: as many as fit in the time.
    pub(super) fuel: Option<u64>,
}

impl Inner {
    /// One call in a fresh store: the scratch directory as the only file
    /// system, the memory cap, the deadline. `exclusive` calls of a plugin
    /// wait for each other.
    pub(super) async fn call<R, F>(
        &self,
        plugin: &LoadedPlugin,
        exclusive: bool,
        limits: CallLimits,
        project_scope: Option<i64>,
        f: F,
    ) -> Result<R, PluginError>
    where
        F: AsyncFnOnce(&mut Store<HostState>, &WorldPre) -> wasmtime::Result<R>,
    {
        let name = plugin.info.id.as_str().to_owned();
        let failed = |what: String, transient: bool| PluginError::Crashed { plugin: name.clone(), what, transient };
        let crashed = |what: String| failed(what, false);
        // A plugin that adds to the store or runs programs may not race
        // itself: between the check of a path in its scratch directory and
        // its use, another of its calls could swap a directory for a link.
        let grants = &plugin.info.grants;
        let exclusive = exclusive || grants.uses_scratch_paths();
        let _guard = if exclusive { Some(plugin.lock.lock().await) } else { None };
        let scratch = plugin.info.id.scratch_dir(&self.scratch_root);
        let filesystem = plugin.scratch.filesystem(&scratch).map_err(crashed)?;
        // Nothing ambient: no network, no environment, no arguments, no
        // standard streams; the scratch directory is the whole file system.
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        let mut wasi = wasi.build();
        *wasi.filesystem() = filesystem;
        let state = HostState {
            wasi,
            table: Default::default(),
            limiter: CallLimiter { memory: self.memory },
            plugin: plugin.info.id.clone(),
            grants: plugin.info.grants.clone(),
            scratch,
            services: self.services.clone(),
            project_scope,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        if self.tuning.fuel {
            store.set_fuel(limits.fuel.unwrap_or(u64::MAX)).map_err(|e| crashed(e.to_string()))?;
        }
        let timeout = limits.timeout;
        let deadline = std::time::Instant::now() + timeout;
        // A computing plugin yields to the runtime now and then, so that it
        // does not hold a worker thread, and so that its deadline can stop
        // it: every few million instructions (fuel), or at every epoch tick
        // until its time is up (the bench's variant).
        if !self.tuning.epoch && self.tuning.fuel {
            store.fuel_async_yield_interval(Some(YIELD_EVERY)).map_err(|e| crashed(e.to_string()))?;
        }
        if self.tuning.epoch {
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                Ok(if std::time::Instant::now() >= deadline {
                    wasmtime::UpdateDeadline::Interrupt
                } else {
                    wasmtime::UpdateDeadline::Yield(1)
                })
            });
        }
        let work = f(&mut store, &plugin.pre);
        // The deadline of the whole call, host calls (programs, requests)
        // included; with epochs, these get a margin beyond the guest's own.
        let outer = if self.tuning.epoch { timeout + timeout.min(Duration::from_secs(5)) } else { timeout };
        match tokio::time::timeout(outer, work).await {
            Err(_) => Err(failed(timed_out(timeout), true)),
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => {
                let (what, transient) = describe_trap(&e, limits, self.memory);
                Err(failed(what, transient))
            }
        }
    }
}

/// A plugin's scratch directory as its calls see it: made and opened at
/// the first call, then shared by the calls that follow (no `mkdir` and
/// `open` per call), unless it was removed or replaced meanwhile (an
/// operator cleaning up), which one `stat` per call notices.
#[derive(Default)]
pub(super) struct ScratchDir {
    opened: std::sync::Mutex<Option<OpenedScratch>>,
}

struct OpenedScratch {
    /// Device and inode of the directory opened.
    identity: (u64, u64),
    filesystem: wasmtime_wasi::filesystem::WasiFilesystemCtx,
}

impl ScratchDir {
    /// The file system of a call: `path` as `/scratch`, read-write.
    pub(super) fn filesystem(&self, path: &Path) -> Result<wasmtime_wasi::filesystem::WasiFilesystemCtx, String> {
        use std::os::unix::fs::MetadataExt;
        let identity = |metadata: std::fs::Metadata| (metadata.dev(), metadata.ino());
        let current = std::fs::metadata(path).ok().map(identity);
        let mut opened = self.opened.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(open) = opened.as_ref().filter(|open| Some(open.identity) == current) {
            return Ok(open.filesystem.clone());
        }
        std::fs::create_dir_all(path).map_err(|e| format!("has no scratch directory: {e}"))?;
        let mut wasi = WasiCtxBuilder::new();
        wasi.preopened_dir(path, "/scratch", FsPerms::ReadWrite)
            .map_err(|e| format!("cannot open its scratch directory: {e}"))?;
        let filesystem = wasi.build().filesystem().clone();
        let identity = std::fs::metadata(path).map(identity).map_err(|e| format!("has no scratch directory: {e}"))?;
        *opened = Some(OpenedScratch { identity, filesystem: filesystem.clone() });
        Ok(filesystem)
    }
}

/// A trap in words an operator understands.
pub(super) fn timed_out(timeout: Duration) -> String {
    if timeout.subsec_millis() == 0 {
        format!("did not finish within {} seconds", timeout.as_secs())
    } else {
        format!("did not finish within {} ms", timeout.as_millis())
    }
}

/// The trap in words, and whether the call may succeed later. Told apart
/// by the error's type: wasmtime's traps, the pooling allocator's
/// exhaustion, this runtime's own [`MemoryExhausted`].
pub(super) fn describe_trap(error: &wasmtime::Error, limits: CallLimits, memory: usize) -> (String, bool) {
    if let Some(exhausted) = error.downcast_ref::<MemoryExhausted>() {
        return (format!("ran out of memory (the limit is {} MiB): {exhausted}", memory >> 20), false);
    }
    if error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
        // Every instance slot is taken: nothing wrong with the plugin.
        return (format!("could not start: too many plugin calls at once ({error:#})"), true);
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => (timed_out(limits.timeout), true),
        Some(wasmtime::Trap::OutOfFuel) => (
            format!(
                "ran out of fuel: it may execute {} million instructions (plugins.fuel_millions)",
                limits.fuel.unwrap_or(0) / 1_000_000
            ),
            false,
        ),
        Some(wasmtime::Trap::UnreachableCodeReached) => (format!("crashed (it panicked or aborted): {error:#}"), false),
        _ => (format!("crashed: {error:#}"), false),
    }
}

/// A plugin's memory or tables would grow past the call's limit: the call
/// fails with this (a trap, not a `memory.grow` answering -1 that a plugin
/// could mistake for a transient condition).
#[derive(Debug, thiserror::Error)]
#[error("{what} would grow to {desired} bytes")]
pub(super) struct MemoryExhausted {
    what: &'static str,
    desired: usize,
}

/// The limits of one call's store: linear memory (`plugins.memory_mb`),
/// tables, and how many instances, tables and memories it may create.
pub(super) struct CallLimiter {
    pub(super) memory: usize,
}

/// Elements a table may hold (function pointers of a big program fit).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl wasmtime::ResourceLimiter for CallLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory {
            return Err(MemoryExhausted { what: "its memory", desired }.into());
        }
        Ok(true)
    }

    /// Permitted but impossible (the pooling allocator's own cap): the same.
    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(MemoryExhausted { what: "its memory", desired: self.memory }.into())
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(MemoryExhausted { what: "a table", desired }.into());
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        64
    }
}
