//! The local Nix, checked before the server builds anything: its version,
//! how its store is reached (directly, or through a daemon, trusted or
//! not), whether the build users it is set to use exist, whether its
//! sandbox has a `/bin/sh` — and what Orthrus does about each: settings
//! for its own calls, a way of building that needs no trust, or no
//! building at all, with one sentence saying what to install or set.
//! `orthrus serve` logs the outcome once; `orthrus doctor` prints it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Nix;
use super::account::{Account, group_members};

/// The oldest Nix Orthrus is tested with (Debian 12's `nix-bin`).
pub const MIN_VERSION: (u32, u32) = (2, 8);

/// The settings `doctor` shows, as Nix reads them for Orthrus's calls.
const SHOWN_SETTINGS: &[&str] = &[
    "store",
    "system",
    "extra-platforms",
    "max-jobs",
    "build-users-group",
    "trusted-users",
    "sandbox",
    "sandbox-paths",
    "extra-sandbox-paths",
    "substituters",
    "require-sigs",
];

/// How Orthrus's Nix calls reach the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreAccess {
    /// The store's database is written by Orthrus's own Nix processes.
    Direct,
    /// Through the daemon listening at this socket.
    Daemon { socket: PathBuf, trusted: bool },
    /// Another store URI (`ssh-ng://`, …) set as `store`.
    Other(String),
}

/// How the local machine builds a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalBuilds {
    /// The serve protocol's build of a derivation sent whole, as on remote
    /// machines (needs a trusted user under a daemon).
    Derivations,
    /// The serve protocol's build of the `.drv` already in the store: all a
    /// user the daemon does not trust may ask for.
    StorePaths,
}

/// The local Nix, fit to build.
#[derive(Debug, Clone)]
pub struct LocalNix {
    /// As `nix-store --version` says it.
    pub version: String,
    pub account: Account,
    pub store: StoreAccess,
    /// Nix's settings for Orthrus's calls (the operator's `nix.settings`
    /// included), before the adjustments.
    pub settings: BTreeMap<String, String>,
    /// Settings Orthrus adds to its own calls so that builds can run.
    pub adjustments: Vec<(String, String)>,
    pub local_builds: LocalBuilds,
    /// What the adjustments and the build mode give up, said once.
    pub notes: Vec<String>,
}

/// Why the local Nix cannot build: one sentence saying what to install or
/// set (shown to anyone), and what failed (for the log and `doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixUnavailable {
    pub sentence: String,
    pub detail: Option<String>,
}

impl NixUnavailable {
    fn new(sentence: impl Into<String>) -> NixUnavailable {
        NixUnavailable { sentence: sentence.into(), detail: None }
    }

    fn because(mut self, detail: impl std::fmt::Display) -> NixUnavailable {
        self.detail = Some(detail.to_string());
        self
    }
}

impl std::fmt::Display for NixUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{} ({detail})", self.sentence),
            None => f.write_str(&self.sentence),
        }
    }
}

impl std::error::Error for NixUnavailable {}

/// Checks the local Nix.
pub async fn check(nix: &Nix) -> Result<LocalNix, NixUnavailable> {
    let version = nix.version().await.map_err(|e| {
        NixUnavailable::new(
            "Nix is not installed or cannot run: install it (on Debian: apt install nix-bin) \
             or set nix.bin_dir to the directory holding nix-store",
        )
        .because(e)
    })?;
    match parse_version(&version) {
        Some(found) if found >= MIN_VERSION => {}
        Some(_) => {
            return Err(NixUnavailable::new(format!(
                "{version} is too old: Orthrus needs Nix {}.{} or later (set nix.bin_dir to a newer one)",
                MIN_VERSION.0, MIN_VERSION.1
            )));
        }
        None => return Err(NixUnavailable::new(format!("cannot tell the version of Nix from ‘{version}’"))),
    }
    let settings = nix.settings_in_effect().await.map_err(|e| {
        NixUnavailable::new("cannot read Nix's settings: check /etc/nix/nix.conf and nix.settings").because(e)
    })?;
    let account = Account::current();
    let store = store_access(nix, &settings, &account).await?;
    let mut local = LocalNix {
        version,
        account,
        store,
        settings,
        adjustments: Vec::new(),
        local_builds: LocalBuilds::Derivations,
        notes: Vec::new(),
    };
    match local.store.clone() {
        StoreAccess::Direct => {
            if local.account.is_root() {
                local.adjust_build_users();
            }
            local.adjust_sandbox_shell();
        }
        StoreAccess::Daemon { trusted: false, .. } => {
            local.local_builds = LocalBuilds::StorePaths;
            local.notes.push(format!(
                "the Nix daemon does not trust user ‘{}’ (trusted-users): the local machine builds each \
                 derivation already in the store, with the daemon's own limits; remote machines need a \
                 trusted user to copy their outputs back (add it to trusted-users, as for Hydra)",
                local.account.name
            ));
        }
        StoreAccess::Daemon { trusted: true, .. } | StoreAccess::Other(_) => {}
    }
    Ok(local)
}

