//! The operator's TOML configuration: every setting has a default, so an
//! empty file (or none at all) is a working configuration; a bad file is
//! rejected with the dotted key and the reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::{EventKind, ProcessRole, ProcessRoles};

mod host_grant;
mod machine;
mod publish;
mod validate;
pub use host_grant::HostGrant;
pub use machine::MachineFields;
pub use publish::{CacheTarget, Compression, PublishConfig, S3Target};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: key `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
}

/// The whole configuration. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where Orthrus keeps its database (SQLite), logs and scratch files.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; empty means SQLite in `data_dir`.
    pub database_url: String,
    pub web: WebConfig,
    pub nix: NixConfig,
    pub evaluator: EvaluatorConfig,
    pub queue: QueueConfig,
    pub machines: MachinesConfig,
    pub webhooks: WebhooksConfig,
    pub binary_cache: BinaryCacheConfig,
    pub plugins: PluginsConfig,
    pub mail: MailConfig,
    pub gc: GcConfig,
    pub retention: RetentionConfig,
    /// Notifier plugins and the events each is told about.
    pub notifiers: Vec<NotifierConfig>,
    /// The roles this process runs; empty: all of them (`--roles` wins).
    pub roles: Vec<ProcessRole>,
    pub cluster: ClusterConfig,
    /// The file this was read from (absolute), if any: it holds secrets,
    /// so it is kept out of everything a project or plugin can reach.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// Several processes on one PostgreSQL (see `cluster/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Seconds a role's holder keeps it without renewing: a standby takes
    /// over this long after the holder stopped answering. It renews four
    /// times per period.
    pub lease_secs: u64,
    /// How the other processes reach this one's HTTP listener (a web
    /// process without the store asks the queue runner's process for logs
    /// and store paths there); empty: `http://` and `web.listen`.
    pub url: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { lease_secs: 10, url: String::new() }
    }
}

/// The GC roots of what the server keeps (see `gc/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// The directory of roots; empty: `<Nix state>/gcroots/orthrus` (or
    /// `per-user/<user>/orthrus` for a server that is not root). It must be
    /// one Nix scans for roots.
    pub roots_dir: PathBuf,
    /// Seconds between full updates (there is one after evaluations too).
    pub interval_secs: u64,
    /// Roots younger than this are never removed, in seconds (Hydra's day).
    pub min_root_age_secs: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { roots_dir: PathBuf::new(), interval_secs: 3600, min_root_age_secs: 24 * 3600 }
    }
}

/// What the server deletes as it ages, so that its disk use levels off
/// (see `retention/`). Ages are in days and may be fractions of one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Seconds between runs (the first runs a minute after the start).
    pub interval_secs: u64,
    /// Events older than this that every configured notifier has dealt
    /// with are deleted.
    pub events_max_age_days: f64,
    /// A derivation's log older than this is deleted once no build the
    /// GC roots keep (queued, kept, of a kept evaluation, `latest`)
    /// refers to it.
    pub logs_max_age_days: f64,
    /// Evaluations kept per jobset, newest first; 0 keeps all.
    pub evals_per_jobset: u64,
    /// An evaluation younger than this is kept whatever its rank.
    pub evals_min_age_days: f64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval_secs: 3600,
            events_max_age_days: 90.0,
            logs_max_age_days: 180.0,
            evals_per_jobset: 1000,
            evals_min_age_days: 90.0,
        }
    }
}

impl RetentionConfig {
    /// An age in days as seconds.
    pub fn seconds(days: f64) -> i64 {
        (days * 86400.0).round() as i64
    }
}

/// The SMTP relay plugins with the `mail` capability send through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// Host name or address of the relay; empty means mail is off.
    pub relay: String,
    pub port: u16,
    /// `none` (plain, for a relay on loopback), `starttls` or `tls`.
    pub security: MailSecurity,
    /// The sender of every mail, `Name <address>` or an address.
    pub from: String,
    /// For relays that want a login; the password is read from a file.
    pub username: String,
    pub password_file: PathBuf,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailSecurity {
    None,
    Starttls,
    Tls,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            relay: String::new(),
            port: 25,
            security: MailSecurity::None,
            from: "Orthrus <orthrus@localhost>".into(),
            username: String::new(),
            password_file: PathBuf::new(),
            timeout_secs: 30,
        }
    }
}

