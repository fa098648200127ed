//! Nix's serve protocol, the client side: what Hydra speaks to its build
//! machines, over `nix-store --serve --write` on the far end of a pipe or
//! an SSH channel. One connection is long-lived and does one thing at a
//! time; any error leaves it in an unknown state, so the caller drops it.
//!
//! The wire format: unsigned 64-bit little-endian numbers (booleans too),
//! strings as a length, the bytes and zero padding to a multiple of eight,
//! lists as a count and their items. The far side's standard error carries
//! build logs (raw lines) and, before it exits on an error, the message.
//!
//! Versions: Nix 2.8 and Lix speak 2.7, current Nix 2.8. This client offers
//! 2.7 and uses the lower of that and the server's. It avoids the commands
//! current Nix dropped (`ExportPaths`): outputs come back with
//! `QueryPathInfos` and `DumpStorePath`, and are stored with `AddToStoreNar`
//! so the receiving store checks the NAR hash.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use super::StorePath;
use super::derivation::Derivation;

const CLIENT_MAGIC: u64 = 0x390c9deb;
const SERVER_MAGIC: u64 = 0x5452eecb;
/// 2.7: what Nix 2.8 and Lix speak; current Nix answers in kind.
const CLIENT_VERSION: u64 = 0x207;

const QUERY_VALID_PATHS: u64 = 1;
const QUERY_PATH_INFOS: u64 = 2;
const DUMP_STORE_PATH: u64 = 3;
const BUILD_PATHS: u64 = 6;
const BUILD_DERIVATION: u64 = 8;
const ADD_TO_STORE_NAR: u64 = 9;

/// Strings longer than this from the far side mean it is confused (or hostile).
const MAX_STRING: u64 = 64 << 20;
/// Likewise for the number of items in a list.
const MAX_ITEMS: u64 = 10_000_000;
/// What is kept of the far side's stderr for error messages.
const STDERR_TAIL: usize = 4096;
/// How long a connection that failed is given to say why on stderr.
const LAST_WORDS: Duration = Duration::from_millis(200);

/// Something the far side wrote.
#[derive(Debug)]
pub enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// The far side's two output streams, as one stream of chunks in the order
/// they were written (as far as the transport can tell), so that a build's
/// log is complete when its result arrives.
pub trait ServeOutput: Send {
    /// The next chunk; `None` once the far side has closed its output.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Chunk>>>;
    /// Known to be dead without trying (process exited, SSH session closed).
    fn is_closed(&mut self) -> bool;
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the serve protocol went wrong: {0}")]
    Protocol(String),
    /// The far side closed the connection, usually after printing why.
    #[error("the remote Nix stopped{}", last_words(.0))]
    Closed(String),
}

fn last_words(stderr: &str) -> String {
    let text = super::strip_ansi(stderr.trim());
    if text.is_empty() { String::new() } else { format!(": {text}") }
}

/// A store path as the far side describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePathInfo {
    pub path: StorePath,
    pub deriver: String,
    pub references: Vec<StorePath>,
    pub nar_size: u64,
    /// `sha256:…`; empty from servers older than 2.4.
    pub nar_hash: String,
    pub ca: String,
    pub sigs: Vec<String>,
}

/// Limits the far side applies to one build.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    pub max_silent: Duration,
    pub timeout: Duration,
    pub max_log_size: u64,
}

/// How the far side says a build ended (Nix's `BuildResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    pub status: BuildStatus,
    pub error_msg: String,
    pub times_built: u64,
    pub start_time: u64,
    pub stop_time: u64,
}

/// What Nix's exit status after building says: 100 and up is a build
/// failure, plus 1 for a timeout, 2 for a hash mismatch, 4 for a
/// different result when checked; anything else failed before building.
fn status_of_exit_code(code: u64) -> BuildStatus {
    match code.checked_sub(100) {
        Some(bits @ 0..=15) if bits & 1 != 0 => BuildStatus::TimedOut,
        Some(bits @ 0..=15) if bits & 4 != 0 => BuildStatus::NotDeterministic,
        Some(0..=15) => BuildStatus::PermanentFailure,
        _ => BuildStatus::MiscFailure,
    }
}

/// What Nix's message says when its exit status does not: through a daemon,
/// a build failure comes back as status 1 with the daemon's message.
fn status_of_message(full_message: &str) -> BuildStatus {
    const FAILED: &[&str] = &[
        "failed with exit code",
        "failed due to signal",
        "builder failed",
        "hash mismatch in fixed-output derivation",
        "dependencies couldn't be built",
    ];
    // Nix's own words only, not the builder's log lines it quotes (which a
    // builder could fill with words that would change its verdict).
    let message: String = full_message
        .lines()
        .take_while(|line| !line.to_ascii_lowercase().contains("log lines:"))
        .filter(|line| !line.trim_start().starts_with('>'))
        .collect::<Vec<_>>()
        .join("\n");
    if message.contains("timed out after") {
        BuildStatus::TimedOut
    } else if message.contains("may not be deterministic") {
        BuildStatus::NotDeterministic
    } else if FAILED.iter().any(|words| message.contains(words)) {
        BuildStatus::PermanentFailure
    } else {
        BuildStatus::MiscFailure
    }
}

