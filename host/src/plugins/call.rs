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
        let exclusive = exclusive || grants.add_to_store || !grants.programs.is_empty();
        let _guard = if exclusive { Some(plugin.lock.lock().await) } else { None };
        let scratch = plugin.info.id.scratch_dir(&self.scratch_root);
        std::fs::create_dir_all(&scratch).map_err(|e| crashed(format!("has no scratch directory: {e}")))?;
        // Nothing ambient: no network, no environment, no arguments, no
        // standard streams; the scratch directory is the whole file system.
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        wasi.preopened_dir(&scratch, "/scratch", FsPerms::ReadWrite)
            .map_err(|e| crashed(format!("cannot open its scratch directory: {e}")))?;
        let state = HostState {
            wasi: wasi.build(),
            table: Default::default(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.memory)
                .instances(64)
                .tables(64)
                .trap_on_grow_failure(true)
                .build(),
            plugin: plugin.info.id.clone(),
            grants: plugin.info.grants.clone(),
            scratch,
            services: self.services.clone(),
            project_scope,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // At every tick the plugin yields to the runtime (a plugin that
        // computes does not hold a worker thread), until its time is up.
        store.set_fuel(limits.fuel.unwrap_or(u64::MAX)).map_err(|e| crashed(e.to_string()))?;
        let timeout = limits.timeout;
        let deadline = std::time::Instant::now() + timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if std::time::Instant::now() >= deadline {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::Yield(1)
            })
        });
        let work = f(&mut store, &plugin.pre);
        // The outer limit also covers time spent in host calls (programs,
        // requests), which the epoch does not interrupt.
        let outer = timeout + timeout.min(Duration::from_secs(5));
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

/// The fetcher instance of an input-fetcher plugin.
pub(super) async fn fetcher_instance(
    pre: &WorldPre,
    store: &mut Store<HostState>,
) -> wasmtime::Result<bindings::fetcher::InputFetcher> {
    let WorldPre::InputFetcher(pre) = pre else { unreachable!("fetchers are input-fetcher plugins") };
    pre.instantiate_async(store).await
}

pub(super) fn wit_settings(
    settings: &BTreeMap<String, String>,
) -> Vec<bindings::host_api::orthrus::plugin::types::Setting> {
    settings
        .iter()
        .map(|(name, value)| bindings::host_api::orthrus::plugin::types::Setting {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// A trap in words an operator understands.
pub(super) fn timed_out(timeout: Duration) -> String {
    if timeout.subsec_millis() == 0 {
        format!("did not finish within {} seconds", timeout.as_secs())
    } else {
        format!("did not finish within {} ms", timeout.as_millis())
    }
}

/// The trap in words, and whether the call may succeed later.
pub(super) fn describe_trap(error: &wasmtime::Error, limits: CallLimits, memory: usize) -> (String, bool) {
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
        _ => {
            let text = format!("{error:#}");
            if text.contains("concurrent") && text.contains("limit") {
                // Every instance slot is taken: nothing wrong with the plugin.
                (format!("could not start: too many plugin calls at once ({text})"), true)
            } else if text.contains("memory")
                && (text.contains("grow") || text.contains("limit") || text.contains("resource"))
            {
                (format!("ran out of memory (the limit is {} MiB): {text}", memory >> 20), false)
            } else {
                (format!("crashed: {text}"), false)
            }
        }
    }
}