/// One notifier: a notifier plugin with its settings and the events it
/// is told about.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    /// Names its delivery state (`/api/notifiers`); defaults to the plugin's name.
    #[serde(default)]
    pub name: String,
    pub plugin: String,
    /// Event kinds (`build-finished`, …); empty means all.
    #[serde(default)]
    pub events: Vec<EventKind>,
    /// Only events of these projects; empty means all.
    #[serde(default)]
    pub projects: Vec<String>,
    /// Passed to the plugin with each event.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// A failed delivery is tried again after this many seconds, doubled
    /// for each further failure up to `retry_max_delay_secs`; never given up.
    #[serde(default = "default_retry_delay")]
    pub retry_delay_secs: u64,
    #[serde(default = "default_retry_max_delay")]
    pub retry_max_delay_secs: u64,
}

fn default_retry_delay() -> u64 {
    10
}

fn default_retry_max_delay() -> u64 {
    3600
}

impl NotifierConfig {
    pub fn name(&self) -> &str {
        if self.name.is_empty() { &self.plugin } else { &self.name }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address and port the HTTP server listens on.
    pub listen: String,
    /// The externally visible URL, used for absolute links and redirects.
    /// Empty means `http://` + `listen`.
    pub base_url: String,
    /// Only logged-in users and API tokens may read anything.
    pub private: bool,
    /// How long a login lasts, in days.
    pub session_days: u64,
    /// Failed logins of one user name, then of one client address, within
    /// `login_window_secs` after which logins are refused (429) until the
    /// oldest leaves the window.
    pub login_failures_per_user: usize,
    pub login_failures_per_address: usize,
    pub login_window_secs: u64,
    /// A client has this long to send a request's headers (and an idle
    /// kept-alive connection is closed after it), in seconds. Answers are
    /// not cut: live logs and long downloads go on.
    pub header_timeout_secs: u64,
}

/// WebAssembly plugins: where more are loaded from, their limits, and what
/// each is granted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// A directory of `.wasm` plugins loaded besides the built-in ones.
    pub dir: PathBuf,
    /// Memory of one plugin call, in MiB.
    pub memory_mb: u64,
    /// Time of one plugin call (a fetch, say), in seconds.
    pub timeout_secs: u64,
    /// What each plugin may do, by plugin identity: `builtin:NAME` (or
    /// plain `NAME` while no plugin file takes that name) for a built-in
    /// plugin, the file's stem for a plugin of `dir`. A built-in plugin
    /// without an entry gets what it asks for, except HTTP hosts, which
    /// only the operator names; any other plugin gets nothing.
    pub grants: BTreeMap<String, PluginGrant>,
    /// The bubblewrap program (`bwrap`, looked up on PATH, or a path) that
    /// boxes every program a plugin runs. Where it cannot make a sandbox,
    /// plugins may run no program at all.
    pub bwrap: String,
    /// Instructions a renderer or release-set call may execute, in millions
    /// (its fuel): a plugin that loops stops here, deterministically.
    pub fuel_millions: u64,
    /// Time of one renderer call, in milliseconds.
    pub render_timeout_ms: u64,
    /// Time of one release-set call, in milliseconds (it may query a lot).
    pub release_set_timeout_ms: u64,
}

