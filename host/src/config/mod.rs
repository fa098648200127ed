//! The operator's TOML configuration: every setting has a default, so an
//! empty file (or none at all) is a working configuration; a bad file is
//! rejected with the dotted key and the reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    /// The file this was read from (absolute), if any: it holds secrets,
    /// so it is kept out of everything a project or plugin can reach.
    #[serde(skip)]
    pub file: Option<PathBuf>,
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
    pub events: Vec<String>,
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

/// Event kinds a notifier may ask for.
pub const EVENT_KINDS: [&str; 8] = [
    "eval-started",
    "eval-cached",
    "eval-failed",
    "eval-added",
    "build-queued",
    "build-started",
    "build-finished",
    "step-finished",
];

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
    pub machine: Vec<crate::machines::MachineFields>,
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
    /// Address-space cap of one worker process, in MiB (0: no cap).
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

    fn validate(&self) -> Result<(), (&'static str, String)> {
        self.listen_addr().map_err(|m| ("web.listen", m))?;
        let base_url = &self.web.base_url;
        if !(base_url.is_empty() || base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(("web.base_url", "must start with http:// or https://".into()));
        }
        let url = &self.database_url;
        if !(url.is_empty()
            || url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(("database_url", "must be empty (SQLite in data_dir), sqlite:… or postgres://…".into()));
        }
        if self.evaluator.workers == 0 {
            return Err(("evaluator.workers", "must be at least 1".into()));
        }
        if self.evaluator.max_concurrent_evals == 0 {
            return Err(("evaluator.max_concurrent_evals", "must be at least 1".into()));
        }
        if self.evaluator.poll_interval_secs == 0 {
            return Err(("evaluator.poll_interval_secs", "must be at least 1".into()));
        }
        if self.evaluator.timeout_secs == 0 {
            return Err(("evaluator.timeout_secs", "must be at least 1".into()));
        }
        if let Some(root) = self.evaluator.allowed_path_roots.iter().find(|r| !r.is_absolute()) {
            return Err(("evaluator.allowed_path_roots", format!("{} is not an absolute path", root.display())));
        }
        if self.plugins.memory_mb == 0 || self.plugins.memory_mb > 4096 {
            return Err(("plugins.memory_mb", "must be between 1 and 4096".into()));
        }
        if self.plugins.timeout_secs == 0 {
            return Err(("plugins.timeout_secs", "must be at least 1".into()));
        }
        for (name, grant) in &self.plugins.grants {
            if let Some(program) = grant.programs.iter().find(|p| p.is_empty() || p.contains('/')) {
                return Err(("plugins.grants", format!("{name}: {program:?} is not a program name (no paths)")));
            }
        }
        for (name, grant) in &self.plugins.grants {
            if let Some(host) = grant.http.iter().find(|h| crate::plugins::HostGrant::parse(h).is_err()) {
                return Err(("plugins.grants", format!("{name}: {host:?} is not a host (`name` or `name:port`)")));
            }
            if let Some(file) = grant.credential_files().find(|f| !f.is_absolute()) {
                return Err(("plugins.grants", format!("{name}: {} is not an absolute path", file.display())));
            }
        }
        if self.plugins.bwrap.is_empty() {
            return Err(("plugins.bwrap", "must name the bubblewrap program (default `bwrap`)".into()));
        }
        if self.plugins.fuel_millions == 0
            || self.plugins.render_timeout_ms == 0
            || self.plugins.release_set_timeout_ms == 0
        {
            return Err((
                "plugins",
                "fuel_millions, render_timeout_ms and release_set_timeout_ms must be at least 1".into(),
            ));
        }
        if !self.mail.relay.is_empty() && self.mail.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err((
                "mail.from",
                format!("{:?} is not a mail address (`Name <address>` or `address`)", self.mail.from),
            ));
        }
        let mut notifier_names = std::collections::BTreeSet::new();
        for notifier in &self.notifiers {
            if !notifier_names.insert(notifier.name()) {
                return Err(("notifiers", format!("two notifiers are named {:?}: give one a `name`", notifier.name())));
            }
            if let Some(kind) = notifier.events.iter().find(|k| !EVENT_KINDS.contains(&k.as_str())) {
                return Err((
                    "notifiers",
                    format!("{}: unknown event {kind:?} (known: {})", notifier.name(), EVENT_KINDS.join(", ")),
                ));
            }
        }
        if self.web.login_failures_per_user == 0 || self.web.login_failures_per_address == 0 {
            return Err(("web", "login_failures_per_user and login_failures_per_address must be at least 1".into()));
        }
        if self.web.login_window_secs == 0 || self.web.header_timeout_secs == 0 {
            return Err(("web", "login_window_secs and header_timeout_secs must be at least 1".into()));
        }
        let retention = &self.retention;
        if retention.interval_secs == 0 {
            return Err(("retention.interval_secs", "must be at least 1".into()));
        }
        for (key, days) in [
            ("retention.events_max_age_days", retention.events_max_age_days),
            ("retention.logs_max_age_days", retention.logs_max_age_days),
            ("retention.evals_min_age_days", retention.evals_min_age_days),
        ] {
            // Past a million days, an age is "never" and still fits in seconds.
            if !(0.0..=1e6).contains(&days) {
                return Err((key, format!("{days} is not a number of days between 0 and 1000000")));
            }
        }
        if self.gc.interval_secs == 0 {
            return Err(("gc.interval_secs", "must be at least 1".into()));
        }
        if !self.gc.roots_dir.as_os_str().is_empty() && !self.gc.roots_dir.is_absolute() {
            return Err(("gc.roots_dir", format!("{} is not an absolute path", self.gc.roots_dir.display())));
        }
        if self.web.session_days == 0 {
            return Err(("web.session_days", "must be at least 1".into()));
        }
        if self.queue.max_jobs == 0 {
            return Err(("queue.max_jobs", "must be at least 1".into()));
        }
        for (index, fields) in self.machines.machine.iter().enumerate() {
            if let Err(message) = fields.clone().into_spec(format!("machines.machine[{index}]")) {
                return Err(("machines.machine", format!("entry {} ({}): {message}", index + 1, fields.uri)));
            }
        }
        if let Some(file) = self.machines.files.iter().find(|f| !f.is_absolute()) {
            return Err(("machines.files", format!("{} is not an absolute path", file.display())));
        }
        if self.machines.max_tries == 0 {
            return Err(("machines.max_tries", "must be at least 1".into()));
        }
        if self.machines.connect_timeout_secs == 0 {
            return Err(("machines.connect_timeout_secs", "must be at least 1".into()));
        }
        const MONTH: u64 = 30 * 24 * 3600;
        for (key, value) in [
            ("machines.unsupported_timeout_secs", self.machines.unsupported_timeout_secs),
            ("machines.connect_timeout_secs", self.machines.connect_timeout_secs),
            ("machines.backoff_secs", self.machines.backoff_secs),
            ("machines.backoff_max_secs", self.machines.backoff_max_secs),
            ("machines.retry_delay_secs", self.machines.retry_delay_secs),
        ] {
            if value > MONTH {
                return Err((key, format!("must be at most {MONTH} (30 days)")));
            }
        }
        if self.machines.backoff_max_secs < self.machines.backoff_secs {
            return Err(("machines.backoff_max_secs", "must be at least machines.backoff_secs".into()));
        }
        for key in self.nix.settings.keys() {
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(("nix.settings", format!("{key:?} is not a Nix setting name")));
            }
        }
        Ok(())
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
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("orthrus.toml"))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.web.listen, "127.0.0.1:3000");
        assert_eq!(config.base_url(), "http://127.0.0.1:3000");
        assert!(config.database_url().starts_with("sqlite://orthrus-data/"));
        assert!(config.nix.restrict_eval);
    }

    #[test]
    fn unknown_key_names_the_key() {
        let err = parse("[queue]\nmax_jobz = 3\n").unwrap_err().to_string();
        assert!(err.contains("orthrus.toml"), "{err}");
        assert!(err.contains("queue.max_jobz"), "{err}");
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key_and_line() {
        let err = parse("[evaluator]\nworkers = \"many\"\n").unwrap_err().to_string();
        assert!(err.contains("evaluator.workers"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn invalid_values_are_rejected_with_reason() {
        let err = parse("[queue]\nmax_jobs = 0\n").unwrap_err().to_string();
        assert!(err.contains("queue.max_jobs") && err.contains("at least 1"), "{err}");
        let err = parse("[web]\nlisten = \"nowhere\"\n").unwrap_err().to_string();
        assert!(err.contains("web.listen"), "{err}");
        let err = parse("database_url = \"mysql://x\"\n").unwrap_err().to_string();
        assert!(err.contains("database_url"), "{err}");
        let err = parse("[evaluator]\nallowed_path_roots = [\"relative\"]\n").unwrap_err().to_string();
        assert!(err.contains("allowed_path_roots") && err.contains("absolute"), "{err}");
    }

    #[test]
    fn machines_are_checked_with_their_key() {
        let config = parse(
            "[[machines.machine]]\nuri = \"ssh://nix@builder:2222\"\nsystems = [\"aarch64-linux\"]\nmax_jobs = 4\n",
        )
        .unwrap();
        assert_eq!(config.machines.machine[0].max_jobs, Some(4));
        let err = parse("[[machines.machine]]\nuri = \"ssh-ng://builder\"\n").unwrap_err().to_string();
        assert!(err.contains("machines.machine") && err.contains("ssh-ng"), "{err}");
        let err = parse("[[machines.machine]]\nuri = \"ssh://b\"\nspeed = 2\n").unwrap_err().to_string();
        assert!(err.contains("machines.machine[0].speed") && err.contains("unknown field"), "{err}");
        let err = parse("[machines]\nfiles = [\"machines\"]\n").unwrap_err().to_string();
        assert!(err.contains("machines.files") && err.contains("absolute"), "{err}");
    }

    #[test]
    fn notifiers_mail_and_http_grants_are_checked() {
        let config = parse(
            "[mail]\nrelay = \"127.0.0.1\"\nport = 2525\n\n[plugins.grants.webhook]\nhttp = [\"hooks.example.org\", \"127.0.0.1:9000\"]\n\n\
             [[notifiers]]\nplugin = \"webhook\"\nevents = [\"build-finished\"]\nsettings = { url = \"http://127.0.0.1:9000/\" }\n",
        )
        .unwrap();
        assert_eq!(config.notifiers[0].name(), "webhook");
        assert_eq!(config.notifiers[0].retry_delay_secs, 10);
        assert_eq!(config.mail.port, 2525);
        let err = parse("[[notifiers]]\nplugin = \"webhook\"\nevents = [\"build-done\"]\n").unwrap_err().to_string();
        assert!(err.contains("notifiers") && err.contains("unknown event \"build-done\""), "{err}");
        let err =
            parse("[[notifiers]]\nplugin = \"email\"\n[[notifiers]]\nplugin = \"email\"\n").unwrap_err().to_string();
        assert!(err.contains("two notifiers are named \"email\""), "{err}");
        let err = parse("[plugins.grants.webhook]\nhttp = [\"http://x/\"]\n").unwrap_err().to_string();
        assert!(err.contains("webhook") && err.contains("is not a host"), "{err}");
        let err = parse("[mail]\nrelay = \"x\"\nfrom = \"not an address\"\n").unwrap_err().to_string();
        assert!(err.contains("mail.from"), "{err}");
    }

    #[test]
    fn syntax_error_is_located() {
        let err = parse("[web\nlisten = 1").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn nix_settings_are_a_table() {
        let config = parse("[nix.settings]\nsubstituters = \"\"\n\"build-users-group\" = \"\"\n").unwrap();
        assert_eq!(config.nix.settings.get("substituters").map(String::as_str), Some(""));
        assert_eq!(config.nix.settings.len(), 2);
    }
}
