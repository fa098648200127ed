//! What a plugin can ask of the server, each request checked against the
//! operator's grant on every call. A refused call is an `Err` for the
//! plugin to report, never a trap and never a system call.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::host_api::orthrus::plugin::{builds, http, key_value, log, mail, nix_store, process, types};
use super::outbound::HttpRequest;
use super::sandbox::Run;
use super::{Grants, PluginId, Services};
use crate::confined::{Confined, Refused};

/// Output a program may write to each of stdout and stderr.
const MAX_PROGRAM_OUTPUT: usize = 16 << 20;

/// The data of one plugin call's store.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) plugin: PluginId,
    pub(super) grants: Grants,
    /// The plugin's scratch directory (`/scratch` for the plugin).
    pub(super) scratch: PathBuf,
    pub(super) services: Services,
    /// The project a release-set call is about: its queries see no other.
    pub(super) project_scope: Option<i64>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HostState {
    fn denied(&self, what: &str) -> String {
        format!(
            "not granted: plugin ‘{}’ may not {what} (the operator grants it in {})",
            self.plugin,
            self.plugin.grant_table()
        )
    }

    /// A path the plugin names, inside its scratch directory, without
    /// following anything outside it.
    fn scratch_path(&self, relative: &str) -> Result<PathBuf, String> {
        let relative = relative.strip_prefix("/scratch").unwrap_or(relative).trim_start_matches('/');
        // Links could lead out: the resolved path must still be inside.
        let scratch = Confined::open(&self.scratch).map_err(|e| e.to_string())?;
        scratch.resolve(Path::new(relative)).map_err(|refused| match refused {
            Refused::NotInside { .. } => format!("{relative:?} is not a path inside the scratch directory"),
            Refused::LeadsOut { .. } => format!("{relative:?} leads outside the scratch directory"),
            Refused::Io { source, .. } => format!("{relative:?}: {source}"),
            other => format!("{relative:?}: {other}"),
        })
    }
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

impl types::Host for HostState {}

impl log::Host for HostState {
    async fn write(&mut self, level: log::Level, message: String) -> Result<(), String> {
        if !self.grants.log {
            return Err(self.denied("write to the log"));
        }
        let plugin = self.plugin.as_str();
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}

impl process::Host for HostState {
    async fn run(&mut self, program: String, args: Vec<String>, directory: String) -> Result<process::Output, String> {
        if !self.grants.programs.contains(&program) {
            return Err(self.denied(&format!("run {program:?}")));
        }
        let directory = self.scratch_path(&directory)?;
        // Where in its scratch directory (the box's `/scratch`) it starts.
        let scratch = self.scratch.canonicalize().map_err(|e| format!("the scratch directory: {e}"))?;
        let workdir = directory.strip_prefix(&scratch).map_err(|_| "not in the scratch directory".to_owned())?;
        let run = Run {
            program: &program,
            args: &args,
            scratch: &scratch,
            workdir,
            network: self.grants.network,
            credentials: &self.grants.credentials,
        };
        let mut command = self.services.sandbox.command(&run).map_err(|e| format!("cannot run {program}: {e}"))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The call's time limit drops this future, and the program with it.
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (out, err) = tokio::join!(read_capped(&mut stdout), read_capped(&mut stderr));
        let (out, err) = (
            out.map_err(|e| format!("reading the output of {program}: {e}"))?,
            err.map_err(|e| format!("reading the output of {program}: {e}"))?,
        );
        let status = child.wait().await.map_err(|e| format!("waiting for {program}: {e}"))?;
        tracing::debug!(plugin = %self.plugin, %program, ?args, status = ?status.code(), "program run for a plugin");
        Ok(process::Output { status: status.code().unwrap_or(-1), stdout: out, stderr: err })
    }
}

impl nix_store::Host for HostState {
    async fn add(&mut self, path: String) -> Result<String, String> {
        if !self.grants.add_to_store {
            return Err(self.denied("add paths to the Nix store"));
        }
        let path = self.scratch_path(&path)?;
        self.services.nix.add_to_store(&path).await.map(|p| p.to_string()).map_err(|e| e.to_string())
    }
}

impl key_value::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        if !self.grants.key_value {
            return Err(self.denied("use a key-value store"));
        }
        self.services.db.plugin_kv_get(self.plugin.as_str(), &key).await.map_err(|e| e.to_string())
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if !self.grants.key_value {
            return Err(self.denied("use a key-value store"));
        }
        self.services.db.plugin_kv_set(self.plugin.as_str(), &key, &value).await.map_err(|e| e.to_string())
    }

    async fn delete(&mut self, key: String) -> Result<(), String> {
        if !self.grants.key_value {
            return Err(self.denied("use a key-value store"));
        }
        self.services.db.plugin_kv_delete(self.plugin.as_str(), &key).await.map_err(|e| e.to_string())
    }
}

impl http::Host for HostState {
    async fn send(&mut self, request: http::Request) -> Result<http::Response, String> {
        if self.grants.http.is_empty() {
            return Err(self.denied("send HTTP requests"));
        }
        let granted: Vec<_> = self.grants.http.iter().cloned().collect();
        let url = request.url.clone();
        let request = HttpRequest {
            method: request.method,
            url: request.url,
            headers: request.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: request.body,
        };
        let response = self.services.http.send(&granted, request).await?;
        tracing::debug!(plugin = %self.plugin, %url, status = response.status, "HTTP request for a plugin");
        Ok(http::Response {
            status: response.status,
            headers: response.headers.into_iter().map(|(name, value)| http::Header { name, value }).collect(),
            body: response.body,
        })
    }
}

