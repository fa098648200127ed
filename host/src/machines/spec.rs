//! How operators describe machines: Nix's machines file, read as Nix reads
//! it, and `[[machines.machine]]` tables in the TOML configuration with the
//! same fields.
//!
//! A machines file has one machine per line (or per `;`-separated entry):
//!
//! ```text
//! # uri                 systems              ssh-key         max-jobs speed features          mandatory public-host-key
//! ssh://builder@big     x86_64-linux,i686-linux /etc/keys/id 8        2     kvm,big-parallel  -         c3NoLWVkMjU1MTkgQUFBQ...
//! localhost             x86_64-linux         -               4
//! ```
//!
//! Fields after the URI may be left out or given as `-`; `#` starts a
//! comment. `localhost` (as in Hydra) is the server's own store, used
//! without SSH.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::config::MachineFields;
use base64::Engine;

/// Where a machine is and how it is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MachineAddress {
    /// The server's own Nix store, through a `nix-store --serve` subprocess.
    Local,
    /// A Nix machine reached over SSH.
    Ssh {
        user: String,
        host: String,
        port: u16,
        /// The `nix-store` program on the far side (`?remote-program=`).
        remote_program: String,
    },
}

/// One machine as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineSpec {
    /// The URI as written; it names the machine in steps and on `/machines`.
    pub name: String,
    pub address: MachineAddress,
    /// Empty for the local machine means: the systems Nix says it builds.
    pub systems: Vec<String>,
    pub ssh_key: Option<PathBuf>,
    pub max_jobs: usize,
    pub speed_factor: f64,
    /// Features the machine offers; includes the mandatory ones.
    pub supported_features: BTreeSet<String>,
    /// Features a step must ask for to run here at all.
    pub mandatory_features: BTreeSet<String>,
    pub host_key: Option<HostKey>,
    /// `file:line` or the config key, for messages.
    pub origin: String,
}

/// An SSH public host key: algorithm and base64 key blob, as in
/// `known_hosts` or a `.pub` file.
/// What is wrong with a machine entry, of the configuration or of a
/// machines file (`At` says which line or entry).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("a machine needs a uri")]
    NoUri,
    #[error("{0}: ssh-ng:// (the daemon protocol) is not supported; use ssh:// (nix-store --serve)")]
    SshNg(String),
    #[error("{uri}: unsupported scheme {scheme}:// (use ssh:// or localhost)")]
    Scheme { uri: String, scheme: String },
    #[error("{uri}: unsupported parameter {parameter:?} (only remote-program=…)")]
    Parameter { uri: String, parameter: String },
    #[error("{uri}: {port:?} is not a port")]
    Port { uri: String, port: String },
    #[error("{0}: expected ssh://user@host[:port]")]
    Address(String),
    #[error("speed factor {0} must be a positive number")]
    SpeedFactor(f64),
    #[error("{0:?} is not a system type")]
    System(String),
    #[error("ssh key {} must be an absolute path", .0.display())]
    RelativeKey(PathBuf),
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    #[error("localhost is the server's own store: it takes no SSH key or host key")]
    LocalWithKeys,
    #[error("{0} fields, at most 8 are known")]
    TooManyFields(usize),
    #[error("max-jobs {0:?} is not a number")]
    MaxJobs(String),
    #[error("speed factor {0:?} is not a number")]
    SpeedFactorText(String),
    /// Where the entry is: `FILE:LINE` or `machines.machine[N]`.
    #[error("{origin}: {error}")]
    At { origin: String, error: Box<SpecError> },
}

impl SpecError {
    pub(crate) fn at(origin: &str) -> impl FnOnce(SpecError) -> SpecError + '_ {
        move |error| SpecError::At { origin: origin.to_owned(), error: Box::new(error) }
    }
}

/// What is wrong with a machine's public host key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyError {
    #[error("public host key is neither a key line nor base64 ({0})")]
    NotBase64(String),
    #[error("public host key: base64 does not decode to a key line")]
    NotText,
    #[error("public host key {0:?} is not of the form `ssh-ed25519 AAAA…`")]
    Malformed(String),
    #[error("public host key: the key part of {0:?} is not base64")]
    KeyNotBase64(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    pub algorithm: String,
    pub blob: String,
}

impl std::fmt::Display for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.algorithm, self.blob)
    }
}

impl HostKey {
    /// Reads the machines file's form (the base64 of a `.pub` line, as
    /// `base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub` prints) or the
    /// `.pub` line itself.
    pub fn parse(text: &str) -> Result<HostKey, HostKeyError> {
        let text = text.trim();
        let line = if text.contains(' ') {
            text.to_owned()
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| HostKeyError::NotBase64(e.to_string()))?;
            String::from_utf8(bytes).map_err(|_| HostKeyError::NotText)?
        };
        let mut fields = line.split_whitespace();
        let (Some(algorithm), Some(blob)) = (fields.next(), fields.next()) else {
            return Err(HostKeyError::Malformed(line));
        };
        if base64::engine::general_purpose::STANDARD.decode(blob).is_err() {
            return Err(HostKeyError::KeyNotBase64(line));
        }
        Ok(HostKey { algorithm: algorithm.to_owned(), blob: blob.to_owned() })
    }
}