impl LocalNix {
    /// Root building without a daemon needs the build users group to
    /// exist and have members; without it Nix aborts every build, so
    /// Orthrus builds as root (still in Nix's sandbox when it is on).
    fn adjust_build_users(&mut self) {
        let group = self.setting("build-users-group").to_owned();
        if group.is_empty() {
            return;
        }
        let why = match group_members(&group) {
            Ok(None) => format!("the group ‘{group}’ (build-users-group) does not exist"),
            Ok(Some(members)) if members.is_empty() => {
                format!("the group ‘{group}’ (build-users-group) has no members")
            }
            Ok(Some(_)) => return,
            // Unknown is not missing: nothing is changed, and it is said.
            Err(e) => {
                self.notes.push(format!(
                    "cannot look up the group ‘{group}’ (build-users-group): {e}; Nix's settings are left as they are"
                ));
                return;
            }
        };
        self.adjustments.push(("build-users-group".into(), String::new()));
        self.notes.push(format!(
            "{why} and no Nix daemon runs: Orthrus builds as root with build-users-group = \"\" for its own \
             calls; create the group and its users (or run a daemon) to build as them"
        ));
    }

    /// Nix's sandbox has a `/bin/sh` only where Nix was built with a shell
    /// for it (NixOS, the official installer); Debian's has none, and
    /// every builder run by `/bin/sh` — the demo's — would not start. The
    /// host's shell and the libraries it loads are bound in, read-only.
    fn adjust_sandbox_shell(&mut self) {
        if !matches!(self.setting("sandbox"), "true" | "relaxed") {
            return;
        }
        let has_shell = [self.setting("sandbox-paths"), self.setting("extra-sandbox-paths")]
            .iter()
            .flat_map(|paths| paths.split_whitespace())
            .any(|entry| entry.split('=').next().map(|p| p.trim_end_matches('?')) == Some("/bin/sh"));
        if has_shell {
            return;
        }
        match shell_with_libraries(Path::new("/bin/sh")) {
            Ok(binds) => {
                let entries: Vec<String> = binds
                    .iter()
                    .map(|(inside, host)| {
                        if inside == host {
                            inside.display().to_string()
                        } else {
                            format!("{}={}", inside.display(), host.display())
                        }
                    })
                    .collect();
                self.notes.push(format!(
                    "Nix's sandbox has no /bin/sh: Orthrus binds {} into it for its own builds \
                     (extra-sandbox-paths)",
                    entries.join(" ")
                ));
                self.adjustments.push(("extra-sandbox-paths".into(), entries.join(" ")));
            }
            Err(e) => self.notes.push(format!(
                "Nix's sandbox has no /bin/sh and the host's cannot be bound in ({e}): builders run by /bin/sh \
                 will not start; set sandbox-paths = /bin/sh=<a static shell>"
            )),
        }
    }

    pub fn setting(&self, name: &str) -> &str {
        self.settings.get(name).map(String::as_str).unwrap_or("")
    }

