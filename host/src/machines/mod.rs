//! Machines that build derivations: the server's own store and Nix
//! machines reached over SSH, all spoken to with Nix's serve protocol
//! (`nix-store --serve --write`) over connections kept open per build slot.
//!
//! [`Machines`] is the registry: what the configuration and the machines
//! files describe (re-read when a file changes), each machine's health
//! (failures in a row, back-off) and its idle connections. [`step::build`]
//! runs one step on one machine. Which step goes where is the queue's
//! business (`queue::scheduler`).

mod connect_error;
pub mod spec;
mod ssh;
mod step;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

pub use crate::config::MachineFields;
use crate::config::{Config, MachinesConfig};
use crate::nix::local::LocalBuilds;
use crate::nix::{Nix, PathInfo, ServeConnection, StorePath};
pub use connect_error::ConnectError;
pub use spec::{HostKey, HostKeyError, MachineAddress, MachineSpec, SpecError, parse_machines_file};
pub use step::{StepOutcome, StepRequest, build};

/// How often machines files are checked for changes.
/// The name of the server's own store as a machine (where substitutes
/// are fetched to, too).
pub const LOCALHOST: &str = "localhost";
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Paths asked about at once when walking a closure in the local store.
const CLOSURE_QUERY_BATCH: usize = 1000;
/// Idle connections kept per machine beyond its slots are closed.
const MAX_IDLE_PER_SLOT: usize = 1;

/// One machine: what it is, how it fares, and its idle connections.
pub struct Machine {
    pub spec: Arc<MachineSpec>,
    health: Mutex<Health>,
    idle: Mutex<Vec<ServeConnection>>,
}

#[derive(Debug, Default, Clone)]
struct Health {
    /// Steps running on it now.
    running: BTreeSet<StorePath>,
    consecutive_failures: u32,
    disabled_until: Option<Instant>,
    last_failure: Option<(SystemTime, String)>,
    steps_done: u64,
    build_seconds: f64,
    /// The serve protocol version it speaks, once connected.
    protocol: Option<String>,
}

impl Health {
    fn is_available(&self, now: Instant) -> bool {
        self.disabled_until.is_none_or(|until| until <= now)
    }
}

/// A machine as `/machines` shows it.
#[derive(Debug, Clone)]
pub struct MachineView {
    pub spec: Arc<MachineSpec>,
    pub running: Vec<StorePath>,
    pub enabled: bool,
    pub consecutive_failures: u32,
    /// Seconds until it is tried again after failures.
    pub disabled_for_secs: Option<u64>,
    pub last_failure: Option<(i64, String)>,
    pub steps_done: u64,
    pub build_seconds: f64,
    pub protocol: Option<String>,
}

