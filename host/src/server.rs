//! `orthrus serve`: wires the parts together — database, evaluator, queue
//! runner, HTTP server — and runs them until SIGINT or SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use tracing::info;

use crate::cluster::{Cluster, RoleUnit};
use crate::config::Config;
use crate::db::Db;
use crate::domain::{ProcessRole, ProcessRoles};
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

/// Runs `orthrus serve` with `roles` (`None`: those of the configuration).
pub async fn serve(mut config: Config, demo: bool, roles: Option<ProcessRoles>) -> anyhow::Result<()> {
    let roles = roles.unwrap_or_else(|| config.process_roles());
    config.check_roles(roles).map_err(|e| anyhow::anyhow!("roles: {e}"))?;
    for dir in [config.data_dir.clone(), config.logs_dir(), config.scratch_dir()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
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
    let keeps_roots = roles.contains(ProcessRole::Evaluator) || roles.contains(ProcessRole::Maintenance);
    let gc = (building && keeps_roots).then(|| GcRoots::new(&config, db.clone(), nix.clone(), plugins.clone()));
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
    if roles.contains(ProcessRole::Notifier) {
        crate::notify::check(&config, &plugins).map_err(anyhow::Error::msg)?;
    }
    let cache_key = load_cache_key(&config)?;
    if roles.contains(ProcessRole::Publisher) {
        crate::publish::check(&config).map_err(anyhow::Error::msg)?;
    }
    let metrics = Metrics::new();
    let watch = {
        let queue = queue.clone();
        machines.clone().watch(move || queue.wake())
    };
    let retention = Arc::new(RetentionStatus::default());
    let wake_ups = crate::cluster::carry_wake_ups(
        &db,
        crate::cluster::Wakes { evaluate: evaluator.wake_handle().clone(), queue: queue.notify() },
    );

    // Each elected role as it starts in the process that takes it, with
    // the database handle its writes are fenced by.
    let units = {
        let (config, nix, plugins, inputs, logs, metrics) =
            (config.clone(), nix.clone(), plugins.clone(), inputs.clone(), logs.clone(), metrics.clone());
        let (gc, evaluator, queue, machines, retention, cache_key) =
            (gc.clone(), evaluator.clone(), queue.clone(), machines.clone(), retention.clone(), cache_key.clone());
        let with_db = move |gc: &Option<GcRoots>, db: &Db| gc.as_ref().map(|gc| gc.with_db(db.clone()));
        vec![
            RoleUnit::new(ProcessRole::Evaluator, {
                let (config, nix, inputs, evaluator, queue, metrics, gc) = (
                    config.clone(),
                    nix.clone(),
                    inputs.clone(),
                    evaluator.clone(),
                    queue.clone(),
                    metrics.clone(),
                    gc.clone(),
                );
                move |db| {
                    // Leftovers of evaluations interrupted by a crash (the
                    // evaluator of this data directory is this one now).
                    for entry in std::fs::read_dir(config.scratch_dir()).into_iter().flatten().flatten() {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                    let wake_evaluator = {
                        let evaluator = evaluator.clone();
                        Box::new(move || evaluator.wake())
                    };
                    let specs = crate::projects::declarative::SpecApplier {
                        db: db.clone(),
                        inputs: inputs.clone(),
                        wake_evaluator,
                    };
                    let mut tasks = vec![tokio::spawn(specs.run())];
                    if building {
                        let evaluator = Evaluator::new(
                            db.clone(),
                            nix.clone(),
                            inputs.clone(),
                            config.clone(),
                            evaluator.clone(),
                            queue.notify(),
                            metrics.clone(),
                        )
                        .with_gc_roots(with_db(&gc, &db));
                        tasks.push(tokio::spawn(evaluator.run()));
                    }
                    tasks
                }
            }),
            RoleUnit::new(ProcessRole::Queue, {
                let (config, nix, logs, metrics) = (config.clone(), nix.clone(), logs.clone(), metrics.clone());
                move |db| {
                    if !building {
                        return Vec::new();
                    }
                    let runner = QueueRunner::new(
                        db,
                        nix.clone(),
                        logs.clone(),
                        config.clone(),
                        queue.clone(),
                        machines.clone(),
                        metrics.clone(),
                    );
                    vec![tokio::spawn(runner.run())]
                }
            }),
            RoleUnit::new(ProcessRole::Notifier, {
                let (config, plugins, logs) = (config.clone(), plugins.clone(), logs.clone());
                move |db| crate::notify::start(&config, &db, &plugins, &logs)
            }),
            RoleUnit::new(ProcessRole::Publisher, {
                let (config, nix, logs) = (config.clone(), nix.clone(), logs.clone());
                move |db| {
                    crate::publish::start(&config, &db, &nix, &logs, cache_key.clone()).unwrap_or_else(|e| {
                        tracing::error!("nothing is published: {e}");
                        Vec::new()
                    })
                }
            }),
            RoleUnit::new(ProcessRole::Maintenance, move |db| {
                let mut tasks = Vec::new();
                if let Some(gc) = with_db(&gc, &db) {
                    tasks.push(tokio::spawn(gc.run()));
                }
                // Retention needs no Nix: it runs wherever the database is.
                tasks.push(tokio::spawn(
                    Retention::new(&config, db, logs.clone(), metrics.clone(), retention.clone()).run(),
                ));
                tasks
            }),
        ]
    };
    // Without a Nix that builds, this process neither evaluates nor builds,
    // and does not stand by for those roles.
    let units = units
        .into_iter()
        .filter(|unit| building || !matches!(unit.role, ProcessRole::Evaluator | ProcessRole::Queue))
        .collect();
    // Leases and heartbeats on connections of their own (PostgreSQL).
    let lease_db = match config.is_sqlite() {
        true => db.clone(),
        false => Db::connect_with(&config.database_url(), 2, idle_transactions(&config))
            .await
            .with_context(|| format!("cannot open the database {}", redact(&config.database_url())))?,
    };
    let cluster = Cluster::new(lease_db, db.clone(), &config, roles, units);
    let member = cluster.id().clone();
    info!("this process is {member}, running {}", cluster.roles());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let cluster_task = tokio::spawn(cluster.run(stopping.clone()));

    if let Some(key) = &cache_key {
        info!("binary cache signed with {} (public key {})", key.name(), key.public_key());
    }
    let releases = Arc::new(crate::releases::ReleaseSets::new(db.clone(), plugins.clone()));
    let state = AppState::new(crate::web::Services {
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
        build_answers: Default::default(),
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
        process: Arc::new(crate::web::ThisProcess::new(member, roles)),
    });
    let addr = config.listen_addr().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    if roles.contains(ProcessRole::Web) {
        info!("Orthrus listening on {} ({})", config.base_url(), listener.local_addr()?);
        // Read before the first search needs them (0.3 s at a million builds).
        let db = state.db.clone();
        tokio::spawn(async move {
            if let Err(e) = db.load_job_names().await {
                tracing::warn!("cannot read the job names searched: {e}");
            }
        });
    } else {
        info!("serving logs and store paths to the other processes at {}", config.cluster_url());
    }
    let header_timeout = std::time::Duration::from_secs(config.web.header_timeout_secs);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let mut web_stopping = stopping.clone();
    crate::web::serve::serve(
        listener,
        router(state),
        header_timeout,
        async move {
            let _ = web_stopping.wait_for(|stop| *stop).await;
        },
        std::time::Duration::from_secs(10),
    )
    .await;
    // Stopping the roles kills the builds the queue runner started; they
    // are retried by whichever process runs the queue next.
    let _ = cluster_task.await;
    watch.abort();
    if let Some(task) = wake_ups {
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
    let opened = async {
        let db = Db::connect_with(&url, 16, idle_transactions(config)).await?;
        db.migrate().await?;
        Ok::<_, sea_orm::DbErr>(db)
    };
    opened.await.with_context(|| format!("cannot open the database {}", redact(&url)))
}

/// How long PostgreSQL lets a transaction sit idle before ending it: a
/// process stopped inside one holds its locks, and its role's lease cannot
/// be taken over, until then. Never shorter than half a minute, which no
/// transaction of Orthrus sits idle for.
fn idle_transactions(config: &Config) -> std::time::Duration {
    std::time::Duration::from_secs(config.cluster.lease_secs.max(30))
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
