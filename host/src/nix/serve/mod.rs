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
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use super::StorePath;
use super::derivation::Derivation;

mod process;
mod status;
mod wire;
pub(in crate::nix) use process::ProcessOutput;
pub use status::BuildResultStatus;
use status::{status_of_exit_code, status_of_message};
use wire::parse_path;

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
    pub status: BuildResultStatus,
    pub error_msg: String,
    pub times_built: u64,
    pub start_time: u64,
    pub stop_time: u64,
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
        self.guarded(async |this| this.query_valid_paths_unguarded(paths, true, &mut ignore_stderr()).await).await
    }

    /// Which of `paths` are valid on the far side now, holding none: for a
    /// connection kept open for many questions, whose temporary roots
    /// would otherwise pile up for as long as it lasts.
    pub async fn valid_paths_now(&mut self, paths: &[StorePath]) -> Result<HashSet<StorePath>, ServeError> {
        self.guarded(async |this| this.query_valid_paths_unguarded(paths, false, &mut ignore_stderr()).await).await
    }

    /// Waits until everything the far side wrote on stderr before its last
    /// reply has been passed to `log`. Over SSH the far side's stdout and
    /// stderr are two pipes that sshd forwards in whatever order it reads
    /// them (OpenSSH sends stdout first when both are ready), so a build's
    /// last log lines may arrive just after its result. They were written
    /// before the result, so they are read by sshd no later than the
    /// result is; a question asked after the result has come back is
    /// answered after them. The question is the cheapest there is: which
    /// of no paths are valid.
    pub async fn collect_stderr(&mut self, log: StderrSink<'_>) -> Result<(), ServeError> {
        self.guarded(async |this| this.query_valid_paths_unguarded(&[], false, log).await.map(drop)).await
    }

    async fn query_valid_paths_unguarded(
        &mut self,
        paths: &[StorePath],
        hold: bool,
        stderr: StderrSink<'_>,
    ) -> Result<HashSet<StorePath>, ServeError> {
        self.write_u64(QUERY_VALID_PATHS).await?;
        self.write_u64(u64::from(hold)).await?; // lock: a temporary GC root until the build
        self.write_u64(0).await?; // substitute
        self.write_paths(paths).await?;
        self.flush().await?;
        let valid = self.read_paths(stderr).await.map_err(|e| e.context("querying valid paths"))?;
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
        self.write_build_options(&options).await?;
        self.flush().await?;

        let status = BuildResultStatus::from_code(self.read_u64(log).await?);
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
        self.write_build_options(&options).await?;
        self.flush().await?;
        let code = self.read_u64(log).await?;
        let mut result = BuildResult {
            status: BuildResultStatus::Built,
            error_msg: String::new(),
            times_built: 1,
            start_time: 0,
            stop_time: 0,
        };
        if code != 0 {
            result.error_msg = super::strip_ansi(&String::from_utf8_lossy(&self.read_bytes(log).await?));
            result.status = match status_of_exit_code(code) {
                BuildResultStatus::MiscFailure => status_of_message(&result.error_msg),
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

    /// The options both build commands send after what they build, as far
    /// as the agreed version knows them.
    async fn write_build_options(&mut self, options: &BuildOptions) -> Result<(), ServeError> {
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

#[cfg(test)]
mod tests;
