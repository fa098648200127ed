//! The Nix layer: typed calls of the Nix command-line tools, `.drv` parsing
//! and store paths. Nothing else in the host spawns Nix.
//!
//! Only the long-stable legacy commands (`nix-store`, `nix-instantiate`) are
//! used, with flags that mean the same from Debian's Nix 2.8 to current Nix,
//! so that no experimental feature has to be switched on.

mod account;
mod ansi;
mod binary_cache;
mod derivation;
mod expr;
mod flake;
pub mod local;
pub mod nar;
mod output;
mod path_info;
mod serve;
mod store_path;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

pub use account::Account;
pub use ansi::strip_ansi;
pub use binary_cache::{NarFile, SigningKey, narinfo, narinfo_of, nix32_encode};
pub use derivation::{Derivation, DerivationError, DerivationOutput};
pub use expr::{NixValue, string_literal};
use flake::FLAKE_FEATURES;
pub use flake::{FlakeSource, LockInput, LockedFlake};
pub use output::{Head, Tail, cut_marker, read_bounded_line, read_head, read_tail};
pub use path_info::{NarReader, PathInfo, group_sizes_from};
pub use serve::{
    BasicDerivation, BuildOptions, BuildResult, BuildResultStatus, Chunk, RemotePathInfo, ServeConnection, ServeError,
    ServeOutput, sort_by_references,
};
pub use store_path::{InvalidStorePath, StorePath, store_dir};

use crate::config::NixConfig;

/// How much of a failing command's stderr is kept for its error message.
pub const MAX_ERROR_OUTPUT: usize = 64 * 1024;
/// What one evaluator call may print as results (a slice of at most a few
/// hundred jobs): more is a job whose meta is absurd, and fails that job.
const MAX_EVAL_RESULTS: usize = 16 << 20;
/// What a query of the store may print (paths, their sizes and references).
const MAX_QUERY_OUTPUT: usize = 256 << 20;
/// Paths per command line when querying many paths at once (well below
/// the kernel's argument limits).
const PATHS_PER_CALL: usize = 2000;
/// How long one substitution call may hold the queue.
const SUBSTITUTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum NixError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{command} failed: {message}")]
    Failed { command: String, message: String },
    #[error("{command} printed something unexpected: {detail}")]
    UnexpectedOutput { command: String, detail: String },
    #[error("cannot read derivation {path}: {message}")]
    Derivation { path: String, message: String },
    #[error(transparent)]
    InvalidStorePath(#[from] InvalidStorePath),
}

/// Handle on the Nix installation, carrying the operator's settings.
#[derive(Debug, Clone)]
pub struct Nix {
    bin_dir: PathBuf,
    settings: Vec<(String, String)>,
    restrict_eval: bool,
    allow_import_from_derivation: bool,
}

/// What a `nix-instantiate --eval` call gets: a file, its arguments and the
/// search path entries restricted evaluation may read.
#[derive(Debug, Clone, Default)]
pub struct EvalCall {
    pub file: PathBuf,
    /// `--arg NAME EXPR`
    pub args: Vec<(String, String)>,
    /// `--argstr NAME VALUE`
    pub string_args: Vec<(String, String)>,
    /// `-I NAME=PATH`; in restricted mode only these may be read.
    pub search_path: Vec<(String, PathBuf)>,
    /// Address-space cap of the evaluator process.
    pub memory_limit: Option<u64>,
    pub timeout: Duration,
    /// Turns on the `flakes` experimental feature (for `builtins.getFlake`).
    pub flakes: bool,
}

/// A `nix-eval-jobs` run: the evaluation plus its own worker settings.
#[derive(Debug, Clone)]
pub struct EvalJobsCall {
    pub eval: EvalCall,
    pub workers: usize,
    pub max_memory_mb: u64,
    pub gc_roots_dir: PathBuf,
    pub extra_flags: Vec<String>,
}

impl Nix {
    pub fn new(config: &NixConfig) -> Nix {
        Nix {
            bin_dir: config.bin_dir.clone(),
            settings: config.settings.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            restrict_eval: config.restrict_eval,
            allow_import_from_derivation: config.allow_import_from_derivation,
        }
    }

