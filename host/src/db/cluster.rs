//! Several processes on one database: who runs (`cluster_members`) and who
//! holds each elected role (`cluster_leases`), and the fence every write
//! of a role's holder passes.
//!
//! A lease row names its holder and a `term` that grows at every change
//! of holder. A holder's write transaction first reads its lease row with
//! `FOR KEY SHARE` and finds its own term there, or fails; a standby takes
//! a lease only after `SELECT … FOR UPDATE`, which waits for those
//! transactions to end. So a write either commits before the takeover or
//! sees the new term and rolls back: two processes never both write as the
//! holder, however long one of them was stopped. The holder's renewal is a
//! plain `UPDATE` (a no-key lock), which its own fenced transactions do not
//! hold up. Expiry is measured in the database's clock, never compared
//! across hosts.
//!
//! SQLite runs one process: there are no leases there, and no fence.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait, Value};

use super::{Db, DbError, DbResult, now};
use crate::domain::{ProcessRole, ProcessRoles};

/// One process of the cluster, named anew at each start.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(String);

impl MemberId {
    /// The id of a process started now on `host` as `pid`: unique, since
    /// one host never runs two processes with one pid in one microsecond.
    pub fn new(host: &str, pid: u32) -> MemberId {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or_default();
        MemberId(format!("{host}:{pid}:{micros:x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a process says of itself at each heartbeat.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub id: MemberId,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub roles: ProcessRoles,
    pub url: String,
    pub started_at: i64,
}

/// A process as the database knows it, with the roles it holds now.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: MemberId,
    pub host: String,
    pub pid: i64,
    pub version: String,
    /// The roles it may run (as it was started with).
    pub roles: ProcessRoles,
    pub url: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// The elected roles whose lease it holds now.
    pub holds: ProcessRoles,
}

impl Member {
    /// The elected roles it runs when a holder goes away.
    pub fn standing_by(&self) -> ProcessRoles {
        self.roles.elected().filter(|role| !self.holds.contains(*role)).collect()
    }
}

/// The lease a holder acts under: its role, itself and the term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTerm {
    pub role: ProcessRole,
    pub holder: MemberId,
    pub term: i64,
}

/// A point on the clock that leases are kept by here: `CLOCK_BOOTTIME`,
/// which, unlike the monotonic clock, goes on while the process is
/// stopped and while the machine is suspended — a holder suspended past
/// its lease must not believe it still holds it when it wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeaseInstant(Duration);

impl LeaseInstant {
    pub fn now() -> LeaseInstant {
        let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime only writes the timespec it is given.
        let done = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut time) };
        assert_eq!(done, 0, "CLOCK_BOOTTIME is there on every Linux since 2.6.39");
        LeaseInstant(Duration::new(time.tv_sec as u64, time.tv_nsec as u32))
    }
}

impl std::ops::Add<Duration> for LeaseInstant {
    type Output = LeaseInstant;
    fn add(self, other: Duration) -> LeaseInstant {
        LeaseInstant(self.0 + other)
    }
}

/// A holder's right to write as its role, checked by every write
/// transaction of a fenced [`Db`]: first against the holder's own clock
/// (the lease cannot have outlived the time since its last renewal), then
/// against the lease row.
#[derive(Debug, Clone)]
pub struct Fence {
    lease: LeaseTerm,
    /// Until when the lease surely holds, by [`LeaseInstant`]; `None`:
    /// revoked.
    valid_until: Arc<Mutex<Option<LeaseInstant>>>,
}

impl Fence {
    pub fn new(lease: LeaseTerm, valid_until: LeaseInstant) -> Fence {
        Fence { lease, valid_until: Arc::new(Mutex::new(Some(valid_until))) }
    }

    pub fn lease(&self) -> &LeaseTerm {
        &self.lease
    }

    /// After a renewal: it holds until then (never shortened).
    pub fn extend(&self, until: LeaseInstant) {
        let mut valid = self.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = valid.as_mut() {
            *current = (*current).max(until);
        }
    }

    /// The lease is lost or given up: nothing passes any more.
    pub fn revoke(&self) {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether the holder's own clock still vouches for the lease.
    pub fn locally_valid(&self) -> bool {
        self.valid_until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|until| LeaseInstant::now() < until)
    }

    fn lost(&self) -> DbError {
        DbError::Fenced { role: self.lease.role, term: self.lease.term }
    }
}