impl Machine {
    fn new(spec: MachineSpec) -> Machine {
        Machine { spec: Arc::new(spec), health: Mutex::new(Health::default()), idle: Mutex::new(Vec::new()) }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Not backing off after a failure.
    pub fn is_available(&self, now: Instant) -> bool {
        self.health().is_available(now)
    }

    /// When a machine backing off will be tried again.
    pub fn disabled_until(&self) -> Option<Instant> {
        self.health().disabled_until
    }

    /// An idle connection, or a new one.
    async fn connection(&self, nix: &Nix, connect_timeout: Duration) -> Result<ServeConnection, ConnectError> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match idle {
                Some(mut connection) => {
                    if !connection.is_closed() {
                        return Ok(connection);
                    }
                }
                None => break,
            }
        }
        let connection = match &self.spec.address {
            MachineAddress::Local => nix.serve_local().await?,
            MachineAddress::Ssh { .. } => ssh::connect(&self.spec, connect_timeout).await?,
        };
        self.health().protocol = Some(connection.version());
        Ok(connection)
    }

    /// Keeps a connection that finished its work cleanly for the next step.
    fn keep(&self, mut connection: ServeConnection) {
        if connection.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.spec.max_jobs * MAX_IDLE_PER_SLOT {
            idle.push(connection);
        }
    }

    /// Counts a step as running here until the guard is dropped.
    pub fn start_step(self: &Arc<Self>, drv: &StorePath) -> RunningStep {
        self.health().running.insert(drv.clone());
        RunningStep { machine: self.clone(), drv: drv.clone(), started: Instant::now() }
    }

    /// The machine failed (could not be reached, died mid-step): it is left
    /// alone for `backoff`, doubled for each failure in a row. Its idle
    /// connections are closed, since they are likely dead too.
    pub fn failed(&self, message: &str, config: &MachinesConfig) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let mut health = self.health();
        health.consecutive_failures += 1;
        let doublings = (health.consecutive_failures - 1).min(20);
        let backoff = config.backoff_secs.saturating_mul(1 << doublings).min(config.backoff_max_secs);
        health.disabled_until = Some(Instant::now() + Duration::from_secs(backoff));
        health.last_failure = Some((SystemTime::now(), message.to_owned()));
        warn!(machine = %self.spec.name, "machine failed ({} in a row), not used for {backoff} s: {message}",
            health.consecutive_failures);
    }

    /// The machine did its part (whatever the build's outcome).
    fn succeeded(&self) {
        let mut health = self.health();
        if health.consecutive_failures > 0 {
            info!(machine = %self.spec.name, "machine works again");
        }
        health.consecutive_failures = 0;
        health.disabled_until = None;
    }

    pub fn view(&self, now: Instant) -> MachineView {
        let health = self.health().clone();
        let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        MachineView {
            spec: self.spec.clone(),
            running: health.running.iter().cloned().collect(),
            enabled: health.is_available(now),
            consecutive_failures: health.consecutive_failures,
            disabled_for_secs: health
                .disabled_until
                .filter(|until| *until > now)
                .map(|until| until.duration_since(now).as_secs().max(1)),
            last_failure: health.last_failure.map(|(time, message)| (unix(time), message)),
            steps_done: health.steps_done,
            build_seconds: health.build_seconds,
            protocol: health.protocol,
        }
    }
}

/// A step counted as running on a machine.
pub struct RunningStep {
    machine: Arc<Machine>,
    drv: StorePath,
    started: Instant,
}

impl Drop for RunningStep {
    fn drop(&mut self) {
        let mut health = self.machine.health();
        health.running.remove(&self.drv);
        health.steps_done += 1;
        health.build_seconds += self.started.elapsed().as_secs_f64();
    }
}

/// Every machine, as configured now.
pub struct Machines {
    nix: Nix,
    config: MachinesConfig,
    /// The local machine's entry when no `localhost` line replaces it.
    default_local: Option<MachineSpec>,
    current: RwLock<Arc<Vec<Arc<Machine>>>>,
    /// Modification stamps of the machines files as last read.
    stamps: Mutex<Vec<FileStamp>>,
    /// Connections to the server's own store, to copy closures to and from
    /// remote machines.
    store: Mutex<Vec<ServeConnection>>,
    /// How the local machine builds (see `nix/local.rs`).
    pub local_builds: LocalBuilds,
}

/// Why the machines could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MachinesError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot read machines file {}: {source}", .file.display())]
    Unreadable { file: PathBuf, source: std::io::Error },
    #[error("{origin}: machine {machine} lists no systems")]
    NoSystems { origin: String, machine: String },
    /// The local Nix could not say its system.
    #[error(transparent)]
    Nix(#[from] crate::nix::NixError),
}

impl Machines {
    /// Reads the machines of the configuration and its files. A bad file at
    /// start is an error; later, a bad edit keeps the machines as they were.
    pub async fn load(nix: Nix, config: &Config, local_builds: LocalBuilds) -> Result<Machines, MachinesError> {
        let default_local = if config.machines.local {
            let (systems, features) = match nix.machine_settings().await {
                Some(settings) => settings,
                None => (vec![nix.current_system().await?], Vec::new()),
            };
            Some(local_spec(systems, features, config.queue.max_jobs))
        } else {
            None
        };
        let machines = Machines {
            nix,
            config: config.machines.clone(),
            default_local,
            current: RwLock::new(Arc::new(Vec::new())),
            stamps: Mutex::new(Vec::new()),
            store: Mutex::new(Vec::new()),
            local_builds,
        };
        let (specs, stamps) = machines.read_specs()?;
        machines.install(specs);
        *machines.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        Ok(machines)
    }

