//! The SSH transport: one SSH session per build slot, running
//! `nix-store --serve --write` on the machine.
//!
//! A session per slot, not one shared by the slots, because SSH flow
//! control is per connection as well as per channel: a channel nobody reads
//! (a slot busy copying elsewhere) would stall its neighbours.
//!
//! The host key is always checked: against the machine's configured
//! `public-host-key`, or else against `~/.ssh/known_hosts`. A key that does
//! not match refuses the machine.

use std::io;
use std::path::PathBuf;
use std::task::{Context, Poll};
use std::time::Duration;

use async_ssh2_tokio::{AuthMethod, Client, Config, ServerCheckMethod};
use russh::ChannelMsg;
use tokio::sync::mpsc;

use super::connect_error::ConnectError;
use super::spec::{MachineAddress, MachineSpec};
use crate::nix::{Chunk, ServeConnection, ServeOutput};

/// Chunks in flight between the SSH pump and the protocol reader; bounds
/// the memory a fast sender can fill.
const CHANNEL_DEPTH: usize = 64;

/// Opens a serve connection to a remote machine, giving up after `timeout`.
pub async fn connect(spec: &MachineSpec, timeout: Duration) -> Result<ServeConnection, ConnectError> {
    let MachineAddress::Ssh { user, host, port, remote_program } = &spec.address else {
        unreachable!("only SSH machines are connected to over SSH")
    };
    let key = key_file(spec)?;
    let check = match &spec.host_key {
        Some(host_key) => ServerCheckMethod::with_public_key(&host_key.blob),
        None => ServerCheckMethod::DefaultKnownHostsFile,
    };
    // A dead machine or network is noticed within 45 s even mid-build,
    // when the far side is silent anyway.
    let config = Config {
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        nodelay: true,
        ..Config::default()
    };
    // Resolved here, asynchronously: the SSH library would resolve with a
    // blocking call that no timeout can interrupt.
    let addresses = tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), *port)))
        .await
        .map_err(|_| ConnectError::NoAddressInTime { host: host.clone(), secs: timeout.as_secs() })?
        .map_err(|e| ConnectError::NoAddress { host: host.clone(), detail: e.to_string() })?
        .collect();
    let target = Resolved { addresses, hostname: host.clone() };
    let connecting = Client::connect_with_config(target, user, AuthMethod::with_key_file(&key, None), check, config);
    let client = match tokio::time::timeout(timeout, connecting).await {
        Err(_) => return Err(ConnectError::Timeout { host: host.clone(), port: *port, secs: timeout.as_secs() }),
        Ok(Err(async_ssh2_tokio::Error::SshError(russh::Error::UnknownKey))) => {
            return Err(match &spec.host_key {
                Some(expected) => ConnectError::HostKeyMismatch {
                    host: host.clone(),
                    port: *port,
                    algorithm: expected.algorithm.clone(),
                },
                None => ConnectError::HostKeyUnknown { host: host.clone(), port: *port },
            });
        }
        Ok(Err(e)) => {
            return Err(ConnectError::Ssh {
                user: user.clone(),
                host: host.clone(),
                port: *port,
                message: e.to_string(),
            });
        }
        Ok(Ok(client)) => client,
    };
    let command = crate::nix::Nix::serve_command(remote_program);
    let opening = async {
        let channel = client.get_channel().await.map_err(|e| format!("opening an SSH channel: {e}"))?;
        channel.exec(true, command.as_str()).await.map_err(|e| format!("running {command:?}: {e}"))?;
        Ok::<_, String>(channel)
    };
    let channel = tokio::time::timeout(timeout, opening)
        .await
        .map_err(|_| format!("{host}:{port} did not start {command:?} within {} s", timeout.as_secs()))
        .and_then(|opened| opened)
        .map_err(ConnectError::Serve)?;
    let (mut reader, writer) = channel.split();
    let input = Box::pin(writer.make_writer());
    let (sender, chunks) = mpsc::channel(CHANNEL_DEPTH);
    // One pump for both streams keeps stdout and stderr in the order the
    // server sent them: a build's log is complete when its result arrives.
    let pump = tokio::spawn(async move {
        while let Some(message) = reader.wait().await {
            let chunk = match message {
                ChannelMsg::Data { data } => Chunk::Stdout(data.to_vec()),
                ChannelMsg::ExtendedData { data, ext: 1 } => Chunk::Stderr(data.to_vec()),
                ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => continue,
            };
            if sender.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let output = SshOutput { client, chunks, pump, writer_half: writer, closed: false };
    let greeting = ServeConnection::open(Box::new(output), input);
    tokio::time::timeout(timeout, greeting)
        .await
        .map_err(|_| {
            ConnectError::Serve(format!(
                "{command:?} on {host} did not answer the greeting within {} s",
                timeout.as_secs()
            ))
        })?
        .map_err(|e| ConnectError::Serve(format!("{command:?} on {host}: {e}")))
}

/// Addresses looked up already, with the name the host key is known by.
struct Resolved {
    addresses: Vec<std::net::SocketAddr>,
    hostname: String,
}

impl async_ssh2_tokio::ToSocketAddrsWithHostname for Resolved {
    fn to_socket_addrs(&self) -> io::Result<Vec<std::net::SocketAddr>> {
        Ok(self.addresses.clone())
    }

    fn hostname(&self) -> String {
        self.hostname.clone()
    }
}

/// The machine's SSH key, or the user's default one.
fn key_file(spec: &MachineSpec) -> Result<PathBuf, ConnectError> {
    if let Some(key) = &spec.ssh_key {
        return Ok(key.clone());
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|name| home.join(".ssh").join(name))
        .find(|path| path.exists())
        .ok_or(ConnectError::NoKey)
}

/// The far side's output, as the pump task passes it on.
struct SshOutput {
    /// Keeps the session open as long as the connection is used.
    client: Client,
    chunks: mpsc::Receiver<Chunk>,
    pump: tokio::task::JoinHandle<()>,
    /// Keeps the channel's sending side (and so the channel) alive.
    #[allow(dead_code)]
    writer_half: russh::ChannelWriteHalf<russh::client::Msg>,
    closed: bool,
}

impl ServeOutput for SshOutput {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Chunk>>> {
        match self.chunks.poll_recv(cx) {
            Poll::Ready(None) => {
                self.closed = true;
                Poll::Ready(Ok(None))
            }
            other => other.map(Ok),
        }
    }

    fn is_closed(&mut self) -> bool {
        self.closed || self.client.is_closed() || self.pump.is_finished()
    }
}

impl Drop for SshOutput {
    fn drop(&mut self) {
        self.pump.abort();
    }
}