/// Capabilities granted to one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginGrant {
    /// Programs it may run (names looked up on PATH).
    pub programs: Vec<String>,
    /// May add directories of its scratch area to the Nix store.
    pub add_to_store: bool,
    /// May keep values in its key-value store.
    pub key_value: bool,
    /// May write to the server's log.
    pub log: bool,
    /// Hosts it may send HTTP requests to: `name` (the scheme's default
    /// port) or `name:port`.
    pub http: Vec<String>,
    /// May send mail through the relay of `[mail]`.
    pub mail: bool,
    /// May read builds, evaluations and inputs (release sets).
    pub read_builds: bool,
    /// The programs it runs may reach the network. Unset: off, except for
    /// the built-in plugins that run programs (git, svn), which fetch.
    pub network: Option<bool>,
    /// An SSH private key its programs use (mounted read-only in their box
    /// at a fixed place; git and svn over SSH use it).
    pub ssh_key_file: PathBuf,
    /// The SSH host keys its programs trust (`known_hosts` format); other
    /// hosts are refused.
    pub ssh_known_hosts_file: PathBuf,
    /// A git credentials file (`https://user:token@host` lines) for HTTPS.
    pub git_credentials_file: PathBuf,
    /// The plugin this one takes the place of (`builtin:git`, or another
    /// plugin's identity): only so may a plugin take a built-in's name or
    /// an input or product type another plugin handles.
    pub replaces: String,
}

impl PluginGrant {
    /// The files of secrets it names.
    pub fn credential_files(&self) -> impl Iterator<Item = &Path> {
        [&self.ssh_key_file, &self.ssh_known_hosts_file, &self.git_credentials_file]
            .into_iter()
            .filter(|f| !f.as_os_str().is_empty())
            .map(PathBuf::as_path)
    }
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: PathBuf::new(),
            memory_mb: 256,
            timeout_secs: 600,
            grants: BTreeMap::new(),
            bwrap: "bwrap".into(),
            fuel_millions: 200,
            render_timeout_ms: 500,
            release_set_timeout_ms: 5000,
        }
    }
}

/// The machines builds run on, and what happens when one fails.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MachinesConfig {
    /// Build on the server's own store too (with `queue.max_jobs` slots and
    /// the systems and features its Nix reports). A `localhost` entry in a
    /// machines file or in `machine` replaces this default entry.
    pub local: bool,
    /// Nix machines files (`/etc/nix/machines` format), re-read when they change.
    pub files: Vec<PathBuf>,
    /// Machines given here rather than in a file; same fields, e.g.
    /// `{ uri = "ssh://nix@builder", systems = ["aarch64-linux"], ssh_key = "/etc/orthrus/id_ed25519", max_jobs = 4, public_host_key = "ssh-ed25519 AAAA…" }`.
    pub machine: Vec<MachineFields>,
    /// A step whose system and features no machine has waits this long,
    /// in seconds, then fails as "unsupported system" (status 9).
    pub unsupported_timeout_secs: u64,
    /// Connecting to a machine (SSH handshake and the serve greeting) gives
    /// up after this many seconds.
    pub connect_timeout_secs: u64,
    /// A machine that failed is left alone this long, in seconds, doubled
    /// for each further failure in a row up to `backoff_max_secs`.
    pub backoff_secs: u64,
    pub backoff_max_secs: u64,
    /// A step that failed for a reason unrelated to the build itself (a
    /// missing input on the machine, say) is tried this often in all.
    pub max_tries: u32,
    /// Seconds before the second try; doubled for each further one.
    pub retry_delay_secs: u64,
}

impl Default for MachinesConfig {
    fn default() -> Self {
        MachinesConfig {
            local: true,
            files: Vec::new(),
            machine: Vec::new(),
            unsupported_timeout_secs: 600,
            connect_timeout_secs: 20,
            backoff_secs: 30,
            backoff_max_secs: 3600,
            max_tries: 3,
            retry_delay_secs: 5,
        }
    }
}

/// The binary cache the server offers of its store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BinaryCacheConfig {
    /// A secret key file from `nix-store --generate-binary-cache-key`;
    /// narinfos are signed with it. Empty: unsigned.
    pub secret_key_file: PathBuf,
    /// Caches every successful build's outputs are published to.
    pub publish: Vec<PublishConfig>,
}

