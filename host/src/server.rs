//! `orthrus serve`: wires the parts together — database, evaluator, queue
//! runner, HTTP server — and runs them until SIGINT or SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use tracing::info;

use crate::config::Config;
use crate::db::Db;
use crate::eval::{Evaluator, EvaluatorHandle};
use crate::gc::GcRoots;
use crate::logs::LogStore;
use crate::machines::Machines;
use crate::metrics::Metrics;
use crate::nix::Nix;
use crate::parts::Parts;
use crate::queue::{QueueHandle, QueueRunner};
use crate::retention::{Retention, RetentionStatus};
use crate::users::throttle::{Limits, LoginThrottle};
use crate::web::{AppState, router};

pub async fn serve(mut config: Config, demo: bool) -> anyhow::Result<()> {
    for dir in [config.data_dir.clone(), config.logs_dir(), config.scratch_dir()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Leftovers of evaluations interrupted by a crash.
    for entry in std::fs::read_dir(config.scratch_dir())?.flatten() {
        let _ = std::fs::remove_dir_all(entry.path());
    }
    if demo {
        let dir = crate::demo::write_files(&config).context("cannot write the demo project's files")?;
        config.evaluator.allowed_path_roots.push(dir);
    }
    let config = Arc::new(config);

    // What the local Nix can do, checked and said once before anything
    // builds; without a Nix that can build, the web still serves.
    let nix = Nix::new(&config.nix);
    let (nix, local_nix) = match crate::nix::local::check(&nix).await {
        Ok(local) => {
            for note in &local.notes {
                tracing::warn!("Nix: {note}");
            }
            (nix.with_settings(&local.adjustments), Ok(local))
        }
        Err(unavailable) => {
            tracing::error!("nothing is evaluated or built: {unavailable}");
            (nix, Err(unavailable))
        }
    };
    let machines = Arc::new(match &local_nix {
        Ok(local) => Machines::load(nix.clone(), &config, local.local_builds).await.map_err(anyhow::Error::msg)?,
        Err(_) => Machines::none(nix.clone(), &config),
    });
    if let Ok(local) = &local_nix {
        info!("{}; {} machines", local.version, machines.list().len());
    }
    let building = local_nix.is_ok();

    let Parts { db, nix, plugins, inputs } = Parts::open_with(&config, nix).await?;
    if demo {
        let dir = config.evaluator.allowed_path_roots.last().cloned().unwrap_or_default();
        crate::demo::install(&db, &dir).await.context("cannot create the demo project")?;
        info!("demo project ready: {}/project/demo", config.base_url());
    }

    let logs = LogStore::new(config.logs_dir());
    let queue = QueueHandle::default();
    let evaluator = EvaluatorHandle::default();
    // What the server keeps in the store, so that collecting it is safe.
    let gc = building.then(|| GcRoots::new(&config, db.clone(), nix.clone(), plugins.clone()));
    if let Some(gc) = &gc {
        info!("GC roots kept in {}", gc.dir().display());
        if config.gc.min_root_age_secs < 300 {
            tracing::warn!(
                "gc.min_root_age_secs is {}: a root made while an update runs may be removed before it is recorded",
                config.gc.min_root_age_secs
            );
        }
        if let Err(e) = gc.prepare() {
            tracing::warn!("{e}: what Orthrus builds is not protected from nix-collect-garbage until it can be");
        }
    }
    crate::notify::check(&config, &plugins).map_err(anyhow::Error::msg)?;
    let mut notifier_tasks = crate::notify::start(&config, &db, &plugins, &logs);
    let cache_key = load_cache_key(&config)?;
    notifier_tasks
        .extend(crate::publish::start(&config, &db, &nix, &logs, cache_key.clone()).map_err(anyhow::Error::msg)?);
    let metrics = Metrics::new();
    let watch = {
        let queue = queue.clone();
        machines.clone().watch(move || queue.wake())
    };
    let runner = QueueRunner::new(
        db.clone(),
        nix.clone(),
        logs.clone(),
        config.clone(),
        queue.clone(),
        machines.clone(),
        metrics.clone(),
    );
    let queue_task = building.then(|| tokio::spawn(runner.run()));
    let evaluator_task = Evaluator::new(
        db.clone(),
        nix.clone(),
        inputs.clone(),
        config.clone(),
        evaluator.clone(),
        queue.notify(),
        metrics.clone(),
    )
    .with_gc_roots(gc.clone());
    let eval_task = building.then(|| tokio::spawn(evaluator_task.run()));
    let gc_task = gc.clone().map(|gc| tokio::spawn(gc.run()));
    // Retention needs no Nix: it runs wherever the database is.
    let retention = Arc::new(RetentionStatus::default());
    let retention_task =
        tokio::spawn(Retention::new(&config, db.clone(), logs.clone(), metrics.clone(), retention.clone()).run());
    let spec_task = tokio::spawn(
        crate::projects::declarative::SpecApplier {
            db: db.clone(),
            inputs: inputs.clone(),
            wake_evaluator: {
                let evaluator = evaluator.clone();
                Box::new(move || evaluator.wake())
            },
        }
        .run(),
    );

    if let Some(key) = &cache_key {
        info!("binary cache signed with {} (public key {})", key.name(), key.public_key());
    }
    let releases = Arc::new(crate::releases::ReleaseSets::new(db.clone(), plugins.clone()));
    let state = AppState {
        inputs,
        db,
        nix,
        machines,
        metrics,
        cache_key,
        config: config.clone(),
        logs,
        evaluator,
        queue,
        plugins,
        rendered: Arc::default(),
        releases,
        plugin_calls: Arc::default(),
        channels: Arc::default(),
        gc: gc.clone(),
        retention,
        nix_problem: local_nix.err().map(|e| Arc::from(e.sentence)),
        login_throttle: Arc::new(LoginThrottle::new(Limits {
            per_user: config.web.login_failures_per_user,
            per_address: config.web.login_failures_per_address,
            window: std::time::Duration::from_secs(config.web.login_window_secs),
        })),
    };
    let addr = config.listen_addr().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    info!("Orthrus listening on {} ({})", config.base_url(), listener.local_addr()?);
    let header_timeout = std::time::Duration::from_secs(config.web.header_timeout_secs);
    crate::web::serve::serve(
        listener,
        router(state),
        header_timeout,
        shutdown_signal(),
        std::time::Duration::from_secs(10),
    )
    .await;
    // Dropping the runner kills the builds it started; they are retried at
    // the next start.
    for task in [queue_task, eval_task, gc_task].into_iter().flatten() {
        task.abort();
    }
    spec_task.abort();
    retention_task.abort();
    watch.abort();
    for task in notifier_tasks {
        task.abort();
    }
    info!("stopped");
    Ok(())
}

pub fn load_cache_key(config: &Config) -> anyhow::Result<Option<Arc<crate::nix::SigningKey>>> {
    let file = &config.binary_cache.secret_key_file;
    if file.as_os_str().is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("binary_cache.secret_key_file: cannot read {}", file.display()))?;
    let key = crate::nix::SigningKey::parse(&text)
        .map_err(|e| anyhow::anyhow!("binary_cache.secret_key_file: {}: {e}", file.display()))?;
    Ok(Some(Arc::new(key)))
}

async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    info!("shutting down");
}

/// A database URL without its password, for messages.
/// Opens (and migrates) the configured database.
pub async fn open_db(config: &Config) -> anyhow::Result<Db> {
    let url = config.database_url();
    Db::open(&url).await.with_context(|| format!("cannot open the database {}", redact(&url)))
}

pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