/// Nix's `BuildResult::Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStatus {
    Built,
    Substituted,
    AlreadyValid,
    PermanentFailure,
    InputRejected,
    OutputRejected,
    TransientFailure,
    CachedFailure,
    TimedOut,
    MiscFailure,
    DependencyFailed,
    LogLimitExceeded,
    NotDeterministic,
    ResolvesToAlreadyValid,
    NoSubstituters,
    Unknown(u64),
}

impl BuildStatus {
    fn from_code(code: u64) -> BuildStatus {
        use BuildStatus::*;
        match code {
            0 => Built,
            1 => Substituted,
            2 => AlreadyValid,
            3 => PermanentFailure,
            4 => InputRejected,
            5 => OutputRejected,
            6 => TransientFailure,
            7 => CachedFailure,
            8 => TimedOut,
            9 => MiscFailure,
            10 => DependencyFailed,
            11 => LogLimitExceeded,
            12 => NotDeterministic,
            13 => ResolvesToAlreadyValid,
            14 => NoSubstituters,
            other => Unknown(other),
        }
    }

    /// The outputs are valid on the far side.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            BuildStatus::Built
                | BuildStatus::Substituted
                | BuildStatus::AlreadyValid
                | BuildStatus::ResolvesToAlreadyValid
        )
    }
}

/// A derivation as the far side builds it: its input derivations already
/// replaced by their outputs (among the input sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicDerivation {
    pub outputs: BTreeMap<String, super::DerivationOutput>,
    pub input_srcs: BTreeSet<StorePath>,
    pub system: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl BasicDerivation {
    /// `input_outputs` are the store paths of the outputs it uses of its
    /// input derivations.
    pub fn new(drv: &Derivation, input_outputs: impl IntoIterator<Item = StorePath>) -> BasicDerivation {
        let mut input_srcs = drv.input_srcs.clone();
        input_srcs.extend(input_outputs);
        BasicDerivation {
            outputs: drv.outputs.clone(),
            input_srcs,
            system: drv.system.clone(),
            builder: drv.builder.clone(),
            args: drv.args.clone(),
            env: drv.env.clone(),
        }
    }
}

/// One connection to a `nix-store --serve --write`.
pub struct ServeConnection {
    output: Box<dyn ServeOutput>,
    input: BufWriter<Pin<Box<dyn AsyncWrite + Send>>>,
    /// Stdout received and not consumed yet: `buffer[pos..]`.
    buffer: Vec<u8>,
    pos: usize,
    stderr_tail: VecDeque<u8>,
    /// The protocol minor version both sides use.
    minor: u64,
    /// An operation failed or was cut off half-way: what comes next on the
    /// wire is unknown, so the connection must not be used again.
    poisoned: bool,
}

/// Where the far side's stderr goes while an operation runs.
pub type StderrSink<'a> = &'a mut (dyn FnMut(&[u8]) + Send);

fn ignore_stderr() -> impl FnMut(&[u8]) + Send {
    |_: &[u8]| {}
}

impl ServeConnection {
    /// Greets the far side and agrees on a version.
    pub async fn open(
        output: Box<dyn ServeOutput>,
        input: Pin<Box<dyn AsyncWrite + Send>>,
    ) -> Result<ServeConnection, ServeError> {
        let mut connection = ServeConnection {
            output,
            input: BufWriter::with_capacity(64 * 1024, input),
            buffer: Vec::new(),
            pos: 0,
            stderr_tail: VecDeque::new(),
            minor: 0,
            poisoned: false,
        };
        connection.handshake().await.map_err(|e| e.context("greeting"))?;
        Ok(connection)
    }

    async fn handshake(&mut self) -> Result<(), ServeError> {
        self.write_u64(CLIENT_MAGIC).await?;
        self.flush().await?;
        let sink = &mut ignore_stderr();
        let magic = self.read_u64(sink).await?;
        if magic != SERVER_MAGIC {
            return Err(ServeError::Protocol(format!(
                "the far side is not nix-store --serve (it answered {magic:#x}; is something printing on login?)"
            )));
        }
        let version = self.read_u64(sink).await?;
        if version >> 8 != 2 {
            return Err(ServeError::Protocol(format!("unknown serve protocol version {version:#x}")));
        }
        self.minor = (version & 0xff).min(CLIENT_VERSION & 0xff);
        self.write_u64(CLIENT_VERSION).await?;
        self.flush().await?;
        Ok(())
    }

    /// The protocol version in use, as `2.N`.
    pub fn version(&self) -> String {
        format!("2.{}", self.minor)
    }

    /// Dead, or left in an unknown state by an operation that failed or
    /// was dropped half-way: not to be used again.
    pub fn is_closed(&mut self) -> bool {
        self.poisoned || self.output.is_closed()
    }

    /// Marks the connection unusable until `operation` completes; an error
    /// (or the future being dropped) leaves it so.
    async fn guarded<T>(
        &mut self,
        operation: impl AsyncFnOnce(&mut Self) -> Result<T, ServeError>,
    ) -> Result<T, ServeError> {
        if self.poisoned {
            return Err(ServeError::Protocol("the connection was left in an unknown state".into()));
        }
        self.poisoned = true;
        let result = operation(self).await;
        self.poisoned = result.is_err();
        result
    }