/// Secrets shared with forges for push webhooks; empty disables one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Secret of `/api/push-github` (the webhook's "secret" on GitHub).
    pub github_secret: String,
    /// Secret of `/api/push-gitea`.
    pub gitea_secret: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NixConfig {
    /// Directory holding `nix-store`, `nix-instantiate` and friends; empty
    /// means they are looked up on `PATH`.
    pub bin_dir: PathBuf,
    /// Nix settings passed as `--option NAME VALUE` to every Nix call, e.g.
    /// `substituters = ""` on a machine without network.
    pub settings: BTreeMap<String, String>,
    /// Evaluate in Nix's restricted mode: only the jobset's inputs are
    /// readable, no arbitrary files or URLs.
    pub restrict_eval: bool,
    /// Allow import-from-derivation (building during evaluation).
    pub allow_import_from_derivation: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluatorConfig {
    /// Evaluator worker processes per evaluation.
    pub workers: usize,
    /// Resident memory of one worker process, in MiB, checked between jobs
    /// (above it the worker is replaced by a fresh one); a job that needs
    /// more alone fails (0: no cap).
    pub worker_memory_mb: u64,
    /// Jobsets evaluated at the same time.
    pub max_concurrent_evals: usize,
    /// How often the evaluator looks for jobsets that are due, in seconds.
    pub poll_interval_secs: u64,
    /// An evaluation running longer than this is killed and recorded as failed.
    pub timeout_secs: u64,
    /// Directories under which `path` inputs may point. Empty: no `path`
    /// inputs at all (a jobset must not read the server's files unasked).
    pub allowed_path_roots: Vec<PathBuf>,
    /// Use `nix-eval-jobs` when it is on PATH (or in `nix.bin_dir`).
    pub use_nix_eval_jobs: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Build steps run at the same time on the local machine.
    pub max_jobs: usize,
    /// Default `meta.timeout` of a job, in seconds.
    pub default_timeout_secs: u64,
    /// Default `meta.maxSilent` of a job, in seconds.
    pub default_max_silent_secs: u64,
    /// A step whose log grows beyond this many bytes is stopped (status 10).
    pub max_log_size: u64,
    /// A build whose outputs exceed this many bytes fails (status 11).
    pub max_output_size: u64,
    /// Fetch a step's outputs from the configured substituters when they
    /// have them, instead of building (Hydra's `use-substitutes`).
    pub use_substitutes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("orthrus-data"),
            database_url: String::new(),
            web: WebConfig::default(),
            nix: NixConfig::default(),
            evaluator: EvaluatorConfig::default(),
            queue: QueueConfig::default(),
            machines: MachinesConfig::default(),
            webhooks: WebhooksConfig::default(),
            binary_cache: BinaryCacheConfig::default(),
            plugins: PluginsConfig::default(),
            mail: MailConfig::default(),
            notifiers: Vec::new(),
            gc: GcConfig::default(),
            retention: RetentionConfig::default(),
            roles: Vec::new(),
            cluster: ClusterConfig::default(),
            file: None,
        }
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: "127.0.0.1:3000".into(),
            base_url: String::new(),
            private: false,
            session_days: 30,
            login_failures_per_user: 10,
            login_failures_per_address: 100,
            login_window_secs: 900,
            header_timeout_secs: 30,
        }
    }
}

