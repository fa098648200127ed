//! Publishing to binary caches: every successful build's outputs, with
//! their closure and the logs of its steps, go to each cache of
//! `[[binary_cache.publish]]`, so that other machines substitute from the
//! cache and not only from this server's store.
//!
//! A publisher reads the event outbox like a notifier (`notify::spawn`):
//! after the build is recorded, at least once, retried with back-off while
//! the cache fails, its state in `/api/notifiers` and on `/status`, and
//! nothing lost across a restart. A path the cache already has (its
//! narinfo is there) is not written again; a NAR is written before the
//! narinfo that points at it, so a reader never finds one without the
//! other. `file://` and `s3://` caches are written here
//! (`file_cache.rs`, `s3_cache.rs`, the NARs by `nar.rs`); `ssh://` and
//! `ssh-ng://` stores through Nix (`nix copy --to`).

mod file_cache;
mod nar;
mod s3_cache;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};

use crate::config::{CacheTarget, Compression, Config, PublishConfig};
use crate::db::Db;
use crate::domain::EventKind;
use crate::logs::LogStore;
use crate::nix::{Nix, SigningKey, StorePath};
use crate::notify::{Sink, Subscription};
use crate::plugins::api::NotifyEvent;
use file_cache::FileCache;
use nar::CompressedNar;
use s3_cache::S3Cache;

/// Where one publisher writes.
enum Target {
    File(FileCache),
    S3(S3Cache),
    /// A store Nix copies to.
    NixCopy {
        uri: String,
    },
}

/// A cache of `[[binary_cache.publish]]`, opened.
pub struct Cache {
    uri: String,
    target: Target,
    concurrency: usize,
}

impl Cache {
    pub fn open(entry: &PublishConfig, config: &Config) -> Result<Cache, String> {
        let at = |e: String| format!("binary_cache.publish {}: {e}", entry.uri);
        let target = match entry.target().map_err(at)? {
            CacheTarget::File { dir, compression } => Target::File(FileCache::open(dir, compression).map_err(at)?),
            CacheTarget::S3(target) => {
                Target::S3(S3Cache::open(&target, config.scratch_dir().join("publish")).map_err(at)?)
            }
            CacheTarget::NixCopy { uri } => Target::NixCopy { uri },
        };
        Ok(Cache { uri: entry.uri.clone(), target, concurrency: entry.concurrency.max(1) })
    }

    /// Publishes `closure` (a closure: every path with its references)
    /// and, from `logs`, the logs of the derivations `steps`; returns how
    /// many paths it wrote (`nix copy` does not say: all of them).
    pub async fn publish(
        &self,
        nix: &Nix,
        closure: &[StorePath],
        key: Option<&SigningKey>,
        key_file: Option<&Path>,
        steps: &[StorePath],
        logs: Option<&LogStore>,
    ) -> Result<usize, String> {
        if let Target::NixCopy { uri } = &self.target {
            nix.copy_to(uri, closure, key_file).await.map_err(|e| e.to_string())?;
            return Ok(closure.len());
        }
        let target = &self.target;
        if !target.has("nix-cache-info").await? {
            target.put_file("nix-cache-info", cache_info().into_bytes()).await?;
        }
        // Look before writing; a narinfo goes in only after its NAR.
        let narinfo = |path: &StorePath| format!("{}.narinfo", path.hash_part());
        let looked: Vec<(StorePath, bool)> = futures_util::stream::iter(closure.to_vec())
            .map(|path| async move { Ok::<_, String>((path.clone(), target.has(&narinfo(&path)).await?)) })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        let missing: Vec<StorePath> = looked.into_iter().filter(|(_, has)| !has).map(|(path, _)| path).collect();
        if !missing.is_empty() {
            let infos = nix.path_infos(&missing).await.map_err(|e| e.to_string())?;
            let infos = &infos;
            // Owned paths: a stream of borrowed ones makes a future that is
            // not `Send` for every lifetime.
            futures_util::stream::iter(missing.clone())
                .map(|path| async move {
                    let info = infos.get(&path).ok_or_else(|| format!("{path} is not valid in the store"))?;
                    let nar = CompressedNar::of(&path, target.compression(), &target.scratch()).await?;
                    let text = nar.narinfo(&path, info, key)?;
                    target.put_nar(nar).await?;
                    target.put_file(&narinfo(&path), text.into_bytes()).await
                })
                .buffer_unordered(self.concurrency)
                .try_collect::<Vec<()>>()
                .await?;
        }
        // A log is read only when the cache lacks it.
        for drv in steps.iter().filter(|_| logs.is_some()) {
            let name = format!("log/{}", drv.base_name());
            if target.has(&name).await? {
                continue;
            }
            let (logs, drv) = (logs.cloned().expect("filtered"), drv.clone());
            let log =
                tokio::task::spawn_blocking(move || logs.read(&drv).map_err(|e| format!("the log of {drv}: {e}")))
                    .await
                    .map_err(|e| e.to_string())??;
            if let Some(log) = log {
                target.put_file(&name, log).await?;
            }
        }
        Ok(missing.len())
    }
}