impl MachineSpec {
    pub fn is_local(&self) -> bool {
        self.address == MachineAddress::Local
    }

    /// Whether this machine may build a step for `system` that asks for
    /// `required` features: it has the system (every Nix runs `builtin`
    /// derivations) and every feature, and the step asks for each of its
    /// mandatory features. A machine with no slots builds nothing.
    pub fn can_build(&self, system: &str, required: &BTreeSet<String>) -> bool {
        self.max_jobs > 0
            && (system == "builtin" || self.systems.iter().any(|s| s == system))
            && required.iter().all(|f| self.supported_features.contains(f))
            && self.mandatory_features.iter().all(|f| required.contains(f))
    }
}

impl MachineFields {
    /// Checks the fields and makes a machine of them.
    pub fn into_spec(self, origin: String) -> Result<MachineSpec, SpecError> {
        let address = parse_uri(&self.uri)?;
        let max_jobs = self.max_jobs.unwrap_or(1);
        let speed_factor = self.speed_factor.unwrap_or(1.0);
        if !(speed_factor.is_finite() && speed_factor > 0.0) {
            return Err(SpecError::SpeedFactor(speed_factor));
        }
        for system in &self.systems {
            if system.is_empty() || system.contains(char::is_whitespace) {
                return Err(SpecError::System(system.clone()));
            }
        }
        let ssh_key = (!self.ssh_key.is_empty()).then(|| PathBuf::from(&self.ssh_key));
        if let Some(key) = &ssh_key {
            if !key.is_absolute() {
                return Err(SpecError::RelativeKey(key.clone()));
            }
        }
        let host_key = match self.public_host_key.as_str() {
            "" => None,
            text => Some(HostKey::parse(text)?),
        };
        if address == MachineAddress::Local && (ssh_key.is_some() || host_key.is_some()) {
            return Err(SpecError::LocalWithKeys);
        }
        let mandatory_features: BTreeSet<String> = self.mandatory_features.into_iter().collect();
        let mut supported_features: BTreeSet<String> = self.supported_features.into_iter().collect();
        supported_features.extend(mandatory_features.iter().cloned());
        Ok(MachineSpec {
            name: self.uri,
            address,
            systems: self.systems,
            ssh_key,
            max_jobs,
            speed_factor,
            supported_features,
            mandatory_features,
            host_key,
            origin,
        })
    }
}

/// Reads `ssh://[user@]host[:port][?remote-program=…]`, a bare
/// `[user@]host`, or `localhost`.
fn parse_uri(uri: &str) -> Result<MachineAddress, SpecError> {
    if uri.is_empty() {
        return Err(SpecError::NoUri);
    }
    if uri == "localhost" || uri == "local" || uri == "ssh://localhost" {
        return Ok(MachineAddress::Local);
    }
    let rest = match uri.split_once("://") {
        Some(("ssh", rest)) => rest,
        Some(("ssh-ng", _)) => return Err(SpecError::SshNg(uri.to_owned())),
        Some((scheme, _)) => return Err(SpecError::Scheme { uri: uri.to_owned(), scheme: scheme.to_owned() }),
        None => uri,
    };
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut remote_program = "nix-store".to_owned();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("remote-program", value)) if !value.is_empty() => {
                remote_program = percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned()
            }
            _ => return Err(SpecError::Parameter { uri: uri.to_owned(), parameter: pair.to_owned() }),
        }
    }
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, host)) => (user.to_owned(), host),
        None => (std::env::var("USER").unwrap_or_else(|_| "root".into()), authority),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            let port =
                port.parse::<u16>().map_err(|_| SpecError::Port { uri: uri.to_owned(), port: port.to_owned() })?;
            (host, port)
        }
        _ => (host_port, 22),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || user.is_empty() || host.contains('/') {
        return Err(SpecError::Address(uri.to_owned()));
    }
    Ok(MachineAddress::Ssh { user, host: host.to_owned(), port, remote_program })
}