    /// Which of `paths` are valid on the far side. They are also held
    /// against garbage collection there for as long as the connection lasts.
    pub async fn query_valid_paths(&mut self, paths: &[StorePath]) -> Result<HashSet<StorePath>, ServeError> {
        self.guarded(async |this| this.query_valid_paths_unguarded(paths).await).await
    }

    async fn query_valid_paths_unguarded(&mut self, paths: &[StorePath]) -> Result<HashSet<StorePath>, ServeError> {
        self.write_u64(QUERY_VALID_PATHS).await?;
        self.write_u64(1).await?; // lock: a temporary GC root until the build
        self.write_u64(0).await?; // substitute
        self.write_paths(paths).await?;
        self.flush().await?;
        let sink = &mut ignore_stderr();
        let valid = self.read_paths(sink).await.map_err(|e| e.context("querying valid paths"))?;
        Ok(valid.into_iter().collect())
    }

    /// What the far side knows of those of `paths` that are valid there;
    /// an answer about anything else is refused.
    pub async fn query_path_infos(&mut self, paths: &[StorePath]) -> Result<Vec<RemotePathInfo>, ServeError> {
        self.guarded(async |this| this.query_path_infos_unguarded(paths).await).await
    }

    async fn query_path_infos_unguarded(&mut self, paths: &[StorePath]) -> Result<Vec<RemotePathInfo>, ServeError> {
        self.write_u64(QUERY_PATH_INFOS).await?;
        self.write_paths(paths).await?;
        self.flush().await?;
        let sink = &mut ignore_stderr();
        let mut asked: HashSet<&StorePath> = paths.iter().collect();
        let mut infos = Vec::new();
        loop {
            let path = self.read_string(sink).await?;
            if path.is_empty() {
                break;
            }
            let path = parse_path(&path)?;
            if !asked.remove(&path) {
                return Err(ServeError::Protocol(format!(
                    "the far side answered about {path}, which was not asked for"
                )));
            }
            let deriver = self.read_string(sink).await?;
            let references = self.read_paths(sink).await?;
            let _download_size = self.read_u64(sink).await?;
            let nar_size = self.read_u64(sink).await?;
            let (nar_hash, ca, sigs) = if self.minor >= 4 {
                (self.read_string(sink).await?, self.read_string(sink).await?, self.read_strings(sink).await?)
            } else {
                Default::default()
            };
            infos.push(RemotePathInfo { path, deriver, references, nar_size, nar_hash, ca, sigs });
        }
        Ok(infos)
    }

    /// Builds a derivation whose inputs are all valid on the far side,
    /// passing its log to `log` as it comes.
    pub async fn build_derivation(
        &mut self,
        drv_path: &StorePath,
        drv: &BasicDerivation,
        options: BuildOptions,
        log: StderrSink<'_>,
    ) -> Result<BuildResult, ServeError> {
        self.guarded(async |this| this.build_derivation_unguarded(drv_path, drv, options, log).await).await
    }

    async fn build_derivation_unguarded(
        &mut self,
        drv_path: &StorePath,
        drv: &BasicDerivation,
        options: BuildOptions,
        log: StderrSink<'_>,
    ) -> Result<BuildResult, ServeError> {
        self.write_u64(BUILD_DERIVATION).await?;
        self.write_str(drv_path.as_str()).await?;
        self.write_u64(drv.outputs.len() as u64).await?;
        for (name, output) in &drv.outputs {
            self.write_str(name).await?;
            self.write_str(output.path.as_ref().map(StorePath::as_str).unwrap_or("")).await?;
            self.write_str(&output.hash_algo).await?;
            self.write_str(&output.hash).await?;
        }
        let inputs: Vec<StorePath> = drv.input_srcs.iter().cloned().collect();
        self.write_paths(&inputs).await?;
        self.write_str(&drv.system).await?;
        self.write_str(&drv.builder).await?;
        self.write_u64(drv.args.len() as u64).await?;
        for arg in &drv.args {
            self.write_str(arg).await?;
        }
        self.write_u64(drv.env.len() as u64).await?;
        for (name, value) in &drv.env {
            self.write_str(name).await?;
            self.write_str(value).await?;
        }
        self.write_u64(options.max_silent.as_secs()).await?;
        self.write_u64(options.timeout.as_secs()).await?;
        if self.minor >= 2 {
            self.write_u64(options.max_log_size).await?;
        }
        if self.minor >= 3 {
            self.write_u64(0).await?; // repeats
            self.write_u64(0).await?; // enforce determinism
        }
        if self.minor >= 7 {
            self.write_u64(0).await?; // keep failed
        }
        self.flush().await?;

        let status = BuildStatus::from_code(self.read_u64(log).await?);
        let error_msg = super::strip_ansi(&String::from_utf8_lossy(&self.read_bytes(log).await?));
        let mut result = BuildResult { status, error_msg, times_built: 0, start_time: 0, stop_time: 0 };
        if self.minor >= 3 {
            result.times_built = self.read_u64(log).await?;
            let _non_deterministic = self.read_u64(log).await?;
            result.start_time = self.read_u64(log).await?;
            result.stop_time = self.read_u64(log).await?;
        }
        if self.minor >= 6 {
            // Realisations, only meaningful for content-addressed derivations;
            // the outputs are known from the derivation.
            let count = self.read_count(log).await?;
            for _ in 0..count {
                self.read_bytes(log).await?;
                self.read_bytes(log).await?;
            }
        }
        Ok(result)
    }