/// What a cache says of itself (`nix-cache-info`).
fn cache_info() -> String {
    format!("StoreDir: {}\nWantMassQuery: 1\nPriority: 40\n", crate::nix::store_dir())
}

impl Target {
    fn compression(&self) -> Compression {
        match self {
            Target::File(cache) => cache.compression,
            Target::S3(cache) => cache.compression,
            Target::NixCopy { .. } => unreachable!("Nix writes those"),
        }
    }

    fn scratch(&self) -> PathBuf {
        match self {
            Target::File(cache) => cache.scratch(),
            Target::S3(cache) => cache.scratch(),
            Target::NixCopy { .. } => unreachable!("Nix writes those"),
        }
    }

    async fn has(&self, key: &str) -> Result<bool, String> {
        match self {
            Target::File(cache) => cache.has(key).await,
            Target::S3(cache) => cache.has(key).await,
            Target::NixCopy { .. } => unreachable!("Nix writes those"),
        }
    }

    async fn put_nar(&self, nar: CompressedNar) -> Result<(), String> {
        match self {
            Target::File(cache) => cache.put_nar(nar).await,
            Target::S3(cache) => cache.put_nar(nar).await,
            Target::NixCopy { .. } => unreachable!("Nix writes those"),
        }
    }

    async fn put_file(&self, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        match self {
            Target::File(cache) => cache.put(key, bytes).await,
            Target::S3(cache) => cache.put_file(key, bytes).await,
            Target::NixCopy { .. } => unreachable!("Nix writes those"),
        }
    }
}

/// One cache of `[[binary_cache.publish]]`, as a sink of the outbox.
struct Publisher {
    cache: Cache,
    nix: Nix,
    db: Db,
    logs: LogStore,
    key: Option<Arc<SigningKey>>,
    /// The key's file, for `nix store sign` before a `nix copy`.
    key_file: Option<PathBuf>,
}

/// Whether every cache of the configuration opens (checked at start, so
/// that a wrong one stops the server instead of only its publisher).
pub fn check(config: &Config) -> Result<(), String> {
    for entry in &config.binary_cache.publish {
        Cache::open(entry, config)?;
    }
    Ok(())
}

/// Starts one publisher per cache of the configuration.
pub fn start(
    config: &Arc<Config>,
    db: &Db,
    nix: &Nix,
    logs: &LogStore,
    key: Option<Arc<SigningKey>>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let key_file = Some(config.binary_cache.secret_key_file.clone()).filter(|f| !f.as_os_str().is_empty());
    let mut tasks = Vec::new();
    for entry in &config.binary_cache.publish {
        let publisher = Publisher {
            cache: Cache::open(entry, config)?,
            nix: nix.clone(),
            db: db.clone(),
            logs: logs.clone(),
            key: key.clone(),
            key_file: key_file.clone(),
        };
        let subscription = Subscription {
            name: entry.name(),
            events: vec![EventKind::BuildFinished],
            projects: Vec::new(),
            retry_delay_secs: entry.retry_delay_secs,
            retry_max_delay_secs: 3600,
        };
        tasks.push(crate::notify::spawn(subscription, db, logs, config, publisher));
    }
    Ok(tasks)
}

impl Publisher {
    /// The derivations of the build's steps (whose logs `nix log` asks a
    /// cache for).
    async fn step_derivations(&self, build_id: i64) -> Result<Vec<StorePath>, String> {
        let steps = self.db.build_steps(build_id).await.map_err(|e| e.to_string())?;
        Ok(steps.iter().filter_map(|step| StorePath::parse(&step.drv_path).ok()).collect())
    }
}

impl Sink for Publisher {
    fn describe(&self) -> String {
        format!("binary cache {}", self.cache.uri)
    }

    async fn deliver(&self, event: &NotifyEvent) -> Result<(), String> {
        let Some(build) = event.build.as_ref().filter(|b| event.kind == "build-finished" && b.status == Some(0)) else {
            return Ok(());
        };
        let outputs: Vec<StorePath> = build.outputs.iter().filter_map(|(_, p)| StorePath::parse(p).ok()).collect();
        if outputs.is_empty() {
            return Ok(());
        }
        let gone = self.nix.invalid_paths(&outputs).await.map_err(|e| e.to_string())?;
        if !gone.is_empty() {
            tracing::warn!(build = build.id, cache = %self.cache.uri, "not published: its outputs are no longer in the store");
            return Ok(());
        }
        let closure =
            self.nix.requisites(&outputs).await.map_err(|e| format!("the closure of build {}: {e}", build.id))?;
        let steps = self.step_derivations(build.id).await?;
        let (key, key_file) = (self.key.as_deref(), self.key_file.as_deref());
        let written = self.cache.publish(&self.nix, &closure, key, key_file, &steps, Some(&self.logs)).await?;
        tracing::info!(build = build.id, cache = %self.cache.uri, paths = closure.len(), written, "build published");
        Ok(())
    }
}
