//! The wasmtime engine (pooling allocator, fuel, epochs), the epoch
//! ticker that makes deadlines, and the linkers of host functions.

use super::wit::WitVersion;
use super::*;

/// How often the epoch advances, when epochs preempt guests.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Instructions a guest runs between yields to the runtime, when fuel
/// preempts it (a millisecond or so).
pub(super) const YIELD_EVERY: u64 = 2_000_000;

/// Advances the engine's epoch every tick on a thread of its own — not a
/// task of the async runtime, whose worker threads may all be running
/// plugins: a deadline that depended on them could never come.
pub(super) fn start_ticker(engine: &Engine) -> Arc<()> {
    let alive = Arc::new(());
    let weak = Arc::downgrade(&alive);
    let engine = engine.clone();
    std::thread::Builder::new()
        .name("plugin-epoch".into())
        .spawn(move || {
            while weak.strong_count() > 0 {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .expect("cannot start the plugin epoch thread");
    alive
}

/// What the engine is built with. Production uses [`EngineTuning::default`];
/// the plugins benchmark turns one piece off at a time to measure what it
/// costs a call.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineTuning {
    /// Fuel metering: the instruction budget of renderers and release
    /// sets, and how a computing guest is preempted (it yields to the
    /// runtime every [`YIELD_EVERY`] instructions, where its deadline can
    /// stop it).
    pub fuel: bool,
    /// Epoch interruption: the other way to preempt a guest (a tick every
    /// 10 ms, from a thread of its own). Off in production: the plugins
    /// bench finds the two within a few µs of each other, and fuel is
    /// needed anyway for renderers' and release sets' budgets.
    pub epoch: bool,
    /// The pooling allocator (else every instance maps its memory anew).
    pub pooling: bool,
    /// Resetting a pooled memory by restoring only the pages the last call
    /// wrote (`PAGEMAP_SCAN`, Linux 6.7 and later), instead of discarding
    /// them all so that the next call faults them in again.
    pub pagemap: bool,
}

impl Default for EngineTuning {
    fn default() -> Self {
        EngineTuning { fuel: true, epoch: false, pooling: true, pagemap: true }
    }
}

/// Pages of a pooled memory restored in place after a call, at most: more
/// written pages than this are discarded instead. A call's stack, data and
/// small heap fit.
const KEEP_RESIDENT: usize = 1 << 20;

pub(super) fn engine(memory: usize, tuning: EngineTuning) -> Result<Engine, PluginError> {
    let build = |pagemap: bool| {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(64)
            .max_core_instances_per_component(32)
            .total_core_instances(1024)
            .total_memories(256)
            .total_tables(512)
            .total_stacks(64)
            .max_memory_size(memory);
        if pagemap {
            // Every instance still starts from the module's pristine image:
            // only how the written pages are put back changes. Without the
            // scan, keeping memory resident would reset the lowest bytes
            // (the unused bottom of the stack) and miss what was written.
            pooling
                .pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(64 << 10);
        }
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(tuning.epoch)
            // Renderers and release sets get a deterministic budget.
            .consume_fuel(tuning.fuel)
            .concurrency_support(false)
            .allocation_strategy(if tuning.pooling {
                InstanceAllocationStrategy::Pooling(pooling)
            } else {
                InstanceAllocationStrategy::OnDemand
            });
        Engine::new(&config)
    };
    // A kernel without PAGEMAP_SCAN (before 6.7) gets the plain reset.
    let engine = if tuning.pagemap && tuning.pooling { build(true).or_else(|_| build(false)) } else { build(false) };
    engine.map_err(|e| PluginError::Load { origin: "engine".into(), message: e.to_string() })
}

/// The linkers of host functions: one with everything the host offers,
/// in every WIT version (to tell which world and version a component
/// exports), and one per version and world with WASI and only the
/// interfaces that world imports, as its generated bindings add them. A
/// component is instantiated through its own world's linker, so what a
/// kind of plugin may import is what its version's `worlds.wit` says.
pub(super) struct Linkers {
    pub(super) any: Linker<HostState>,
    worlds: BTreeMap<(WitVersion, PluginKind), Linker<HostState>>,
}

impl Linkers {
    pub(super) fn new(engine: &Engine) -> Result<Linkers, PluginError> {
        fn linker(
            engine: &Engine,
            add: impl FnOnce(&mut Linker<HostState>) -> wasmtime::Result<()>,
        ) -> Result<Linker<HostState>, PluginError> {
            let load = |e: wasmtime::Error| PluginError::Load { origin: "linker".into(), message: e.to_string() };
            let mut linker = Linker::new(engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(load)?;
            add(&mut linker).map_err(load)?;
            Ok(linker)
        }
        let any = linker(engine, |l| {
            wit::since_v0_1_0::add_host_api(l)?;
            wit::since_v0_2_0::add_host_api(l)
        })?;
        let mut worlds = BTreeMap::new();
        for kind in PluginKind::ALL {
            worlds.insert((WitVersion::V0_1_0, kind), linker(engine, |l| wit::since_v0_1_0::add_world(kind, l))?);
            worlds.insert((WitVersion::V0_2_0, kind), linker(engine, |l| wit::since_v0_2_0::add_world(kind, l))?);
        }
        Ok(Linkers { any, worlds })
    }

    pub(super) fn of(&self, version: WitVersion, kind: PluginKind) -> &Linker<HostState> {
        &self.worlds[&(version, kind)]
    }
}