    /// Builds a derivation that is in the far side's store, by its path:
    /// all that a user the Nix daemon does not trust may ask for (a whole
    /// derivation sent over needs trust). Only an exit status and a
    /// message come back, no times.
    pub async fn build_stored_derivation(
        &mut self,
        drv_path: &StorePath,
        options: BuildOptions,
        log: StderrSink<'_>,
    ) -> Result<BuildResult, ServeError> {
        self.guarded(async |this| this.build_stored_derivation_unguarded(drv_path, options, log).await).await
    }

    async fn build_stored_derivation_unguarded(
        &mut self,
        drv_path: &StorePath,
        options: BuildOptions,
        log: StderrSink<'_>,
    ) -> Result<BuildResult, ServeError> {
        self.write_u64(BUILD_PATHS).await?;
        self.write_u64(1).await?;
        self.write_str(drv_path.as_str()).await?;
        self.write_u64(options.max_silent.as_secs()).await?;
        self.write_u64(options.timeout.as_secs()).await?;
        if self.minor >= 2 {
            self.write_u64(options.max_log_size).await?;
        }
        if self.minor >= 3 {
            self.write_u64(0).await?; // repeats
            self.write_u64(0).await?; // enforce determinism
        }
        if self.minor >= 7 {
            self.write_u64(0).await?; // keep failed
        }
        self.flush().await?;
        let code = self.read_u64(log).await?;
        let mut result = BuildResult {
            status: BuildStatus::Built,
            error_msg: String::new(),
            times_built: 1,
            start_time: 0,
            stop_time: 0,
        };
        if code != 0 {
            result.error_msg = super::strip_ansi(&String::from_utf8_lossy(&self.read_bytes(log).await?));
            result.status = match status_of_exit_code(code) {
                BuildStatus::MiscFailure => status_of_message(&result.error_msg),
                status => status,
            };
            result.times_built = 0;
        }
        Ok(result)
    }

    /// Streams a NAR from `self` and writes it into `to`'s store. Either
    /// connection is unusable afterwards if this fails.
    pub async fn copy_path(&mut self, info: &RemotePathInfo, to: &mut ServeConnection) -> Result<(), ServeError> {
        if self.poisoned || to.poisoned {
            return Err(ServeError::Protocol("the connection was left in an unknown state".into()));
        }
        (self.poisoned, to.poisoned) = (true, true);
        let result = self.copy_path_unguarded(info, to).await;
        (self.poisoned, to.poisoned) = (result.is_err(), result.is_err());
        result
    }

    async fn copy_path_unguarded(&mut self, info: &RemotePathInfo, to: &mut ServeConnection) -> Result<(), ServeError> {
        if to.minor < 5 {
            return Err(ServeError::Protocol(format!(
                "the receiving Nix speaks serve protocol {}; 2.5 or newer is needed to add paths",
                to.version()
            )));
        }
        if info.nar_hash.is_empty() {
            return Err(ServeError::Protocol(format!(
                "the sending Nix speaks serve protocol {}; it gives no NAR hash for {}",
                self.version(),
                info.path
            )));
        }
        let registered =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        to.write_u64(ADD_TO_STORE_NAR).await?;
        to.write_str(info.path.as_str()).await?;
        to.write_str(&info.deriver).await?;
        to.write_str(&info.nar_hash).await?;
        to.write_paths(&info.references).await?;
        to.write_u64(registered).await?;
        to.write_u64(info.nar_size).await?;
        to.write_u64(0).await?; // ultimate: built here, not trusted as such there
        to.write_u64(info.sigs.len() as u64).await?;
        for sig in &info.sigs {
            to.write_str(sig).await?;
        }
        to.write_str(&info.ca).await?;

        self.write_u64(DUMP_STORE_PATH).await?;
        self.write_str(info.path.as_str()).await?;
        self.flush().await?;
        // The NAR has no length prefix: its size is what QueryPathInfos said.
        let mut left = info.nar_size as usize;
        let sink = &mut ignore_stderr();
        while left > 0 {
            if self.pos == self.buffer.len() {
                self.fill(sink).await.map_err(|e| e.context(&format!("sending {}", info.path)))?;
            }
            let n = left.min(self.buffer.len() - self.pos);
            to.input.write_all(&self.buffer[self.pos..self.pos + n]).await?;
            self.pos += n;
            left -= n;
        }
        to.flush().await?;
        let done = to.read_u64(sink).await.map_err(|e| e.context(&format!("storing {}", info.path)))?;
        if done != 1 {
            return Err(ServeError::Protocol(format!("storing {} ended with {done} instead of 1", info.path)));
        }
        Ok(())
    }

    /// After a failure: what the far side said on its way out.
    async fn last_words(&mut self) -> String {
        let sink = &mut ignore_stderr();
        let _ = tokio::time::timeout(LAST_WORDS, async {
            while self.fill(sink).await.is_ok() {
                self.pos = self.buffer.len();
            }
        })
        .await;
        self.stderr_text()
    }