impl Default for NixConfig {
    fn default() -> Self {
        NixConfig {
            bin_dir: PathBuf::new(),
            settings: BTreeMap::new(),
            restrict_eval: true,
            allow_import_from_derivation: false,
        }
    }
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        EvaluatorConfig {
            workers: available_cores().min(4),
            worker_memory_mb: 4096,
            max_concurrent_evals: 2,
            poll_interval_secs: 10,
            timeout_secs: 3600,
            allowed_path_roots: Vec::new(),
            use_nix_eval_jobs: true,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_jobs: available_cores(),
            default_timeout_secs: 36000,
            default_max_silent_secs: 7200,
            max_log_size: 64 << 20,
            max_output_size: 2 << 30,
            use_substitutes: false,
        }
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&c| c == b'\n').count() + 1
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config = Config::parse(&text, path)?;
        config.file = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_owned()));
        Ok(config)
    }

    /// What no project and no plugin may read, even under an allowed root:
    /// the data directory (database, logs, plugins' state), this file, and
    /// every file of secrets it names.
    pub fn private_paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.data_dir.clone()];
        paths.extend(self.file.clone());
        paths.extend(
            [&self.binary_cache.secret_key_file, &self.mail.password_file]
                .into_iter()
                .filter(|f| !f.as_os_str().is_empty())
                .cloned(),
        );
        paths.extend(self.machines.files.iter().cloned());
        paths.extend(self.machines.machine.iter().filter(|m| !m.ssh_key.is_empty()).map(|m| PathBuf::from(&m.ssh_key)));
        for grant in self.plugins.grants.values() {
            paths.extend(grant.credential_files().map(Path::to_owned));
        }
        // The database, wherever a `sqlite:` URL puts it.
        if let Some(file) =
            self.database_url().strip_prefix("sqlite://").or_else(|| self.database_url.strip_prefix("sqlite:"))
        {
            paths.push(PathBuf::from(file.split('?').next().unwrap_or(file)));
        }
        // Files of secrets Nix is told of.
        for (name, value) in &self.nix.settings {
            if matches!(name.as_str(), "netrc-file" | "secret-key-files" | "access-tokens-file") {
                paths.extend(value.split_whitespace().map(PathBuf::from));
            }
        }
        paths
    }

    /// Parses and validates configuration text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: e.to_string() })?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let message = match inner.span() {
                Some(span) => format!("{} (line {})", inner.message(), line_of(text, span.start)),
                None => inner.message().to_owned(),
            };
            ConfigError::Invalid { path: path.to_owned(), key, message }
        })?;
        config.validate().map_err(|(key, message)| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Makes `data_dir` absolute (relative to the working directory), since
    /// Nix and the evaluator's files need absolute paths.
    pub fn make_paths_absolute(&mut self) -> std::io::Result<()> {
        self.data_dir = std::path::absolute(&self.data_dir)?;
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.web.listen.parse().map_err(|e| format!("{:?} is not an address:port ({e})", self.web.listen))
    }

    /// The URL clients reach this server at, without a trailing slash.
    pub fn base_url(&self) -> String {
        if self.web.base_url.is_empty() {
            format!("http://{}", self.web.listen)
        } else {
            self.web.base_url.trim_end_matches('/').to_owned()
        }
    }

    /// The roles this process runs, as configured (`roles`; empty: all).
    pub fn process_roles(&self) -> ProcessRoles {
        if self.roles.is_empty() { ProcessRoles::all() } else { self.roles.iter().copied().collect() }
    }

    /// Where the other processes reach this one.
    pub fn cluster_url(&self) -> String {
        if self.cluster.url.is_empty() {
            format!("http://{}", self.web.listen)
        } else {
            self.cluster.url.trim_end_matches('/').to_owned()
        }
    }

    /// Whether the database is SQLite (one process runs every role).
    pub fn is_sqlite(&self) -> bool {
        self.database_url().starts_with("sqlite:")
    }

    /// The database URL, defaulting to SQLite inside `data_dir`.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("orthrus.sqlite").display())
        } else {
            self.database_url.clone()
        }
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// Scratch space for evaluations; emptied at start.
    pub fn scratch_dir(&self) -> PathBuf {
        self.data_dir.join("scratch")
    }

    /// Scratch directories of plugins, one per plugin, kept between calls.
    pub fn plugin_scratch_dir(&self) -> PathBuf {
        self.data_dir.join("plugins")
    }

    /// Compiled plugins, so that each is compiled once.
    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.data_dir.join("plugin-cache")
    }
}

#[cfg(test)]
mod tests;