    /// Path of a Nix program, from `bin_dir` or `PATH`.
    pub fn program(&self, name: &str) -> PathBuf {
        if self.bin_dir.as_os_str().is_empty() { PathBuf::from(name) } else { self.bin_dir.join(name) }
    }

    /// Whether a program is available (in `bin_dir` or on `PATH`).
    pub fn has_program(&self, name: &str) -> bool {
        if !self.bin_dir.as_os_str().is_empty() {
            return self.bin_dir.join(name).is_file();
        }
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
            .unwrap_or(false)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.program(program));
        for (name, value) in &self.settings {
            cmd.arg("--option").arg(name).arg(value);
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs a command to completion, returning stdout; a non-zero exit is an
    /// error carrying stderr.
    async fn run(&self, cmd: Command, what: String) -> Result<Vec<u8>, NixError> {
        let (status, out, err) = capture(cmd, MAX_QUERY_OUTPUT).await?;
        if !status.success() {
            return Err(NixError::Failed { command: what, message: error_text(&err, status) });
        }
        if out.cut > 0 {
            return Err(NixError::Failed {
                command: what,
                message: format!("it printed more than {} MiB", MAX_QUERY_OUTPUT >> 20),
            });
        }
        Ok(out.bytes)
    }

    pub async fn version(&self) -> Result<String, NixError> {
        let mut cmd = Command::new(self.program("nix-store"));
        cmd.arg("--version").stdin(Stdio::null());
        let out = self.run(cmd, "nix-store --version".into()).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Starts a `nix-store --serve --write` on this machine's store: the
    /// same protocol the queue runner speaks to remote machines.
    /// `--builders ''` keeps Nix from handing the build on by itself.
    pub async fn serve_local(&self) -> Result<ServeConnection, NixError> {
        self.serve_store(None).await
    }

    /// The command line that runs the serve protocol on a machine whose
    /// `nix-store` is `program` (over SSH, say).
    pub fn serve_command(program: &str) -> String {
        format!("{program} --serve --write")
    }

    /// Like [`Nix::serve_local`], on the store at `store` (a URI or a
    /// directory, Nix's `--store`).
    pub async fn serve_store(&self, store: Option<&str>) -> Result<ServeConnection, NixError> {
        let what = "nix-store --serve --write";
        let mut cmd = self.command("nix-store");
        cmd.args(["--serve", "--write", "--builders", ""]);
        if let Some(store) = store {
            cmd.args(["--store", store]);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().map_err(|source| NixError::Spawn { program, source })?;
        let failed = |message: String| NixError::Failed { command: what.into(), message };
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(failed("its standard streams are missing".into()));
        };
        let output = serve::ProcessOutput::new(child, stdout, stderr).map_err(|e| failed(e.to_string()))?;
        ServeConnection::open(Box::new(output), Box::pin(stdin)).await.map_err(|e| failed(e.to_string()))
    }

    /// What Nix says this machine builds: its systems (native and
    /// `extra-platforms`) and `system-features`. Needs `nix show-config`;
    /// `None` when it is not there.
    pub async fn machine_settings(&self) -> Option<(Vec<String>, Vec<String>)> {
        let mut cmd = self.command("nix");
        cmd.args(["--extra-experimental-features", "nix-command", "show-config", "--json"]);
        let out = self.run(cmd, "nix show-config".into()).await.ok()?;
        let config: serde_json::Value = serde_json::from_slice(&out).ok()?;
        let strings = |name: &str| -> Vec<String> {
            match &config[name]["value"] {
                serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
                serde_json::Value::String(text) => text.split_whitespace().map(str::to_owned).collect(),
                _ => Vec::new(),
            }
        };
        let system = config["system"]["value"].as_str()?.to_owned();
        let mut systems = vec![system];
        systems.extend(strings("extra-platforms"));
        Some((systems, strings("system-features")))
    }

    /// Nix's settings as its calls from here see them (`nix show-config`,
    /// the operator's `nix.settings` included): name to value, lists
    /// joined by spaces.
    pub async fn settings_in_effect(&self) -> Result<BTreeMap<String, String>, NixError> {
        let mut cmd = self.command("nix");
        cmd.args(["--extra-experimental-features", "nix-command", "show-config", "--json"]);
        let what = "nix show-config --json";
        let out = self.run(cmd, what.into()).await?;
        let config: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&out)
            .map_err(|e| NixError::UnexpectedOutput { command: what.into(), detail: e.to_string() })?;
        Ok(config
            .into_iter()
            .map(|(name, setting)| {
                let value = match &setting["value"] {
                    serde_json::Value::String(text) => text.clone(),
                    serde_json::Value::Array(items) => items
                        .iter()
                        .map(|item| item.as_str().map(str::to_owned).unwrap_or_else(|| item.to_string()))
                        .collect::<Vec<_>>()
                        .join(" "),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                (name, value)
            })
            .collect())
    }

    /// Asks the store whether it answers this user (`nix store ping`), and
    /// whether it trusts it, when this Nix says (`--json`, Nix 2.15 on).
    pub async fn ping_store(&self) -> Result<Option<bool>, NixError> {
        let what = "nix store ping";
        let mut cmd = self.command("nix");
        cmd.args(["--extra-experimental-features", "nix-command", "store", "ping", "--json"]);
        match self.run(cmd, what.into()).await {
            Ok(out) => {
                let answer: serde_json::Value = serde_json::from_slice(&out)
                    .map_err(|e| NixError::UnexpectedOutput { command: what.into(), detail: e.to_string() })?;
                Ok(match &answer["trusted"] {
                    serde_json::Value::Bool(trusted) => Some(*trusted),
                    serde_json::Value::Number(n) => Some(n.as_u64() == Some(1)),
                    _ => None,
                })
            }
            Err(NixError::Failed { message, .. }) if message.contains("unrecognised flag") => {
                let mut cmd = self.command("nix");
                cmd.args(["--extra-experimental-features", "nix-command", "store", "ping"]);
                self.run(cmd, what.into()).await.map(|_| None)
            }
            Err(e) => Err(e),
        }
    }

    /// This handle with more settings for every call (the adjustments of
    /// [`local::check`]).
    pub fn with_settings(mut self, settings: &[(String, String)]) -> Nix {
        self.settings.extend(settings.iter().cloned());
        self
    }

    /// The system type this machine builds natively (`builtins.currentSystem`).
    pub async fn current_system(&self) -> Result<String, NixError> {
        let mut cmd = self.command("nix-instantiate");
        cmd.args(["--eval", "--json", "--expr", "builtins.currentSystem"]);
        let out = self.run(cmd, "nix-instantiate --eval builtins.currentSystem".into()).await?;
        serde_json::from_slice(&out).map_err(|e| NixError::UnexpectedOutput {
            command: "nix-instantiate --eval builtins.currentSystem".into(),
            detail: e.to_string(),
        })
    }

    /// Copies a file or directory into the store (`nix-store --add`).
    pub async fn add_to_store(&self, path: &Path) -> Result<StorePath, NixError> {
        let mut cmd = self.command("nix-store");
        cmd.arg("--add").arg(path);
        let what = format!("nix-store --add {}", path.display());
        let out = self.run(cmd, what.clone()).await?;
        parse_single_path(&out, &what)
    }

    /// Copies paths with their closures to another store (`nix copy --to
    /// URI`), signing them first with `key_file` if one is given (`nix
    /// store sign`), so that a store that checks signatures takes them.
    pub async fn copy_to(&self, uri: &str, paths: &[StorePath], key_file: Option<&Path>) -> Result<(), NixError> {
        for chunk in paths.chunks(PATHS_PER_CALL) {
            let names = chunk.iter().map(StorePath::as_str);
            if let Some(key_file) = key_file {
                let mut cmd = self.command("nix");
                cmd.args(["--extra-experimental-features", "nix-command", "store", "sign", "--key-file"]);
                cmd.arg(key_file).args(names.clone());
                self.run(cmd, "nix store sign".into()).await?;
            }
            let mut cmd = self.command("nix");
            cmd.args(["--extra-experimental-features", "nix-command", "copy", "--to", uri]).args(names);
            self.run(cmd, format!("nix copy --to {uri}")).await?;
        }
        Ok(())
    }

    /// The NAR hash of a valid path, as `sha256:<base32>`.
    pub async fn nar_hash(&self, path: &StorePath) -> Result<String, NixError> {
        let mut cmd = self.command("nix-store");
        cmd.args(["--query", "--hash", path.as_str()]);
        let out = self.run(cmd, format!("nix-store --query --hash {path}")).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Of the given paths, those that are not valid in the store.
    pub async fn invalid_paths(&self, paths: &[StorePath]) -> Result<HashSet<StorePath>, NixError> {
        let mut invalid = HashSet::new();
        for chunk in paths.chunks(PATHS_PER_CALL) {
            let mut cmd = self.command("nix-store");
            cmd.args(["--check-validity", "--print-invalid"]).args(chunk.iter().map(StorePath::as_str));
            let out = self.run(cmd, "nix-store --check-validity".into()).await?;
            for line in String::from_utf8_lossy(&out).lines().filter(|l| !l.is_empty()) {
                invalid.insert(StorePath::parse(line)?);
            }
        }
        Ok(invalid)
    }

    /// Fetches what it can of these paths from the configured substituters
    /// (`nix-store --realise --keep-going` on output paths substitutes and
    /// never builds), and returns those that are valid now. A path no
    /// substituter has is no error: it is built instead.
    ///
    /// The queue waits for it (as Hydra's does), so each call is bounded by
    /// `SUBSTITUTION_TIMEOUT`: what is not fetched by then is built.
    pub async fn substitute(&self, paths: &[StorePath]) -> Result<HashSet<StorePath>, NixError> {
        for chunk in paths.chunks(PATHS_PER_CALL) {
            let mut cmd = self.command("nix-store");
            cmd.args(["--realise", "--keep-going"]).args(chunk.iter().map(StorePath::as_str));
            // Dropping the call on time-out kills nix-store (kill_on_drop).
            match tokio::time::timeout(SUBSTITUTION_TIMEOUT, capture(cmd, MAX_QUERY_OUTPUT)).await {
                Ok(result) => {
                    let (status, _, err) = result?;
                    if !status.success() {
                        tracing::debug!("substituting {} paths: {}", chunk.len(), error_text(&err, status));
                    }
                }
                Err(_) => tracing::warn!(
                    "substituting {} paths took over {} s: what was not fetched is built",
                    chunk.len(),
                    SUBSTITUTION_TIMEOUT.as_secs()
                ),
            }
        }
        let still_invalid = self.invalid_paths(paths).await?;
        Ok(paths.iter().filter(|p| !still_invalid.contains(*p)).cloned().collect())
    }

    /// The closure of the given paths (`nix-store --query --requisites`).
    pub async fn requisites(&self, paths: &[StorePath]) -> Result<Vec<StorePath>, NixError> {
        let mut result = Vec::new();
        let mut seen = HashSet::new();
        for chunk in paths.chunks(PATHS_PER_CALL) {
            let mut cmd = self.command("nix-store");
            cmd.args(["--query", "--requisites"]).args(chunk.iter().map(StorePath::as_str));
            let out = self.run(cmd, "nix-store --query --requisites".into()).await?;
            for line in String::from_utf8_lossy(&out).lines().filter(|l| !l.is_empty()) {
                let path = StorePath::parse(line)?;
                if seen.insert(path.clone()) {
                    result.push(path);
                }
            }
        }
        Ok(result)
    }

    /// Reads and parses a derivation from the store.
    pub async fn read_derivation(&self, path: &StorePath) -> Result<Derivation, NixError> {
        let owned = path.clone();
        tokio::task::spawn_blocking(move || read_derivation_file(&owned)).await.unwrap_or_else(|e| {
            Err(NixError::Derivation { path: path.to_string(), message: format!("reading it failed: {e}") })
        })
    }

    /// Reads and parses many `.drv` files at once, off the async threads:
    /// the queue reads a hundred thousand when it loads.
    pub async fn read_derivations(&self, paths: Vec<StorePath>) -> Vec<(StorePath, Result<Derivation, NixError>)> {
        let paths_for_error = paths.clone();
        match tokio::task::spawn_blocking(move || {
            paths
                .into_iter()
                .map(|path| {
                    let result = read_derivation_file(&path);
                    (path, result)
                })
                .collect()
        })
        .await
        {
            Ok(read) => read,
            Err(e) => paths_for_error
                .into_iter()
                .map(|path| {
                    let message = format!("reading the derivation failed: {e}");
                    let error = NixError::Derivation { path: path.to_string(), message };
                    (path, Err(error))
                })
                .collect(),
        }
    }

    /// Registers `path` as a GC root through the symlink `link`.
    pub async fn add_gc_root(&self, path: &StorePath, link: &Path) -> Result<(), NixError> {
        let mut cmd = self.command("nix-store");
        cmd.arg("--realise").arg(path.as_str()).arg("--add-root").arg(link).arg("--indirect");
        self.run(cmd, format!("nix-store --add-root for {path}")).await.map(drop)
    }

    /// Evaluates `call.file` strictly to JSON in read-write mode (so that the
    /// `.drv` files of every `drvPath` it touches are written), within the
    /// restrictions of the configuration. Returns stdout, or the error Nix
    /// printed.
    pub async fn evaluate_json(&self, call: &EvalCall) -> Result<Vec<u8>, NixError> {
        let mut cmd = self.command("nix-instantiate");
        cmd.args(["--eval", "--strict", "--json", "--read-write-mode"]);
        self.add_eval_arguments(&mut cmd, call);
        limit_memory(&mut cmd, call.memory_limit);
        let what = format!("evaluation of {}", call.file.display());
        let (status, out, err) = match tokio::time::timeout(call.timeout, capture(cmd, MAX_EVAL_RESULTS)).await {
            Err(_) => {
                return Err(NixError::Failed {
                    command: what,
                    message: format!("timed out after {} seconds", call.timeout.as_secs()),
                });
            }
            Ok(result) => result?,
        };
        if !status.success() {
            return Err(NixError::Failed { command: what, message: error_text(&err, status) });
        }
        if out.cut > 0 {
            return Err(NixError::Failed {
                command: what,
                message: format!(
                    "its results are larger than {} MiB: a job's name, meta or outputs are too large",
                    MAX_EVAL_RESULTS >> 20
                ),
            });
        }
        Ok(out.bytes)
    }

    /// Starts a long-lived evaluation of `call.file` in read-write mode (so
    /// that `.drv` files are written) whose results the expression reports
    /// itself, line by line on stderr (with `builtins.trace`), as it goes:
    /// the caller reads them while it runs, watches its memory, and stops it
    /// when it likes. Its final value is not printed.
    pub fn spawn_streaming_evaluation(&self, call: &EvalCall) -> Result<tokio::process::Child, NixError> {
        let mut cmd = self.command("nix-instantiate");
        cmd.args(["--eval", "--read-write-mode"]);
        self.add_eval_arguments(&mut cmd, call);
        limit_memory(&mut cmd, call.memory_limit);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd.spawn().map_err(|source| NixError::Spawn { program: "nix-instantiate".into(), source })
    }

    /// Starts `nix-eval-jobs` on `call.file`; the caller reads its JSON lines
    /// from stdout (stderr is piped too).
    pub fn spawn_eval_jobs(&self, call: &EvalJobsCall) -> Result<tokio::process::Child, NixError> {
        let mut cmd = self.command("nix-eval-jobs");
        cmd.arg("--workers").arg(call.workers.max(1).to_string()).arg("--meta");
        cmd.arg("--gc-roots-dir").arg(&call.gc_roots_dir);
        if call.max_memory_mb > 0 {
            cmd.arg("--max-memory-size").arg(call.max_memory_mb.to_string());
        }
        cmd.args(&call.extra_flags);
        self.add_eval_arguments(&mut cmd, &call.eval);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().map_err(|source| NixError::Spawn { program: "nix-eval-jobs".into(), source })
    }

    /// Restricted-mode options, search path, arguments and file of an evaluation.
    fn add_eval_arguments(&self, cmd: &mut Command, call: &EvalCall) {
        if call.flakes {
            cmd.args(FLAKE_FEATURES);
        }
        if self.restrict_eval {
            cmd.args(["--option", "restrict-eval", "true"]);
        }
        if !self.allow_import_from_derivation {
            cmd.args(["--option", "allow-import-from-derivation", "false"]);
        }
        for (name, path) in &call.search_path {
            let mut entry = OsString::from(format!("{name}="));
            entry.push(path);
            cmd.arg("-I").arg(entry);
        }
        for (name, expr) in &call.args {
            cmd.arg("--arg").arg(name).arg(expr);
        }
        for (name, value) in &call.string_args {
            cmd.arg("--argstr").arg(name).arg(value);
        }
        cmd.arg(&call.file);
        // NIX_PATH would let an expression reach `<nixpkgs>` outside of its inputs.
        cmd.env_remove("NIX_PATH");
    }
}

/// Runs a command to its end: its stdout's first `stdout_cap` bytes, its
/// stderr's last [`MAX_ERROR_OUTPUT`] (a runaway `builtins.trace` must not
/// exhaust the host's memory).
async fn capture(mut cmd: Command, stdout_cap: usize) -> Result<(std::process::ExitStatus, Head, Tail), NixError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let spawn_error = |source| NixError::Spawn { program: program.clone(), source };
    let mut child = cmd.spawn().map_err(spawn_error)?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (out, err) = tokio::join!(read_head(&mut stdout, stdout_cap), read_tail(&mut stderr, MAX_ERROR_OUTPUT));
    let (out, err) = (out.map_err(spawn_error)?, err.map_err(spawn_error)?);
    let status = child.wait().await.map_err(spawn_error)?;
    Ok((status, out, err))
}

/// Caps the address space of a child process, so that one runaway
/// evaluation cannot take the machine down with it.
fn limit_memory(cmd: &mut Command, limit: Option<u64>) {
    let Some(bytes) = limit else { return };
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the
    // parent; this closure runs in the forked child before exec.
    unsafe {
        cmd.pre_exec(move || {
            let rlimit = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_AS, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The readable part of a failed command's stderr: without colours, and
/// with a note when the process was killed by a signal (such as running out
/// of its memory cap).
pub fn error_text(stderr: &Tail, status: std::process::ExitStatus) -> String {
    // The tail may begin inside a character: lossy, then lines.
    let whole = String::from_utf8_lossy(&stderr.bytes);
    // Boehm GC's complaints before an out-of-memory error are noise.
    let lines: Vec<&str> = whole.lines().filter(|l| !l.starts_with("GC Warning:")).collect();
    let text = if lines.is_empty() { strip_ansi(whole.trim()) } else { strip_ansi(lines.join("\n").trim()) };
    let mut cut = stderr.cut;
    let text = if text.len() > MAX_ERROR_OUTPUT {
        let from = text.len() - MAX_ERROR_OUTPUT;
        let from = (from..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
        cut += from as u64;
        text[from..].to_owned()
    } else {
        text
    };
    let text = if cut > 0 { format!("{}\n{text}", cut_marker(cut)) } else { text };
    use std::os::unix::process::ExitStatusExt;
    match (status.signal(), text.is_empty()) {
        (Some(signal), true) => format!("killed by signal {signal}"),
        (Some(signal), false) => format!("{text}\n(killed by signal {signal})"),
        (None, true) => format!("exited with {status}"),
        (None, false) => text,
    }
}

fn parse_single_path(out: &[u8], what: &str) -> Result<StorePath, NixError> {
    let text = String::from_utf8_lossy(out);
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    StorePath::parse(line).map_err(|e| NixError::UnexpectedOutput { command: what.to_owned(), detail: e.to_string() })
}

/// Largest `.drv` file read: nixpkgs' are kilobytes; a path an expression
/// names could be any file in the store, and it is read whole.
const MAX_DERIVATION_BYTES: u64 = 64 << 20;

/// Reads and parses one `.drv` file (blocking).
fn read_derivation_file(path: &StorePath) -> Result<Derivation, NixError> {
    use std::io::Read;
    let error = |message: String| NixError::Derivation { path: path.to_string(), message };
    let mut text = Vec::new();
    std::fs::File::open(path.as_str())
        .and_then(|file| file.take(MAX_DERIVATION_BYTES + 1).read_to_end(&mut text))
        .map_err(|e| error(e.to_string()))?;
    if text.len() as u64 > MAX_DERIVATION_BYTES {
        return Err(error(format!("it is larger than {} MiB", MAX_DERIVATION_BYTES >> 20)));
    }
    Derivation::parse(&text).map_err(|e| error(e.to_string()))
}

#[cfg(test)]
mod tests {
    //! These run the real Nix of the machine.
    use super::*;

    fn nix() -> Nix {
        Nix::new(&crate::config::NixConfig::default())
    }

    async fn instantiate(expr: &str) -> StorePath {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("default.nix");
        std::fs::write(&file, expr).unwrap();
        let out = tokio::process::Command::new("nix-instantiate").arg(&file).output().await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        StorePath::parse(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
    }

    /// The parser agrees with Nix's own reading of a real derivation.
    #[tokio::test]
    async fn parses_real_derivations_like_nix() {
        let drv_path = instantiate(
            r#"let dep = derivation { name = "dep"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo > $out"]; outputs = ["out" "dev"]; };
               in derivation { name = "top"; system = builtins.currentSystem; builder = "/bin/sh";
                    args = ["-c" "echo \"quoted\" \\ back\tslash > $out"]; d = dep.dev; e = dep; src = ./default.nix;
                    requiredSystemFeatures = [ "kvm" ]; text = "multi\nline"; }"#,
        )
        .await;
        let drv = nix().read_derivation(&drv_path).await.unwrap();
        let out = tokio::process::Command::new("nix")
            .args(["--extra-experimental-features", "nix-command", "show-derivation", drv_path.as_str()])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // Keyed by the path (by its base name in the newest formats): one entry.
        let shown = shown.as_object().unwrap().values().next().unwrap();
        assert_eq!(drv.system, shown["system"]);
        assert_eq!(drv.builder, shown["builder"]);
        assert_eq!(serde_json::to_value(&drv.args).unwrap(), shown["args"]);
        assert_eq!(serde_json::to_value(&drv.env).unwrap(), shown["env"]);
        let out = drv.outputs["out"].path.as_ref().unwrap();
        assert!(shown["outputs"]["out"]["path"].as_str().unwrap().ends_with(out.base_name()));
        let inputs: Vec<&str> = drv.input_drvs.keys().map(StorePath::base_name).collect();
        let shown_inputs: Vec<&str> = shown["inputDrvs"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(inputs.len(), shown_inputs.len());
        assert!(inputs.iter().zip(&shown_inputs).all(|(ours, theirs)| theirs.ends_with(ours)));
        let dep_outputs: Vec<&String> = drv.input_drvs.values().next().unwrap().iter().collect();
        assert_eq!(dep_outputs, ["dev", "out"]);
        assert_eq!(drv.input_srcs.len(), 1);
        assert_eq!(drv.required_features().into_iter().collect::<Vec<_>>(), ["kvm"]);
    }

    #[tokio::test]
    async fn validity_and_sizes() {
        let nix = nix();
        let drv = instantiate(r#"derivation { name = "v"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo > $out"]; }"#).await;
        let bogus = StorePath::parse("/nix/store/00000000000000000000000000000000-missing").unwrap();
        let invalid = nix.invalid_paths(&[drv.clone(), bogus.clone()]).await.unwrap();
        assert_eq!(invalid, [bogus].into_iter().collect());
        let infos = nix.path_infos(std::slice::from_ref(&drv)).await.unwrap();
        let size = infos[&drv].nar_size;
        assert!(size > 0);
        let (groups, closure) = nix.group_sizes(&[vec![drv.clone()]]).await.unwrap();
        assert_eq!(groups, [(size, size)]);
        assert_eq!(closure, std::slice::from_ref(&drv));
    }
}