    fn stderr_text(&self) -> String {
        let (a, b) = self.stderr_tail.as_slices();
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    // Writing.

    async fn write_u64(&mut self, n: u64) -> Result<(), ServeError> {
        self.input.write_all(&n.to_le_bytes()).await?;
        Ok(())
    }

    async fn write_str(&mut self, s: &str) -> Result<(), ServeError> {
        self.write_u64(s.len() as u64).await?;
        self.input.write_all(s.as_bytes()).await?;
        let padding = (8 - s.len() % 8) % 8;
        self.input.write_all(&[0u8; 8][..padding]).await?;
        Ok(())
    }

    async fn write_paths(&mut self, paths: &[StorePath]) -> Result<(), ServeError> {
        self.write_u64(paths.len() as u64).await?;
        for path in paths {
            self.write_str(path.as_str()).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ServeError> {
        match self.input.flush().await {
            Ok(()) => Ok(()),
            // Writing failed because the far side is gone: say what it said.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(ServeError::Closed(self.last_words().await)),
            Err(e) => Err(e.into()),
        }
    }

    // Reading.

    /// Waits for more stdout, passing stderr that comes first to `sink`.
    async fn fill(&mut self, sink: StderrSink<'_>) -> Result<(), ServeError> {
        loop {
            match poll_fn(|cx| self.output.poll_chunk(cx)).await? {
                Some(Chunk::Stdout(bytes)) => {
                    if self.pos == self.buffer.len() {
                        self.buffer.clear();
                        self.pos = 0;
                    }
                    self.buffer.extend_from_slice(&bytes);
                    return Ok(());
                }
                Some(Chunk::Stderr(bytes)) => {
                    self.stderr_tail.extend(bytes.iter().copied());
                    let excess = self.stderr_tail.len().saturating_sub(STDERR_TAIL);
                    self.stderr_tail.drain(..excess);
                    sink(&bytes);
                }
                None => return Err(ServeError::Closed(self.stderr_text())),
            }
        }
    }

    async fn read_exact(&mut self, n: usize, sink: StderrSink<'_>) -> Result<&[u8], ServeError> {
        while self.buffer.len() - self.pos < n {
            if self.pos > 0 {
                self.buffer.drain(..self.pos);
                self.pos = 0;
            }
            self.fill(sink).await?;
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buffer[start..start + n])
    }

    async fn read_u64(&mut self, sink: StderrSink<'_>) -> Result<u64, ServeError> {
        let bytes = self.read_exact(8, sink).await?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("eight bytes")))
    }

    async fn read_count(&mut self, sink: StderrSink<'_>) -> Result<u64, ServeError> {
        let count = self.read_u64(sink).await?;
        if count > MAX_ITEMS {
            return Err(ServeError::Protocol(format!("a list of {count} items is not believable")));
        }
        Ok(count)
    }

    async fn read_bytes(&mut self, sink: StderrSink<'_>) -> Result<Vec<u8>, ServeError> {
        let len = self.read_u64(sink).await?;
        if len > MAX_STRING {
            return Err(ServeError::Protocol(format!("a string of {len} bytes is not believable")));
        }
        let padded = (len as usize).div_ceil(8) * 8;
        let bytes = self.read_exact(padded, sink).await?;
        Ok(bytes[..len as usize].to_vec())
    }

    async fn read_string(&mut self, sink: StderrSink<'_>) -> Result<String, ServeError> {
        let bytes = self.read_bytes(sink).await?;
        String::from_utf8(bytes).map_err(|_| ServeError::Protocol("a string is not UTF-8".into()))
    }

    async fn read_strings(&mut self, sink: StderrSink<'_>) -> Result<Vec<String>, ServeError> {
        let count = self.read_count(sink).await?;
        let mut items = Vec::with_capacity(count.min(1024) as usize);
        for _ in 0..count {
            items.push(self.read_string(sink).await?);
        }
        Ok(items)
    }

    async fn read_paths(&mut self, sink: StderrSink<'_>) -> Result<Vec<StorePath>, ServeError> {
        self.read_strings(sink).await?.iter().map(|p| parse_path(p)).collect()
    }
}

fn parse_path(path: &str) -> Result<StorePath, ServeError> {
    StorePath::parse(path).map_err(|e| ServeError::Protocol(format!("the far side sent a bad store path: {e}")))
}

impl ServeError {
    fn context(self, what: &str) -> ServeError {
        match self {
            ServeError::Protocol(message) => ServeError::Protocol(format!("{what}: {message}")),
            other => other,
        }
    }
}

/// Sorts paths so that each comes after the paths it references (among
/// them): the order in which a store accepts them.
pub fn sort_by_references(infos: Vec<RemotePathInfo>) -> Vec<RemotePathInfo> {
    let names: HashSet<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
    let mut by_path: BTreeMap<StorePath, RemotePathInfo> = infos.into_iter().map(|i| (i.path.clone(), i)).collect();
    let mut sorted = Vec::with_capacity(by_path.len());
    let mut visiting = HashSet::new();
    fn visit(
        path: &StorePath,
        by_path: &mut BTreeMap<StorePath, RemotePathInfo>,
        names: &HashSet<StorePath>,
        visiting: &mut HashSet<StorePath>,
        sorted: &mut Vec<RemotePathInfo>,
    ) {
        if !visiting.insert(path.clone()) {
            return;
        }
        let Some(info) = by_path.remove(path) else { return };
        for reference in &info.references {
            if reference != path && names.contains(reference) {
                visit(reference, by_path, names, visiting, sorted);
            }
        }
        sorted.push(info);
    }
    let paths: Vec<StorePath> = by_path.keys().cloned().collect();
    for path in paths {
        visit(&path, &mut by_path, &names, &mut visiting, &mut sorted);
    }
    sorted
}

/// A `nix-store --serve` child process as a [`ServeOutput`]. Stderr is read
/// first, and drained once more whenever stdout brings something, so that
/// every log line written before a reply is passed on before the reply.
pub(super) struct ProcessOutput {
    child: tokio::process::Child,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::io::unix::AsyncFd<std::fs::File>>,
    pending: VecDeque<Chunk>,
    /// Once stdout is closed: how long stderr may still take to close. Nix
    /// may print its last words after closing stdout; a grandchild holding
    /// stderr open must not hold the reader forever.
    stderr_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long a closed far side's stderr is awaited for its last words.
const CLOSING_STDERR: Duration = Duration::from_secs(2);

impl ProcessOutput {
    pub(super) fn new(
        child: tokio::process::Child,
        stdout: tokio::process::ChildStdout,
        stderr: tokio::process::ChildStderr,
    ) -> io::Result<ProcessOutput> {
        // Tokio made the pipe non-blocking; reading it directly (not only when
        // the reactor says it is readable) is what makes the drain reliable.
        // Taking the descriptor out of tokio makes it blocking again, which
        // would make the drain wait for the child's exit.
        let stderr = std::fs::File::from(stderr.into_owned_fd()?);
        set_nonblocking(&stderr)?;
        // SAFETY: the file is owned by the AsyncFd and stays open as long as
        // it is registered.
        let stderr = unsafe { tokio::io::unix::AsyncFd::register(stderr)? };
        Ok(ProcessOutput {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
            pending: VecDeque::new(),
            stderr_deadline: None,
        })
    }