    /// What `doctor` prints: the checks, then the settings in effect.
    pub fn report(&self) -> Vec<(String, String)> {
        let mut lines = vec![
            ("Nix".into(), self.version.clone()),
            ("user".into(), format!("{} (uid {})", self.account.name, self.account.uid)),
            (
                "store".into(),
                match &self.store {
                    StoreAccess::Direct => "written directly by Orthrus's Nix calls (no daemon)".into(),
                    StoreAccess::Daemon { socket, trusted } => format!(
                        "through the daemon at {} ({})",
                        socket.display(),
                        if *trusted { "a trusted user" } else { "not a trusted user" }
                    ),
                    StoreAccess::Other(uri) => format!("the store {uri}"),
                },
            ),
            (
                "local builds".into(),
                match self.local_builds {
                    LocalBuilds::Derivations => "derivations sent whole over the serve protocol".into(),
                    LocalBuilds::StorePaths => "derivations in the store, built by the daemon".into(),
                },
            ),
        ];
        for (name, value) in &self.adjustments {
            lines.push(("adjusted".into(), format!("{name} = {value:?}")));
        }
        for note in &self.notes {
            lines.push(("note".into(), note.clone()));
        }
        for name in SHOWN_SETTINGS {
            if let Some(value) = self.settings.get(*name) {
                lines.push((format!("setting {name}"), value.clone()));
            }
        }
        lines
    }
}

/// `nix-store (Nix) 2.8.0` → (2, 8).
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let version = text.split_whitespace().last()?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts.next()?.chars().take_while(char::is_ascii_digit).collect();
    Some((major, minor.parse().ok()?))
}