/// Reads a machines file; `file` only names it in errors. Every line is
/// checked, and the first bad one is reported with its number.
pub fn parse_machines_file(text: &str, file: &str) -> Result<Vec<MachineSpec>, SpecError> {
    let mut machines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let origin = format!("{file}:{}", index + 1);
        let line = line.split('#').next().unwrap_or_default();
        for entry in line.split(';') {
            let tokens: Vec<&str> = entry.split_whitespace().collect();
            if tokens.is_empty() {
                continue;
            }
            if tokens.len() > 8 {
                return Err(SpecError::at(&origin)(SpecError::TooManyFields(tokens.len())));
            }
            let field = |i: usize| tokens.get(i).copied().filter(|t| *t != "-").unwrap_or_default();
            let list = |i: usize| -> Vec<String> {
                field(i).split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
            };
            let max_jobs = match field(3) {
                "" => None,
                n => Some(n.parse::<usize>().map_err(|_| SpecError::at(&origin)(SpecError::MaxJobs(n.to_owned())))?),
            };
            let speed_factor = match field(4) {
                "" => None,
                n => Some(
                    n.parse::<f64>().map_err(|_| SpecError::at(&origin)(SpecError::SpeedFactorText(n.to_owned())))?,
                ),
            };
            let fields = MachineFields {
                uri: tokens[0].to_owned(),
                systems: list(1),
                ssh_key: field(2).to_owned(),
                max_jobs,
                speed_factor,
                supported_features: list(5),
                mandatory_features: list(6),
                public_host_key: field(7).to_owned(),
            };
            machines.push(fields.into_spec(origin.clone()).map_err(SpecError::at(&origin))?);
        }
    }
    Ok(machines)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_LINE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@b";

    fn key_base64() -> String {
        base64::engine::general_purpose::STANDARD.encode(KEY_LINE)
    }

    #[test]
    fn reads_every_field_of_a_line() {
        let text = format!(
            "# builders\nssh://nix@big:2222 x86_64-linux,i686-linux /k/id 8 2.5 kvm,big-parallel benchmark {}\n",
            key_base64()
        );
        let machines = parse_machines_file(&text, "machines").unwrap();
        assert_eq!(machines.len(), 1);
        let m = &machines[0];
        assert_eq!(m.name, "ssh://nix@big:2222");
        assert_eq!(
            m.address,
            MachineAddress::Ssh {
                user: "nix".into(),
                host: "big".into(),
                port: 2222,
                remote_program: "nix-store".into()
            }
        );
        assert_eq!(m.systems, ["x86_64-linux", "i686-linux"]);
        assert_eq!(m.ssh_key.as_deref(), Some(std::path::Path::new("/k/id")));
        assert_eq!((m.max_jobs, m.speed_factor), (8, 2.5));
        assert!(m.supported_features.contains("benchmark"), "mandatory features are supported too");
        assert_eq!(m.mandatory_features.iter().collect::<Vec<_>>(), ["benchmark"]);
        assert_eq!(m.host_key.as_ref().unwrap().to_string(), KEY_LINE.rsplit_once(' ').unwrap().0);
        assert_eq!(m.origin, "machines:2");
    }

    #[test]
    fn dashes_short_lines_semicolons_and_localhost() {
        let text = "localhost x86_64-linux - 4 ; root@b - - - 1 # a comment\n\n   \n";
        let machines = parse_machines_file(text, "m").unwrap();
        assert_eq!(machines.len(), 2);
        assert!(machines[0].is_local());
        assert_eq!(machines[0].max_jobs, 4);
        assert!(machines[1].systems.is_empty());
        assert_eq!(machines[1].max_jobs, 1);
        assert!(matches!(&machines[1].address, MachineAddress::Ssh { user, port: 22, .. } if user == "root"));
    }

    #[test]
    fn bad_lines_are_named() {
        let err =
            parse_machines_file("ok x86_64-linux\nssh://b x86_64-linux - many\n", "/etc/m").unwrap_err().to_string();
        assert!(err.starts_with("/etc/m:2:") && err.contains("max-jobs"), "{err}");
        let err = parse_machines_file("ssh-ng://b\n", "m").unwrap_err().to_string();
        assert!(err.contains("ssh-ng") && err.contains("m:1"), "{err}");
        let err = parse_machines_file("b - - 1 0\n", "m").unwrap_err().to_string();
        assert!(err.contains("speed factor"), "{err}");
        let err = parse_machines_file("b - - 1 1 - - bm90IGEga2V5\n", "m").unwrap_err().to_string();
        assert!(err.contains("public host key"), "{err}");
        let err = parse_machines_file("b - relative/key\n", "m").unwrap_err().to_string();
        assert!(err.contains("absolute"), "{err}");
    }

    #[test]
    fn features_decide_where_a_step_may_run() {
        let spec = |supported: &[&str], mandatory: &[&str]| {
            MachineFields {
                uri: "ssh://b".into(),
                systems: vec!["x86_64-linux".into()],
                supported_features: supported.iter().map(|s| s.to_string()).collect(),
                mandatory_features: mandatory.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }
            .into_spec("test".into())
            .unwrap()
        };
        let features = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let plain = spec(&[], &[]);
        assert!(plain.can_build("x86_64-linux", &features(&[])));
        assert!(!plain.can_build("aarch64-linux", &features(&[])));
        assert!(!plain.can_build("x86_64-linux", &features(&["kvm"])));
        let kvm = spec(&["kvm"], &[]);
        assert!(kvm.can_build("x86_64-linux", &features(&["kvm"])));
        assert!(kvm.can_build("x86_64-linux", &features(&[])));
        let only_benchmarks = spec(&[], &["benchmark"]);
        assert!(!only_benchmarks.can_build("x86_64-linux", &features(&[])));
        assert!(only_benchmarks.can_build("x86_64-linux", &features(&["benchmark"])));
    }

    #[test]
    fn host_key_in_either_form() {
        let from_base64 = HostKey::parse(&key_base64()).unwrap();
        let from_line = HostKey::parse(KEY_LINE).unwrap();
        assert_eq!(from_base64, from_line);
        assert_eq!(from_line.algorithm, "ssh-ed25519");
    }
}
