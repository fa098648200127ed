//! `run-program(NAME)`: a program of the server's PATH, run in the
//! sandbox (`plugins::sandbox`) with the plugin's scratch directory, its
//! output capped and the program killed when the call ends.

use std::collections::BTreeSet;
use std::process::Stdio;

use tokio::io::AsyncReadExt;

use super::{Capability, Grant, WitError};
use crate::config::PluginGrant;
use crate::plugins::sandbox::{Credentials, Run};
use crate::plugins::state::HostState;
use crate::plugins::wit::latest::host_api::orthrus::plugin::process;

/// Output a program may write to each of stdout and stderr.
const MAX_PROGRAM_OUTPUT: usize = 16 << 20;

/// The programs it may run (never none), and what their box holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessGrant {
    pub programs: BTreeSet<String>,
    /// The programs may reach the network.
    pub network: bool,
    /// Files the programs see at fixed places in their box.
    pub credentials: Credentials,
}

impl Grant for ProcessGrant {
    fn asked(capabilities: &[Capability]) -> Option<Self> {
        let programs: BTreeSet<String> = capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::RunProgram(program) => Some(program.clone()),
                _ => None,
            })
            .collect();
        // The built-in plugins that run programs (git, svn) fetch.
        (!programs.is_empty()).then(|| ProcessGrant { programs, network: true, credentials: Credentials::default() })
    }

    fn from_config(grant: &PluginGrant) -> Option<Self> {
        let programs: BTreeSet<String> = grant.programs.iter().cloned().collect();
        (!programs.is_empty()).then(|| ProcessGrant {
            programs,
            network: grant.network.unwrap_or(false),
            credentials: Credentials {
                ssh_key: non_empty(&grant.ssh_key_file),
                known_hosts: non_empty(&grant.ssh_known_hosts_file),
                git_credentials: non_empty(&grant.git_credentials_file),
            },
        })
    }

    fn write_config(&self, grant: &mut PluginGrant) {
        grant.programs = self.programs.iter().cloned().collect();
        grant.network = Some(self.network);
        grant.ssh_key_file = self.credentials.ssh_key.clone().unwrap_or_default();
        grant.ssh_known_hosts_file = self.credentials.known_hosts.clone().unwrap_or_default();
        grant.git_credentials_file = self.credentials.git_credentials.clone().unwrap_or_default();
    }

    fn capabilities(&self) -> Vec<Capability> {
        self.programs.iter().cloned().map(Capability::RunProgram).collect()
    }
}

fn non_empty(path: &std::path::Path) -> Option<std::path::PathBuf> {
    (!path.as_os_str().is_empty()).then(|| path.to_owned())
}

/// Reads a program's output to its end, keeping the first
/// [`MAX_PROGRAM_OUTPUT`] bytes (the rest is read and dropped, so that the
/// program is never stuck on a full pipe).
async fn read_capped(stream: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = MAX_PROGRAM_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

impl process::Host for HostState {
    async fn run(
        &mut self,
        program: String,
        args: Vec<String>,
        directory: String,
    ) -> Result<process::Output, WitError> {
        let needed = Capability::RunProgram(program.clone());
        let grant = self.granted(&self.grants.process, needed.clone())?;
        if !grant.programs.contains(&program) {
            return Err(self.not_granted(needed).into());
        }
        let directory = self.scratch_path(&directory)?;
        let failed = |what: String| WitError::Failed(what);
        // Where in its scratch directory (the box's `/scratch`) it starts.
        let scratch = self.scratch.canonicalize().map_err(|e| failed(format!("the scratch directory: {e}")))?;
        let workdir = directory
            .strip_prefix(&scratch)
            .map_err(|_| WitError::InvalidInput(format!("{directory:?} is not in the scratch directory")))?;
        let run = Run {
            program: &program,
            args: &args,
            scratch: &scratch,
            workdir,
            network: grant.network,
            credentials: &grant.credentials,
        };
        let mut command =
            self.services.sandbox.command(&run).map_err(|e| failed(format!("cannot run {program}: {e}")))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The call's time limit drops this future, and the program with it.
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| failed(format!("cannot run {program}: {e}")))?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (out, err) = tokio::join!(read_capped(&mut stdout), read_capped(&mut stderr));
        let (out, err) = (
            out.map_err(|e| failed(format!("reading the output of {program}: {e}")))?,
            err.map_err(|e| failed(format!("reading the output of {program}: {e}")))?,
        );
        let status = child.wait().await.map_err(|e| failed(format!("waiting for {program}: {e}")))?;
        tracing::debug!(plugin = %self.plugin, %program, ?args, status = ?status.code(), "program run for a plugin");
        Ok(process::Output { status: status.code().unwrap_or(-1), stdout: out, stderr: err })
    }
}