    /// Reads whatever stderr holds right now, without waiting.
    fn drain_stderr(&mut self) {
        use std::io::Read;
        let Some(stderr) = &self.stderr else { return };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stderr.get_ref().read(&mut buf) {
                Ok(0) => {
                    self.stderr = None;
                    return;
                }
                Ok(n) => self.pending.push_back(Chunk::Stderr(buf[..n].to_vec())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

fn set_nonblocking(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: plain fcntl calls on a descriptor this function borrows.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl ServeOutput for ProcessOutput {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Chunk>>> {
        use std::io::Read;
        use tokio::io::{AsyncRead, ReadBuf};
        if let Some(chunk) = self.pending.pop_front() {
            return Poll::Ready(Ok(Some(chunk)));
        }
        let mut buf = vec![0u8; 64 * 1024];
        if let Some(stderr) = &self.stderr {
            while let Poll::Ready(guard) = stderr.poll_read_ready(cx) {
                let mut guard = guard?;
                match guard.try_io(|fd| fd.get_ref().read(&mut buf)) {
                    Ok(Ok(0)) => {
                        self.stderr = None;
                        break;
                    }
                    Ok(Ok(n)) => return Poll::Ready(Ok(Some(Chunk::Stderr(buf[..n].to_vec())))),
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Ok(Err(e)) => return Poll::Ready(Err(e)),
                    Err(_would_block) => continue,
                }
            }
        }
        if let Some(stdout) = &mut self.stdout {
            let mut read_buf = ReadBuf::new(&mut buf);
            match Pin::new(stdout).poll_read(cx, &mut read_buf) {
                Poll::Ready(Ok(())) => {
                    let data = read_buf.filled().to_vec();
                    self.drain_stderr();
                    if data.is_empty() {
                        self.stdout = None;
                    } else {
                        self.pending.push_back(Chunk::Stdout(data));
                    }
                    if let Some(chunk) = self.pending.pop_front() {
                        return Poll::Ready(Ok(Some(chunk)));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.stdout.is_none() {
            if self.stderr.is_some() {
                // Woken by stderr (above) or by the deadline.
                let deadline = self.stderr_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSING_STDERR)));
                if deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            // The far side is gone; what it said on stderr has been passed on.
            return Poll::Ready(Ok(None));
        }
        Poll::Pending
    }

    fn is_closed(&mut self) -> bool {
        self.stdout.is_none() || !matches!(self.child.try_wait(), Ok(None))
    }
}

#[cfg(test)]
mod tests {
    //! Against the real `nix-store --serve --write` of the Nix on PATH.

    use super::*;
    use crate::config::NixConfig;
    use crate::nix::Nix;

    fn nix() -> Nix {
        let mut config = NixConfig::default();
        for (name, value) in [("build-users-group", ""), ("sandbox", "false"), ("substituters", "")] {
            config.settings.insert(name.into(), value.into());
        }
        Nix::new(&config)
    }

    /// Instantiates `derivation { … }` with a fresh name, so that it is not built yet.
    fn instantiate(script: &str, extra: &str) -> StorePath {
        let nonce =
            format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        let expr = format!(
            r#"let dep = derivation {{ name = "serve-dep-{nonce}"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo dependency > $out"]; }};
               in derivation {{ name = "serve-test-{nonce}"; system = builtins.currentSystem; builder = "/bin/sh"; inherit dep; args = ["-c" {script:?}]; {extra} }}"#
        );
        let out = std::process::Command::new("nix-instantiate")
            .args(["--option", "build-users-group", "", "--expr", &expr])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        StorePath::parse(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
    }

    async fn resolve(nix: &Nix, drv_path: &StorePath) -> (Derivation, BasicDerivation) {
        let drv = nix.read_derivation(drv_path).await.unwrap();
        let mut inputs = Vec::new();
        for (input, outputs) in &drv.input_drvs {
            let input_drv = nix.read_derivation(input).await.unwrap();
            inputs.extend(outputs.iter().filter_map(|o| input_drv.outputs[o].path.clone()));
        }
        let basic = BasicDerivation::new(&drv, inputs);
        (drv, basic)
    }

    fn options(timeout: u64) -> BuildOptions {
        BuildOptions {
            max_silent: Duration::from_secs(timeout),
            timeout: Duration::from_secs(timeout),
            max_log_size: 1 << 20,
        }
    }

    /// Builds the dependency of `drv_path` (the far side needs its inputs valid).
    async fn build_dependency(nix: &Nix, connection: &mut ServeConnection, drv_path: &StorePath) {
        let drv = nix.read_derivation(drv_path).await.unwrap();
        let dep = drv.input_drvs.keys().next().unwrap().clone();
        let (_, basic_dep) = resolve(nix, &dep).await;
        let result = connection.build_derivation(&dep, &basic_dep, options(60), &mut |_| {}).await.unwrap();
        assert!(result.status.is_success(), "{result:?}");
    }

    #[tokio::test]
    async fn builds_streaming_the_log_and_reports_failures() {
        let nix = nix();
        let mut connection = nix.serve_local().await.unwrap();
        assert_eq!(connection.version(), "2.7");

        let drv_path = instantiate("echo hello from the builder; echo second line >&2; /bin/cat $dep > $out", "");
        build_dependency(&nix, &mut connection, &drv_path).await;
        let (drv, basic) = resolve(&nix, &drv_path).await;
        let mut log = Vec::new();
        let result = connection
            .build_derivation(&drv_path, &basic, options(60), &mut |b| log.extend_from_slice(b))
            .await
            .unwrap();
        assert_eq!(result.status, BuildStatus::Built, "{result:?}");
        let log = String::from_utf8(log).unwrap();
        assert!(log.contains("hello from the builder\n") && log.contains("second line\n"), "{log:?}");
        let out = drv.outputs["out"].path.clone().unwrap();
        assert!(connection.query_valid_paths(std::slice::from_ref(&out)).await.unwrap().contains(&out));

        // The same connection goes on: a failing builder, then a timeout.
        let failing = instantiate("echo about to fail; exit 3", "");
        build_dependency(&nix, &mut connection, &failing).await;
        let (_, basic) = resolve(&nix, &failing).await;
        let mut log = Vec::new();
        let result = connection
            .build_derivation(&failing, &basic, options(60), &mut |b| log.extend_from_slice(b))
            .await
            .unwrap();
        assert_eq!(result.status, BuildStatus::PermanentFailure);
        assert!(result.error_msg.contains("exit code 3"), "{}", result.error_msg);
        assert!(String::from_utf8_lossy(&log).contains("about to fail"));

        let slow = instantiate("/bin/sleep 30", "");
        build_dependency(&nix, &mut connection, &slow).await;
        let (_, basic) = resolve(&nix, &slow).await;
        let result = connection.build_derivation(&slow, &basic, options(1), &mut |_| {}).await.unwrap();
        assert_eq!(result.status, BuildStatus::TimedOut, "{result:?}");
        assert!(!connection.is_closed());

        // A build cut off half-way leaves the connection unusable.
        let mut ignore = |_: &[u8]| {};
        let building = connection.build_derivation(&slow, &basic, options(60), &mut ignore);
        assert!(tokio::time::timeout(Duration::from_millis(300), building).await.is_err());
        assert!(connection.is_closed(), "a connection cut off mid-build must not be reused");
        assert!(connection.query_valid_paths(&[]).await.is_err());
    }

    #[tokio::test]
    async fn builds_a_derivation_of_the_store_by_its_path_as_an_untrusted_user_may() {
        let nix = nix();
        let mut connection = nix.serve_local().await.unwrap();
        // Its dependency is built along with it, by the far side's store.
        let drv_path = instantiate("echo stored derivation built; /bin/cat $dep > $out", "");
        let mut log = Vec::new();
        let result = connection
            .build_stored_derivation(&drv_path, options(60), &mut |b| log.extend_from_slice(b))
            .await
            .unwrap();
        assert_eq!(result.status, BuildStatus::Built, "{result:?}");
        assert!(String::from_utf8_lossy(&log).contains("stored derivation built"), "{}", String::from_utf8_lossy(&log));
        let out = nix.read_derivation(&drv_path).await.unwrap().outputs["out"].path.clone().unwrap();
        assert!(connection.query_valid_paths(std::slice::from_ref(&out)).await.unwrap().contains(&out));

        let failing = instantiate("echo about to fail; exit 3", "");
        let result = connection.build_stored_derivation(&failing, options(60), &mut |_| {}).await.unwrap();
        assert_eq!(result.status, BuildStatus::PermanentFailure, "{result:?}");
        assert!(result.error_msg.contains("failed"), "{}", result.error_msg);
        let slow = instantiate("/bin/sleep 30", "");
        let result = connection.build_stored_derivation(&slow, options(1), &mut |_| {}).await.unwrap();
        assert_eq!(result.status, BuildStatus::TimedOut, "{result:?}");
        assert!(!connection.is_closed());
    }

    #[test]
    fn exit_codes_of_builds_say_how_they_failed() {
        assert_eq!(status_of_exit_code(100), BuildStatus::PermanentFailure);
        assert_eq!(status_of_exit_code(101), BuildStatus::TimedOut);
        assert_eq!(status_of_exit_code(102), BuildStatus::PermanentFailure);
        assert_eq!(status_of_exit_code(104), BuildStatus::NotDeterministic);
        assert_eq!(status_of_exit_code(1), BuildStatus::MiscFailure);
        // Through a daemon, the message says it.
        let failed = "error: builder for '/nix/store/x-broken.drv' failed with exit code 3;\n last 1 log lines:";
        assert_eq!(status_of_message(failed), BuildStatus::PermanentFailure);
        let newer = "error: Cannot build '/nix/store/x-broken.drv'.\n Reason: builder failed with exit code 3.";
        assert_eq!(status_of_message(newer), BuildStatus::PermanentFailure);
        assert_eq!(
            status_of_message("error: building of '/nix/store/x.drv' timed out after 1 seconds"),
            BuildStatus::TimedOut
        );
        assert_eq!(status_of_message("error: cannot connect to socket"), BuildStatus::MiscFailure);
        // What the builder printed does not count.
        let lying = "error: builder for '/nix/store/x.drv' failed with exit code 1;\n       last 2 log lines:\n       > timed out after 5 seconds\n       > may not be deterministic";
        assert_eq!(status_of_message(lying), BuildStatus::PermanentFailure);
    }

    #[tokio::test]
    async fn copies_a_closure_to_another_store_in_reference_order() {
        let nix = nix();
        let mut local = nix.serve_local().await.unwrap();
        let drv_path = instantiate("echo $dep > $out", "");
        build_dependency(&nix, &mut local, &drv_path).await;
        let (drv, basic) = resolve(&nix, &drv_path).await;
        assert!(local.build_derivation(&drv_path, &basic, options(60), &mut |_| {}).await.unwrap().status.is_success());
        let out = drv.outputs["out"].path.clone().unwrap();

        let infos = local.query_path_infos(std::slice::from_ref(&out)).await.unwrap();
        assert_eq!(infos.len(), 1);
        assert!(infos[0].nar_hash.starts_with("sha256:") && infos[0].nar_size > 0);
        let dep_out =
            infos[0].references.iter().find(|r| **r != out).expect("the output references its dependency").clone();
        let mut closure = local.query_path_infos(&[dep_out.clone(), out.clone()]).await.unwrap();
        closure.reverse();
        let sorted = sort_by_references(closure);
        assert_eq!(sorted.iter().map(|i| &i.path).collect::<Vec<_>>(), [&dep_out, &out]);

        let other = tempfile::tempdir().unwrap();
        let mut remote = nix.serve_store(Some(other.path().to_str().unwrap())).await.unwrap();
        assert!(remote.query_valid_paths(std::slice::from_ref(&out)).await.unwrap().is_empty());
        for info in &sorted {
            local.copy_path(info, &mut remote).await.unwrap();
        }
        let valid = remote.query_valid_paths(&[out.clone(), dep_out.clone()]).await.unwrap();
        assert_eq!(valid.len(), 2);
        let copied = remote.query_path_infos(std::slice::from_ref(&out)).await.unwrap();
        assert_eq!((copied[0].nar_hash.as_str(), copied[0].nar_size), (infos[0].nar_hash.as_str(), infos[0].nar_size));

        // A wrong hash is refused by the receiving store, and said so.
        let fake = RemotePathInfo {
            nar_hash: "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s".into(),
            ..infos[0].clone()
        };
        let other = tempfile::tempdir().unwrap();
        let mut remote = nix.serve_store(Some(other.path().to_str().unwrap())).await.unwrap();
        let only_out = RemotePathInfo { references: vec![out.clone()], ..fake };
        let err = local.copy_path(&only_out, &mut remote).await.unwrap_err().to_string();
        assert!(err.contains("hash mismatch") || err.contains("stopped"), "{err}");
    }

    #[tokio::test]
    async fn a_closed_far_side_says_why() {
        let nix = nix();
        let mut connection = nix.serve_local().await.unwrap();
        connection.write_u64(42).await.unwrap();
        connection.flush().await.unwrap();
        let err = connection.read_u64(&mut |_| {}).await.unwrap_err();
        assert!(err.to_string().contains("unknown serve command"), "{err}");
        assert!(connection.is_closed() || matches!(err, ServeError::Closed(_)));
    }
}