impl mail::Host for HostState {
    async fn send(&mut self, message: mail::Message) -> Result<(), String> {
        if !self.grants.mail {
            return Err(self.denied("send mail"));
        }
        self.services.mailer.send(&message.to, &message.subject, &message.body).await?;
        tracing::info!(plugin = %self.plugin, to = ?message.to, subject = %message.subject, "mail sent for a plugin");
        Ok(())
    }
}

impl HostState {
    /// The project a query may read, if the grant allows reading at all.
    fn readable_project(&self) -> Result<i64, String> {
        if !self.grants.read_builds {
            return Err(self.denied("read builds"));
        }
        self.project_scope.ok_or_else(|| "builds can only be read while computing a release set".to_owned())
    }
}

/// Builds as a release-set plugin sees them. (Free functions: the host
/// state is not `Sync`, so the futures must not borrow it.)
async fn summaries(db: &crate::db::Db, ids: &[i64]) -> Result<Vec<builds::BuildSummary>, String> {
    let views = db.build_views(ids).await.map_err(|e| e.to_string())?;
    Ok(views
        .into_iter()
        .map(|view| builds::BuildSummary {
            id: view.build.id as u64,
            jobset: view.jobset,
            job: view.build.job,
            nix_name: view.build.nix_name,
            finished: view.build.finished,
            status: view.build.build_status,
            timestamp: view.build.timestamp,
            stop_time: view.build.stop_time.unwrap_or(0),
            release_name: view.build.release_name,
            outputs: view.outputs.into_iter().map(|(name, path)| builds::Output { name, path }).collect(),
            evals: view.evals.into_iter().map(|e| e as u64).collect(),
        })
        .collect())
}

/// An evaluation of project `project`.
async fn project_eval(db: &crate::db::Db, project: i64, id: u64) -> Result<(crate::db::JobsetEval, String), String> {
    let not_found = || format!("evaluation {id} is not one of this project's");
    let eval =
        db.eval(i64::try_from(id).map_err(|_| not_found())?).await.map_err(|e| e.to_string())?.ok_or_else(not_found)?;
    let (owner, jobset) = db.jobset_by_id(eval.jobset_id).await.map_err(|e| e.to_string())?.ok_or_else(not_found)?;
    if owner.id != project {
        return Err(not_found());
    }
    Ok((eval, jobset.name))
}

/// At most this many builds per query: a release set is a view, not a dump.
const MAX_QUERY_BUILDS: u32 = 1000;

impl builds::Host for HostState {
    async fn jobsets(&mut self) -> Result<Vec<String>, String> {
        let project = self.readable_project()?;
        let db = self.services.db.clone();
        let jobsets = db.jobsets_of(project).await.map_err(|e| e.to_string())?;
        Ok(jobsets.into_iter().map(|j| j.name).collect())
    }

    async fn job_builds(
        &mut self,
        jobset: String,
        job: String,
        limit: u32,
    ) -> Result<Vec<builds::BuildSummary>, String> {
        let project = self.readable_project()?;
        let db = self.services.db.clone();
        let jobsets = db.jobsets_of(project).await.map_err(|e| e.to_string())?;
        let Some(jobset_row) = jobsets.iter().find(|j| j.name == jobset) else {
            return Err(format!("the project has no jobset ‘{jobset}’"));
        };
        let ids = db
            .job_builds(jobset_row.id, &job, u64::from(limit.min(MAX_QUERY_BUILDS)))
            .await
            .map_err(|e| e.to_string())?;
        summaries(&db, &ids).await
    }

    async fn eval(&mut self, id: u64) -> Result<builds::EvalSummary, String> {
        let project = self.readable_project()?;
        let db = self.services.db.clone();
        let (eval, jobset) = project_eval(&db, project, id).await?;
        let mut inputs = db.eval_inputs(&[eval.id]).await.map_err(|e| e.to_string())?;
        let inputs = inputs.remove(&eval.id).unwrap_or_default();
        Ok(builds::EvalSummary {
            id,
            jobset,
            timestamp: eval.timestamp,
            inputs: inputs
                .into_iter()
                .map(|i| builds::EvalInput {
                    name: i.name,
                    type_: i.kind,
                    value: i.value.unwrap_or_default(),
                    uri: i.uri.unwrap_or_default(),
                    revision: i.revision.unwrap_or_default(),
                    dependency: i.dependency.map(|d| d as u64),
                })
                .collect(),
        })
    }

    async fn eval_builds(&mut self, id: u64) -> Result<Vec<builds::BuildSummary>, String> {
        let project = self.readable_project()?;
        let db = self.services.db.clone();
        let (eval, _) = project_eval(&db, project, id).await?;
        let mut members = db.eval_members(&[eval.id]).await.map_err(|e| e.to_string())?;
        let mut ids = members.remove(&eval.id).unwrap_or_default();
        ids.truncate(MAX_QUERY_BUILDS as usize * 10);
        summaries(&db, &ids).await
    }
}