    /// No machine at all: for a server whose Nix cannot build.
    pub fn none(nix: Nix, config: &Config) -> Machines {
        Machines {
            nix,
            config: config.machines.clone(),
            default_local: None,
            current: RwLock::new(Arc::new(Vec::new())),
            stamps: Mutex::new(Vec::new()),
            store: Mutex::new(Vec::new()),
            local_builds: LocalBuilds::Derivations,
        }
    }

    pub fn list(&self) -> Arc<Vec<Arc<Machine>>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn views(&self) -> Vec<MachineView> {
        let now = Instant::now();
        self.list().iter().map(|m| m.view(now)).collect()
    }

    /// Every machine spec, from the configuration then the files in order;
    /// a later entry with the same URI replaces an earlier one.
    fn read_specs(&self) -> Result<(Vec<MachineSpec>, Vec<FileStamp>), MachinesError> {
        let mut specs: Vec<MachineSpec> = self.default_local.iter().cloned().collect();
        let add = |spec: MachineSpec, specs: &mut Vec<MachineSpec>| {
            let spec = match (&spec.address, &self.default_local) {
                // `localhost` without systems builds what this Nix builds.
                (MachineAddress::Local, Some(local)) if spec.systems.is_empty() => {
                    MachineSpec { systems: local.systems.clone(), ..spec }
                }
                _ => spec,
            };
            specs.retain(|s| s.name != spec.name && !(s.is_local() && spec.is_local()));
            specs.push(spec);
        };
        for (index, fields) in self.config.machine.iter().enumerate() {
            let origin = format!("machines.machine[{index}]");
            let spec = fields.clone().into_spec(origin.clone()).map_err(SpecError::at(&origin))?;
            add(spec, &mut specs);
        }
        let mut stamps = Vec::new();
        for file in &self.config.files {
            stamps.push(stamp(file));
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                // A machines file that is not there (yet) lists no machines.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(source) => return Err(MachinesError::Unreadable { file: file.clone(), source }),
            };
            for spec in parse_machines_file(&text, &file.display().to_string())? {
                add(spec, &mut specs);
            }
        }
        for spec in &specs {
            if spec.systems.is_empty() {
                return Err(MachinesError::NoSystems { origin: spec.origin.clone(), machine: spec.name.clone() });
            }
        }
        Ok((specs, stamps))
    }

    /// Makes `specs` the machines, keeping the state of those unchanged.
    fn install(&self, specs: Vec<MachineSpec>) {
        let old: HashMap<String, Arc<Machine>> = self.list().iter().map(|m| (m.spec.name.clone(), m.clone())).collect();
        let machines: Vec<Arc<Machine>> = specs
            .into_iter()
            .map(|spec| match old.get(&spec.name) {
                Some(machine) if *machine.spec == spec => machine.clone(),
                _ => Arc::new(Machine::new(spec)),
            })
            .collect();
        for machine in machines.iter() {
            let spec = &machine.spec;
            info!(machine = %spec.name, systems = %spec.systems.join(","), max_jobs = spec.max_jobs,
                features = %spec.supported_features.iter().cloned().collect::<Vec<_>>().join(","), "machine");
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(machines);
    }

    /// Re-reads the machines files if one changed; true when the machines did.
    pub fn reload_if_changed(&self) -> bool {
        let now: Vec<FileStamp> = self.config.files.iter().map(stamp).collect();
        {
            let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            if *stamps == now {
                return false;
            }
            *stamps = now;
        }
        match self.read_specs() {
            Ok((specs, _)) => {
                info!("machines file changed: {} machines now", specs.len());
                self.install(specs);
                true
            }
            Err(e) => {
                warn!("machines file changed but is not valid, keeping the machines as they were: {e}");
                false
            }
        }
    }

    /// Checks the machines files every few seconds, calling `changed` when
    /// the machines did.
    pub fn watch(self: Arc<Self>, changed: impl Fn() + Send + 'static) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if self.config.files.is_empty() {
                return;
            }
            let mut ticks = tokio::time::interval(FILE_CHECK_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let this = self.clone();
                if tokio::task::spawn_blocking(move || this.reload_if_changed()).await.unwrap_or(false) {
                    changed();
                }
            }
        })
    }

    /// NAR size, hash, deriver and references of `roots` and of everything
    /// they reference, transitively, from the server's own store, through
    /// a connection kept open (no Nix process per call: a finished build's
    /// sizes are known in a millisecond, not in two process starts). What
    /// is not valid is left out.
    pub async fn closure_infos(&self, roots: &[StorePath]) -> Result<HashMap<StorePath, PathInfo>, String> {
        let mut store = self.store_connection().await?;
        let mut infos: HashMap<StorePath, PathInfo> = HashMap::new();
        let mut asked: HashSet<StorePath> = roots.iter().cloned().collect();
        let mut level: Vec<StorePath> = asked.iter().cloned().collect();
        while !level.is_empty() {
            let mut next = Vec::new();
            for chunk in level.chunks(CLOSURE_QUERY_BATCH) {
                let answers =
                    store.query_path_infos(chunk).await.map_err(|e| format!("cannot query the local store: {e}"))?;
                for answer in answers {
                    for reference in &answer.references {
                        if asked.insert(reference.clone()) {
                            next.push(reference.clone());
                        }
                    }
                    let info = PathInfo {
                        nar_hash: answer.nar_hash,
                        nar_size: answer.nar_size,
                        deriver: StorePath::parse(&answer.deriver).ok(),
                        references: answer.references,
                    };
                    infos.insert(answer.path, info);
                }
            }
            level = next;
        }
        self.keep_store_connection(store);
        Ok(infos)
    }

    /// A connection to the server's own store.
    /// Which of `paths` are not valid in the local store, through a
    /// connection kept open (no Nix process per question).
    pub async fn invalid_paths(&self, paths: &[StorePath]) -> Result<HashSet<StorePath>, String> {
        let mut store = self.store_connection().await?;
        let mut invalid = HashSet::new();
        for chunk in paths.chunks(CLOSURE_QUERY_BATCH) {
            let valid = store.valid_paths_now(chunk).await.map_err(|e| format!("cannot query the local store: {e}"))?;
            invalid.extend(chunk.iter().filter(|p| !valid.contains(*p)).cloned());
        }
        self.keep_store_connection(store);
        Ok(invalid)
    }

    async fn store_connection(&self) -> Result<ServeConnection, String> {
        let idle = self.store.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(mut connection) = idle {
            if !connection.is_closed() {
                return Ok(connection);
            }
        }
        self.nix.serve_local().await.map_err(|e| format!("cannot open the local store: {e}"))
    }

    fn keep_store_connection(&self, mut connection: ServeConnection) {
        if !connection.is_closed() {
            self.store.lock().unwrap_or_else(|p| p.into_inner()).push(connection);
        }
    }
}

/// The server's own store as a machine.
fn local_spec(systems: Vec<String>, features: Vec<String>, max_jobs: usize) -> MachineSpec {
    MachineSpec {
        name: LOCALHOST.into(),
        address: MachineAddress::Local,
        systems,
        ssh_key: None,
        max_jobs,
        speed_factor: 1.0,
        supported_features: features.into_iter().collect(),
        mandatory_features: BTreeSet::new(),
        host_key: None,
        origin: "machines.local".into(),
    }
}

/// When a file was modified and its size; `None` when it is not there.
type FileStamp = Option<(SystemTime, u64)>;

fn stamp(file: &PathBuf) -> FileStamp {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