/// The channels processes wake each other on (`LISTEN`/`NOTIFY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeChannel {
    /// A push or a jobset change: the evaluator looks for due jobsets.
    Evaluate,
    /// Builds were queued, restarted, cancelled or bumped.
    Queue,
    /// Events were written: the notifier and the publisher read them.
    Events,
}

impl WakeChannel {
    pub const ALL: [WakeChannel; 3] = [WakeChannel::Evaluate, WakeChannel::Queue, WakeChannel::Events];

    pub fn name(self) -> &'static str {
        match self {
            WakeChannel::Evaluate => "orthrus_evaluate",
            WakeChannel::Queue => "orthrus_queue",
            WakeChannel::Events => "orthrus_events",
        }
    }

    pub fn from_name(name: &str) -> Option<WakeChannel> {
        WakeChannel::ALL.into_iter().find(|channel| channel.name() == name)
    }
}

/// The database's clock in milliseconds (PostgreSQL).
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

fn pg(sql: impl Into<String>, values: impl IntoIterator<Item = Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql.into(), values)
}

impl Db {
    /// This handle, writing as the holder of `fence`'s lease: each write
    /// transaction fails with [`DbError::Fenced`] once another process took
    /// it. Reads are not fenced.
    pub fn fenced(&self, fence: Fence) -> Db {
        let mut db = self.clone();
        db.fence = Some(fence);
        db
    }

    /// Whether this handle may still act as its role's holder (always, for
    /// a handle without a fence), by this process's clock: checked before
    /// acting outside the database — a delivery, an upload, a root —,
    /// where no transaction refuses. The clock suffices there: a standby
    /// takes the lease only after it expired in the database, which is
    /// never before it expired here.
    pub fn check_fence(&self) -> DbResult<()> {
        match &self.fence {
            Some(fence) if !fence.locally_valid() => Err(fence.lost()),
            _ => Ok(()),
        }
    }

    /// Inside a write transaction: the lease is still this holder's, and
    /// stays so until the transaction ends.
    pub(super) async fn pass_fence(&self, txn: &sea_orm::DatabaseTransaction) -> DbResult<()> {
        let Some(fence) = &self.fence else { return Ok(()) };
        if !fence.locally_valid() {
            return Err(fence.lost());
        }
        if txn.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let lease = fence.lease();
        let row = txn
            .query_one_raw(pg(
                "SELECT term FROM cluster_leases WHERE role = $1 AND holder = $2 AND term = $3 FOR KEY SHARE",
                [lease.role.as_str().into(), lease.holder.as_str().into(), lease.term.into()],
            ))
            .await?;
        if row.is_none() {
            fence.revoke();
            return Err(fence.lost());
        }
        Ok(())
    }

    /// Records this process as alive (inserting its row the first time).
    pub async fn heartbeat(&self, me: &MemberInfo) -> DbResult<()> {
        let backend = self.backend();
        let sql = placeholders(
            backend,
            "INSERT INTO cluster_members (id, host, pid, version, roles, url, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, url = excluded.url",
        );
        let values: [Value; 8] = [
            me.id.as_str().into(),
            me.host.as_str().into(),
            i64::from(me.pid).into(),
            me.version.as_str().into(),
            me.roles.to_string().into(),
            me.url.as_str().into(),
            me.started_at.into(),
            now().into(),
        ];
        self.write().execute_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
        Ok(())
    }

    /// Forgets members whose last heartbeat is older than `before`.
    pub async fn forget_members(&self, before: i64) -> DbResult<u64> {
        let backend = self.backend();
        let sql = placeholders(backend, "DELETE FROM cluster_members WHERE heartbeat_at < $1");
        let done = self.write().execute_raw(Statement::from_sql_and_values(backend, sql, [before.into()])).await?;
        Ok(done.rows_affected())
    }

    /// Leaves the cluster: gives up every lease (a standby takes over at its
    /// next look, without waiting for expiry) and removes its row.
    pub async fn leave_cluster(&self, me: &MemberId) -> DbResult<()> {
        let backend = self.backend();
        if backend == DbBackend::Postgres {
            self.write()
                .execute_raw(pg("UPDATE cluster_leases SET expires_ms = 0 WHERE holder = $1", [me.as_str().into()]))
                .await?;
        }
        let sql = placeholders(backend, "DELETE FROM cluster_members WHERE id = $1");
        self.write().execute_raw(Statement::from_sql_and_values(backend, sql, [me.as_str().into()])).await?;
        Ok(())
    }