/// How the store is reached, as Nix's `auto` store decides it: a state
/// directory this user can write means direct access, else the daemon.
async fn store_access(
    nix: &Nix,
    settings: &BTreeMap<String, String>,
    account: &Account,
) -> Result<StoreAccess, NixUnavailable> {
    let uri = std::env::var("NIX_REMOTE")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| settings.get("store").cloned())
        .unwrap_or_else(|| "auto".into());
    let state_dir = std::env::var_os("NIX_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| "/nix/var/nix".into());
    let socket = std::env::var_os("NIX_DAEMON_SOCKET_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir.join("daemon-socket/socket"));
    let daemon = match uri.as_str() {
        "auto" => !writable(&state_dir) && socket.exists(),
        "daemon" => true,
        other if other.starts_with("unix://") => true,
        "local" => false,
        other if other.starts_with("local?") || other.starts_with('/') => false,
        other => return Ok(StoreAccess::Other(other.to_owned())),
    };
    if !daemon {
        if !writable(&state_dir) {
            return Err(NixUnavailable::new(format!(
                "user ‘{}’ cannot write the Nix store's state ({}) and no Nix daemon listens at {}: start the \
                 daemon (systemctl start nix-daemon) or run Orthrus as the store's owner",
                account.name,
                state_dir.display(),
                socket.display()
            )));
        }
        return Ok(StoreAccess::Direct);
    }
    if let Err(e) = tokio::net::UnixStream::connect(&socket).await {
        return Err(NixUnavailable::new(format!(
            "the Nix daemon does not answer at {}: start it (systemctl start nix-daemon)",
            socket.display()
        ))
        .because(e));
    }
    // The daemon says whether it serves and trusts this user where it can
    // (allowed-users, trusted-users); older ones only whether it serves.
    let said = nix.ping_store().await.map_err(|e| {
        NixUnavailable::new(format!(
            "the Nix daemon at {} does not serve user ‘{}’: add it to allowed-users in the daemon's nix.conf",
            socket.display(),
            account.name
        ))
        .because(e)
    })?;
    let trusted = said.unwrap_or_else(|| {
        // This side's reading of trusted-users: the daemon's own file, as a
        // rule (settings given to the client only are not the daemon's).
        let trusted_users: Vec<String> = settings
            .get("trusted-users")
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        account.is_listed_in(&trusted_users)
    });
    Ok(StoreAccess::Daemon { socket, trusted })
}

fn writable(path: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
}

/// A shell and the shared libraries it loads (its interpreter too), as
/// binds for a sandbox: (path inside, real file on the host). Nix copies a
/// symbolic link as a link, so each bind names the real file.
fn shell_with_libraries(shell: &Path) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    let real = shell.canonicalize().map_err(|e| format!("{}: {e}", shell.display()))?;
    let output = std::process::Command::new("ldd").arg(&real).output().map_err(|e| format!("cannot run ldd: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut binds = vec![(shell.to_owned(), real.clone())];
    if !output.status.success() {
        // `not a dynamic executable`: a static shell needs nothing more.
        return if text.contains("not a dynamic") || String::from_utf8_lossy(&output.stderr).contains("not a dynamic") {
            Ok(binds)
        } else {
            Err(format!("ldd {} failed", real.display()))
        };
    }
    for library in parse_ldd(&text) {
        let host = library.canonicalize().map_err(|e| format!("{}: {e}", library.display()))?;
        if !binds.iter().any(|(inside, _)| *inside == library) {
            binds.push((library, host));
        }
    }
    // A bind is written `inside=host`, separated by spaces.
    for (inside, host) in &binds {
        for path in [inside, host] {
            let text = path.to_string_lossy();
            if text.contains(char::is_whitespace) || text.contains('=') || !path.is_absolute() {
                return Err(format!("{} cannot be named in sandbox-paths", path.display()));
            }
        }
    }
    Ok(binds)
}

/// The library paths of `ldd` output: `name => /path (addr)` and the
/// interpreter's `/path (addr)`.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_what_nix_store_prints() {
        assert_eq!(parse_version("nix-store (Nix) 2.8.0"), Some((2, 8)));
        assert_eq!(parse_version("nix-store (Nix) 2.18.1pre20231120_dirty"), Some((2, 18)));
        assert_eq!(parse_version("nix-store (Lix, like Nix) 2.91.1"), Some((2, 91)));
        assert_eq!(parse_version("nix-store (Nix) 3"), None);
        assert_eq!(parse_version(""), None);
        assert!(parse_version("nix-store (Nix) 2.3.16").unwrap() < MIN_VERSION);
    }

    #[test]
    fn ldd_output_gives_the_libraries_and_the_interpreter() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f99)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f9a)\n";
        assert_eq!(
            parse_ldd(text),
            [PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"), PathBuf::from("/lib64/ld-linux-x86-64.so.2")]
        );
    }

    #[test]
    fn the_host_shell_comes_with_what_it_loads_as_real_files() {
        let binds = shell_with_libraries(Path::new("/bin/sh")).unwrap();
        assert_eq!(binds[0].0, Path::new("/bin/sh"));
        for (inside, host) in &binds {
            assert!(inside.is_absolute(), "{binds:?}");
            let metadata = std::fs::symlink_metadata(host).unwrap();
            assert!(metadata.file_type().is_file(), "{host:?} is bound as a real file, not a link: {binds:?}");
        }
    }

    fn local(settings: &[(&str, &str)]) -> LocalNix {
        LocalNix {
            version: "nix-store (Nix) 2.8.0".into(),
            account: Account { uid: 0, name: "root".into(), groups: vec!["root".into()] },
            store: StoreAccess::Direct,
            settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            adjustments: Vec::new(),
            local_builds: LocalBuilds::Derivations,
            notes: Vec::new(),
        }
    }

    #[test]
    fn a_missing_build_users_group_means_building_as_root_and_saying_so() {
        let mut missing = local(&[("build-users-group", "orthrus-no-such-group")]);
        missing.adjust_build_users();
        assert_eq!(missing.adjustments, [("build-users-group".to_owned(), String::new())]);
        assert!(missing.notes[0].contains("‘orthrus-no-such-group’ (build-users-group) does not exist"));
        let mut none = local(&[("build-users-group", "")]);
        none.adjust_build_users();
        assert!(none.adjustments.is_empty() && none.notes.is_empty());
    }

    #[test]
    fn a_sandbox_without_a_shell_gets_the_hosts() {
        let mut bare = local(&[("sandbox", "true"), ("sandbox-paths", "")]);
        bare.adjust_sandbox_shell();
        let (name, value) = &bare.adjustments[0];
        assert_eq!(name, "extra-sandbox-paths");
        assert!(value.starts_with("/bin/sh=/"), "{value}");
        let mut nixos = local(&[("sandbox", "true"), ("sandbox-paths", "/bin/sh=/nix/store/x-busybox/bin/busybox")]);
        nixos.adjust_sandbox_shell();
        assert!(nixos.adjustments.is_empty());
        let mut off = local(&[("sandbox", "false")]);
        off.adjust_sandbox_shell();
        assert!(off.adjustments.is_empty());
    }
}
