//! Several `orthrus serve` processes on one PostgreSQL. Any number serve
//! the web; each other role (evaluator, queue, notifier, publisher,
//! maintenance) runs in one process at a time, the holder of its lease
//! (`db/cluster.rs`). Every process that may run a role stands by for it:
//! when the holder stops renewing (it died, hangs, or lost the database),
//! the lease runs out and a standby takes it with a new term, then starts
//! the role from what the database says. The old holder's writes carry its
//! term and fail from then on (the fence), and it stops the role's tasks
//! at its next look.
//!
//! Processes wake each other through `LISTEN`/`NOTIFY` (`wake.rs`); every
//! loop also polls, so a lost wake-up only delays.
//!
//! On SQLite one process runs every role: no leases, no fence.

mod wake;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;
use crate::db::{Db, Fence, LeaseInstant, MemberId, MemberInfo, now};
use crate::domain::{ProcessRole, ProcessRoles};
pub use wake::{Wakes, carry_wake_ups};

/// How a role is started: its tasks, given the database handle its writes
/// go through (fenced by its lease). Aborting them stops the role.
pub struct RoleUnit {
    pub role: ProcessRole,
    pub start: Box<dyn Fn(Db) -> Vec<JoinHandle<()>> + Send + Sync>,
}

impl RoleUnit {
    pub fn new(role: ProcessRole, start: impl Fn(Db) -> Vec<JoinHandle<()>> + Send + Sync + 'static) -> RoleUnit {
        RoleUnit { role, start: Box::new(start) }
    }
}

/// A role this process runs now.
struct Held {
    /// `None` on SQLite (held for good).
    fence: Option<Fence>,
    tasks: Vec<JoinHandle<()>>,
}

impl Held {
    fn stop(self) {
        if let Some(fence) = &self.fence {
            fence.revoke();
        }
        for task in self.tasks {
            task.abort();
        }
    }
}

/// This process as a member of the cluster.
pub struct Cluster {
    db: Db,
    roles_db: Db,
    me: MemberInfo,
    lease: Duration,
    units: Vec<RoleUnit>,
}

/// Members whose heartbeat is older than this are forgotten.
const FORGET_AFTER_SECS: i64 = 24 * 3600;

impl Cluster {
    /// This process, running `roles`, with the units of its elected roles
    /// (those it can run: a process without a usable Nix gives none for
    /// the queue, and does not stand by for it). `db` keeps the leases and
    /// the heartbeat: a pool of its own, so that a busy web cannot hold up
    /// a renewal; the units get fenced clones of `roles_db`.
    pub fn new(db: Db, roles_db: Db, config: &Config, roles: ProcessRoles, units: Vec<RoleUnit>) -> Cluster {
        let host = hostname();
        let pid = std::process::id();
        let mut me = MemberInfo {
            id: MemberId::new(&host, pid),
            host,
            pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            roles,
            // Where the others reach it directly, never through a load
            // balancer (which may lead to a process without the store).
            url: config.cluster_url(),
            started_at: now(),
        };
        let roles = units
            .iter()
            .map(|unit| unit.role)
            .filter(|role| roles.contains(*role))
            .chain(roles.contains(ProcessRole::Web).then_some(ProcessRole::Web));
        me.roles = roles.collect();
        let units = units.into_iter().filter(|unit| me.roles.contains(unit.role)).collect();
        Cluster { db, roles_db, me, lease: Duration::from_secs(config.cluster.lease_secs), units }
    }

    pub fn id(&self) -> &MemberId {
        &self.me.id
    }

    /// The roles it runs: those asked for that it can run.
    pub fn roles(&self) -> ProcessRoles {
        self.me.roles
    }

    /// Heartbeats, takes roles as they come free and keeps them, until
    /// `shutdown` says so; then stops its roles and leaves (its leases end
    /// at once, so a standby need not wait for them to run out).
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let elected = self.db.backend() == sea_orm::DbBackend::Postgres;
        let mut held: BTreeMap<ProcessRole, Held> = BTreeMap::new();
        // A quarter of the lease: three renewals may fail before it ends.
        let tick = self.lease / 4;
        let mut last_forget = 0;
        loop {
            if let Err(e) = self.db.heartbeat(&self.me).await {
                warn!("cannot record this process's heartbeat: {e}");
            }
            if now() - last_forget > 3600 {
                last_forget = now();
                let _ = self.db.forget_members(now() - FORGET_AFTER_SECS).await;
            }
            for unit in &self.units {
                if !elected {
                    held.entry(unit.role)
                        .or_insert_with(|| Held { fence: None, tasks: (unit.start)(self.roles_db.clone()) });
                    continue;
                }
                match held.remove(&unit.role) {
                    Some(role) => {
                        if let Some(role) = self.keep(unit.role, role).await {
                            held.insert(unit.role, role);
                        }
                    }
                    None => {
                        if let Some(role) = self.take(unit).await {
                            held.insert(unit.role, role);
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        for (_, role) in std::mem::take(&mut held) {
            role.stop();
        }
        if let Err(e) = self.db.leave_cluster(&self.me.id).await {
            warn!("cannot leave the cluster (standbys take over when the leases run out): {e}");
        }
    }

    /// Renews a held role's lease; `None` when it is lost (its tasks are
    /// stopped then).
    async fn keep(&self, role: ProcessRole, held: Held) -> Option<Held> {
        let fence = held.fence.clone()?;
        if held.tasks.iter().any(JoinHandle::is_finished) {
            // A task that ends (a panic, say) leaves the role half run:
            // give it up, so that this process or a standby starts it anew.
            warn!("a task of the {role} role ended; giving the role up");
            held.stop();
            let _ = self.db.release_lease(fence.lease()).await;
            return None;
        }
        let asked = LeaseInstant::now();
        match self.db.renew_lease(fence.lease(), self.lease).await {
            Ok(true) if fence.locally_valid() => {
                fence.extend(asked + self.lease);
                Some(held)
            }
            Ok(true) => {
                // Stopped longer than the lease yet not replaced: whatever
                // ran meanwhile was refused, so start afresh.
                warn!("the {role} role's lease ran out while this process was not running; starting it again");
                held.stop();
                None
            }
            Ok(false) => {
                warn!(term = fence.lease().term, "lost the {role} role to another process; standing by");
                held.stop();
                None
            }
            Err(e) if fence.locally_valid() => {
                warn!("cannot renew the {role} role's lease (will try again): {e}");
                Some(held)
            }
            Err(e) => {
                warn!("the {role} role's lease ran out without renewal ({e}); standing by");
                held.stop();
                None
            }
        }
    }

    /// Takes a role if it is free, and starts it.
    async fn take(&self, unit: &RoleUnit) -> Option<Held> {
        let asked = LeaseInstant::now();
        match self.db.try_acquire(unit.role, &self.me.id, self.lease).await {
            Ok(Some(lease)) => {
                info!(term = lease.term, "took the {} role", unit.role);
                let fence = Fence::new(lease, asked + self.lease);
                let tasks = (unit.start)(self.roles_db.fenced(fence.clone()));
                Some(Held { fence: Some(fence), tasks })
            }
            Ok(None) => None,
            Err(e) => {
                warn!("cannot ask for the {} role: {e}", unit.role);
                None
            }
        }
    }
}

/// This machine's name, for `/status`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