    /// Every member, oldest first, with the leases each holds now. On
    /// SQLite the one process holds every role it runs.
    pub async fn cluster_members(&self) -> DbResult<Vec<Member>> {
        let rows = self
            .read()
            .query_all_raw(Statement::from_string(
                self.backend(),
                "SELECT id, host, pid, version, roles, url, started_at, heartbeat_at FROM cluster_members \
                 ORDER BY started_at, id",
            ))
            .await?;
        let held = self.held_leases().await?;
        let mut members = Vec::with_capacity(rows.len());
        for row in rows {
            let id = MemberId(row.try_get("", "id")?);
            let roles = ProcessRoles::parse_list(&row.try_get::<String>("", "roles")?).unwrap_or(ProcessRoles::all());
            let holds = match &held {
                Some(held) => held.iter().filter(|lease| lease.holder == id).map(|lease| lease.role).collect(),
                None => roles.elected().collect(),
            };
            members.push(Member {
                id,
                host: row.try_get("", "host")?,
                pid: row.try_get("", "pid")?,
                version: row.try_get("", "version")?,
                roles,
                url: row.try_get("", "url")?,
                started_at: row.try_get("", "started_at")?,
                heartbeat_at: row.try_get("", "heartbeat_at")?,
                holds,
            });
        }
        Ok(members)
    }

    /// The leases held now (unexpired); `None` on SQLite, which has none.
    async fn held_leases(&self) -> DbResult<Option<Vec<LeaseTerm>>> {
        if self.backend() != DbBackend::Postgres {
            return Ok(None);
        }
        let rows = self
            .read()
            .query_all_raw(pg(
                format!("SELECT role, holder, term FROM cluster_leases WHERE expires_ms > {DB_NOW_MS}"),
                [],
            ))
            .await?;
        let mut leases = Vec::with_capacity(rows.len());
        for row in rows {
            let Ok(role) = row.try_get::<String>("", "role")?.parse() else { continue };
            leases.push(LeaseTerm {
                role,
                holder: MemberId(row.try_get("", "holder")?),
                term: row.try_get("", "term")?,
            });
        }
        Ok(Some(leases))
    }

    /// The member holding `role` now, if any (on SQLite: the one process).
    pub async fn holder_of(&self, role: ProcessRole) -> DbResult<Option<Member>> {
        Ok(self.cluster_members().await?.into_iter().find(|member| member.holds.contains(role)))
    }

