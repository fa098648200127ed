//! Why a machine could not be reached, saying where it failed: the
//! message a step's log, the machine's page and the back-off show.

use crate::nix::NixError;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The local store's `nix-store --serve` could not be started.
    #[error("{0}")]
    Local(#[from] NixError),
    #[error("no ssh-key given for the machine and none in ~/.ssh")]
    NoKey,
    #[error("no address for {host} within {secs} s")]
    NoAddressInTime { host: String, secs: u64 },
    #[error("no address for {host}: {detail}")]
    NoAddress { host: String, detail: String },
    #[error("no SSH connection to {host}:{port} within {secs} s")]
    Timeout { host: String, port: u16, secs: u64 },
    #[error(
        "host key of {host}:{port} does not match the configured public host key ({algorithm} …); refusing the machine"
    )]
    HostKeyMismatch { host: String, port: u16, algorithm: String },
    #[error(
        "host key of {host}:{port} is not in ~/.ssh/known_hosts; refusing the machine (give its public-host-key in \
         the machines file)"
    )]
    HostKeyUnknown { host: String, port: u16 },
    #[error("SSH to {user}@{host}:{port}: {message}")]
    Ssh { user: String, host: String, port: u16, message: String },
    /// The remote `nix-store --serve` did not start or answer.
    #[error("{0}")]
    Serve(String),
}
