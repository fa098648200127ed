//! Programs run for plugins, in a box.
//!
//! A plugin granted `git` chooses git's arguments: `-c core.sshCommand=…`,
//! `--upload-pack=…`, a `.gitconfig` with `core.fsmonitor`, `svn
//! --config-option config:tunnels:…`, `tar --to-command`, `curl file:///…`
//! each run code or read files of the server's choosing. So what the
//! arguments may do is bounded by where the program runs, not by the
//! arguments: every program runs in a bubblewrap box (Debian's `bwrap`) that
//! sees
//!
//! - the system's programs and libraries (`/usr`, `/bin`, `/lib*`, the
//!   directories of PATH) and the Nix store, read-only;
//! - the few files of `/etc` that name resolution, TLS and the alternatives
//!   need, and a `passwd` of its own (ssh wants one) — no other `/etc`, so
//!   no system configuration of git, svn or ssh;
//! - the directories of `evaluator.allowed_path_roots`, read-only (local
//!   repositories live there), minus the data directory, the configuration
//!   file and every file of secrets it names;
//! - the plugin's scratch directory at `/scratch`, read-write, and an empty
//!   `/tmp` and home directory, thrown away after the run;
//! - the credentials its grant names, read-only at fixed places;
//! - the network only if its grant says `network = true`.
//!
//! It has its own user, PID, IPC, UTS and cgroup namespaces, no
//! capabilities, a new session (no terminal to inject into), and dies with
//! the server. Where no such box can be made (no `bwrap`, or a kernel that
//! refuses namespaces), programs are refused — fail closed — and the reason
//! is what `orthrus plugin list` shows.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;

/// Where the box mounts a grant's credentials.
const SSH_KEY: &str = "/run/orthrus/ssh/key";
const KNOWN_HOSTS: &str = "/run/orthrus/ssh/known_hosts";
const GIT_CREDENTIALS: &str = "/run/orthrus/git-credentials";
/// The program's home in the box: empty, and gone after the run.
const HOME: &str = "/home/plugin";
/// Files of `/etc` that programs need and that hold no secrets: name
/// resolution, the certificate stores (not `/etc/ssl/private`), the
/// alternatives' links.
const ETC_FILES: [&str; 16] = [
    "resolv.conf",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "gai.conf",
    "services",
    "protocols",
    "localtime",
    "ssl/certs",
    "ca-certificates",
    "ca-certificates.conf",
    "pki/tls/certs",
    "pki/ca-trust/extracted",
    "alternatives",
    // NixOS: what `/etc/ssl/certs` and the like link to (store paths).
    "static",
    "ssl/cert.pem",
];
/// Room in the box's `/tmp` and home, in bytes.
const TMPFS_SIZE: &str = "268435456";

/// What the box is made of; from the configuration.
#[derive(Debug, Clone, Default)]
pub struct SandboxSettings {
    /// The bubblewrap program: a name looked up on `path`, or a path.
    pub bwrap: String,
    /// Where programs are looked up (the server's PATH).
    pub path: String,
    /// Directories programs may read (local repositories).
    pub readable_roots: Vec<PathBuf>,
    /// Never visible, even under a readable root.
    pub private: Vec<PathBuf>,
    /// A directory of the server's where the box's `/etc/passwd` is kept.
    pub runtime_dir: PathBuf,
}

/// Credentials a grant gives the programs of one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub ssh_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub git_credentials: Option<PathBuf>,
}

/// One program to run in the box.
#[derive(Debug)]
pub struct Run<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    /// The plugin's scratch directory (on the host).
    pub scratch: &'a Path,
    /// Where in the scratch directory the program starts.
    pub workdir: &'a Path,
    pub network: bool,
    pub credentials: &'a Credentials,
}

/// The box every granted program runs in, or why there is none.
#[derive(Debug, Clone)]
pub struct Sandbox {
    plan: Arc<Result<Plan, String>>,
}

impl Sandbox {
    /// Makes the box and tries it once; a box that cannot be made is kept
    /// with the reason, and refuses every program.
    pub async fn new(settings: &SandboxSettings) -> Sandbox {
        let plan = match Plan::new(settings, true) {
            Ok(plan) => match plan.probe().await {
                Ok(()) => Ok(plan),
                // Without user namespaces the box is still made, as root.
                Err(strict) => match Plan::new(settings, false) {
                    Ok(plan) => plan.probe().await.map(|()| plan).map_err(|_| strict),
                    Err(reason) => Err(reason),
                },
            },
            Err(reason) => Err(reason),
        };
        if let Err(reason) = &plan {
            tracing::warn!("plugins may run no programs: {reason}");
        }
        Sandbox { plan: Arc::new(plan) }
    }

    /// A box that refuses every program, saying `reason`.
    pub fn refusing(reason: impl Into<String>) -> Sandbox {
        Sandbox { plan: Arc::new(Err(reason.into())) }
    }

    /// Why programs are refused, if they are.
    pub fn unavailable(&self) -> Option<&str> {
        self.plan.as_ref().as_ref().err().map(String::as_str)
    }

    /// The command that runs `run` in the box (its environment set, its
    /// streams not yet).
    pub fn command(&self, run: &Run) -> Result<Command, String> {
        let plan = self.plan.as_ref().as_ref().map_err(|reason| format!("programs are refused: {reason}"))?;
        plan.command(run)
    }
}

mod plan;

use plan::Plan;
#[cfg(test)]
mod tests;