    /// Takes `role` for `me` for `lease` if nobody holds it or its holder's
    /// lease ran out; returns the new term. Waits for the old holder's
    /// write transactions in flight to end first (see the module's doc).
    pub async fn try_acquire(&self, role: ProcessRole, me: &MemberId, lease: Duration) -> DbResult<Option<LeaseTerm>> {
        let txn = self.write().begin().await?;
        // A holder stopped inside a transaction holds its fence lock until
        // PostgreSQL ends that transaction (`idle_in_transaction_session_
        // timeout`, set on every connection to the lease's length): wait a
        // little, then give up until the next look rather than stall the
        // loop that renews this process's other leases.
        txn.execute_raw(pg("SET LOCAL lock_timeout = '1s'", [])).await?;
        txn.execute_raw(pg(
            "INSERT INTO cluster_leases (role, holder, term, acquired_at, expires_ms) VALUES ($1, '', 0, 0, 0) \
             ON CONFLICT (role) DO NOTHING",
            [role.as_str().into()],
        ))
        .await?;
        let row = txn
            .query_one_raw(pg(
                format!(
                    "SELECT holder, term, expires_ms > {DB_NOW_MS} AS live FROM cluster_leases WHERE role = $1 FOR UPDATE"
                ),
                [role.as_str().into()],
            ))
            .await?
            .ok_or_else(|| DbError::Conflict(format!("no lease row for {role}")))?;
        let holder: String = row.try_get("", "holder")?;
        let term: i64 = row.try_get("", "term")?;
        let live: bool = row.try_get("", "live")?;
        if live && holder != me.as_str() {
            return Ok(None);
        }
        let next = term + 1;
        txn.execute_raw(pg(
            format!(
                "UPDATE cluster_leases SET holder = $2, term = $3, acquired_at = $4, expires_ms = {DB_NOW_MS} + $5 \
                 WHERE role = $1"
            ),
            [role.as_str().into(), me.as_str().into(), next.into(), now().into(), millis(lease).into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(Some(LeaseTerm { role, holder: me.clone(), term: next }))
    }

    /// Extends a lease still held under its term; `false`: it was taken.
    pub async fn renew_lease(&self, held: &LeaseTerm, lease: Duration) -> DbResult<bool> {
        let done = self
            .write()
            .execute_raw(pg(
                format!(
                    "UPDATE cluster_leases SET expires_ms = {DB_NOW_MS} + $4 WHERE role = $1 AND holder = $2 AND term = $3"
                ),
                [held.role.as_str().into(), held.holder.as_str().into(), held.term.into(), millis(lease).into()],
            ))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a lease up at once (its role stopped here): a standby need
    /// not wait for it to run out.
    pub async fn release_lease(&self, held: &LeaseTerm) -> DbResult<()> {
        self.write()
            .execute_raw(pg(
                "UPDATE cluster_leases SET expires_ms = 0 WHERE role = $1 AND holder = $2 AND term = $3",
                [held.role.as_str().into(), held.holder.as_str().into(), held.term.into()],
            ))
            .await?;
        Ok(())
    }

    /// Wakes the processes listening on `channel` (PostgreSQL only: on
    /// SQLite every waiter is in this process and was woken directly).
    pub async fn wake_others(&self, channel: WakeChannel) -> DbResult<()> {
        if self.backend() == DbBackend::Postgres {
            self.write().execute_raw(pg("SELECT pg_notify($1, '')", [channel.name().into()])).await?;
        }
        Ok(())
    }

    /// The same inside a transaction: sent when it commits, not before.
    pub(super) async fn wake_others_on_commit(
        txn: &sea_orm::DatabaseTransaction,
        channel: WakeChannel,
    ) -> DbResult<()> {
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_raw(pg("SELECT pg_notify($1, '')", [channel.name().into()])).await?;
        }
        Ok(())
    }

    /// The PostgreSQL pool, for `LISTEN` (which needs a connection of its
    /// own); `None` on SQLite.
    pub fn postgres_pool(&self) -> Option<&sea_orm::sqlx::PgPool> {
        match self.backend() {
            DbBackend::Postgres => Some(self.write().get_postgres_connection_pool()),
            _ => None,
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// `$1, $2, …` as the backend writes them (SQLite: `?`, in order).
fn placeholders(backend: DbBackend, sql: &str) -> String {
    if backend == DbBackend::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_question_marks_on_sqlite_in_order() {
        assert_eq!(placeholders(DbBackend::Sqlite, "a = $1 AND b = $12"), "a = ? AND b = ?");
        assert_eq!(placeholders(DbBackend::Postgres, "a = $1"), "a = $1");
    }

    #[test]
    fn a_revoked_or_outlived_fence_lets_nothing_pass() {
        let lease = LeaseTerm { role: ProcessRole::Queue, holder: MemberId::new("here", 1), term: 3 };
        let fence = Fence::new(lease.clone(), LeaseInstant::now() + Duration::from_secs(60));
        assert!(fence.locally_valid());
        fence.extend(LeaseInstant::now());
        assert!(fence.locally_valid(), "a renewal never shortens the lease");
        fence.revoke();
        assert!(!fence.locally_valid());
        let outlived = Fence::new(lease, LeaseInstant::now());
        assert!(!outlived.locally_valid());
    }

    #[tokio::test]
    async fn members_and_their_roles_on_sqlite() {
        let (_dir, db) = crate::db::test_support::fresh_db().await;
        let me = MemberInfo {
            id: MemberId::new("here", 1),
            host: "here".into(),
            pid: 7,
            version: "1".into(),
            roles: ProcessRoles::all(),
            url: "http://127.0.0.1:1".into(),
            started_at: now(),
        };
        db.heartbeat(&me).await.unwrap();
        db.heartbeat(&me).await.unwrap();
        let members = db.cluster_members().await.unwrap();
        assert_eq!(members.len(), 1);
        assert!(members[0].holds.contains(ProcessRole::Queue), "SQLite's one process holds every role");
        assert!(!members[0].holds.contains(ProcessRole::Web), "web is not elected");
        assert!(members[0].standing_by().is_empty());
        db.leave_cluster(&me.id).await.unwrap();
        assert!(db.cluster_members().await.unwrap().is_empty());
    }
}
