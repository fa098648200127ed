//! The database: sea-orm entities and the queries each part needs, as typed
//! async functions. SQLite (WAL) in the data directory is the default,
//! PostgreSQL is chosen by a `postgres://` URL; both run the migrations of
//! `migrations/`.
//!
//! SQLite allows one writer at a time, and a transaction that reads first
//! and writes later can fail with "database is locked" when another writer
//! slipped in between. So on SQLite every write goes through a pool of
//! exactly one connection ([`Db::write`]) while reads use a wider pool;
//! on PostgreSQL both are the same pool.

mod builds;
pub(crate) mod cache;
mod cache_paths;
mod cluster;
mod declarative;
pub mod entities;
mod evals;
mod events;
mod gc;
mod job_names;
mod latest;
mod notifications;
mod overview;
mod per_job;
mod plugin_kv;
mod projects;
mod releases;
mod retention;
mod search;
mod search_index;
mod steps;
#[cfg(test)]
pub(crate) mod test_support;
mod users;
mod views;

use std::time::Duration;

use orthrus_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};

pub use builds::*;
pub use cluster::{Fence, LeaseInstant, LeaseTerm, Member, MemberId, MemberInfo, WakeChannel};
pub use declarative::*;
pub use evals::*;
pub use events::Event;
pub use gc::KeptBuild;
pub use notifications::*;
pub use overview::*;
pub use projects::*;
pub use releases::*;
pub use retention::Pruned;
pub use search::SearchResults;
pub use steps::*;
pub use users::*;
pub use views::*;

/// Handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    read: DatabaseConnection,
    write: DatabaseConnection,
    builds: std::sync::Arc<cache::BuildCache>,
    /// SQLite: the job names a search matches (`job_names.rs`).
    job_names: std::sync::Arc<job_names::JobNames>,
    /// Signalled after each commit that wrote events (see `events.rs`).
    events_written: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// The lease this handle writes under, for a role's holder (`cluster.rs`).
    fence: Option<Fence>,
}

/// The advisory lock key the migrations run under ("orthrus" in ASCII).
const MIGRATIONS_LOCK: i64 = 0x006f_7274_6872_7573;

/// Current time as Unix seconds, the unit of every time column.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Counting the queries a piece of work issues (a web page, say): every
/// query of the task inside [`counting`] adds to its count and time.
pub mod query_count {
    use std::cell::Cell;
    use std::future::Future;
    use std::time::Duration;

    /// Queries issued, and the time they took.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct QueryCount {
        pub queries: u32,
        pub time: Duration,
    }

    tokio::task_local! {
        static COUNT: Cell<QueryCount>;
    }

    /// Runs `work`, counting the queries it issues.
    pub async fn counting<F: Future>(work: F) -> (F::Output, QueryCount) {
        COUNT
            .scope(Cell::new(QueryCount::default()), async move {
                let output = work.await;
                (output, COUNT.with(Cell::get))
            })
            .await
    }

    /// The connections' callback: runs in the task that issued the query.
    pub(super) fn count(info: &sea_orm::metric::Info<'_>) {
        let _ = COUNT.try_with(|count| {
            let mut c = count.get();
            c.queries += 1;
            c.time += info.elapsed;
            count.set(c);
        });
    }
}

impl Db {
    /// Connects (creating the SQLite file if needed) without migrating.
    pub async fn connect(url: &str) -> Result<Db, DbErr> {
        Db::connect_with(url, 16, Duration::from_secs(60)).await
    }

    /// Connects with up to `connections` PostgreSQL connections, on which
    /// a transaction left idle (its process stopped) is ended after
    /// `idle_transactions`, releasing its locks: a role's lease cannot be
    /// taken over while its holder's fenced transaction holds them.
    pub async fn connect_with(url: &str, connections: u32, idle_transactions: Duration) -> Result<Db, DbErr> {
        if url.starts_with("sqlite:") {
            if let Some(parent) = sqlite_file(url).and_then(|f| std::path::Path::new(f).parent().map(ToOwned::to_owned))
            {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(&parent)
                        .map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", parent.display())))?;
                }
            }
            let mut read = Database::connect(sqlite_options(url, 8)).await?;
            let mut write = Database::connect(sqlite_options(url, 1)).await?;
            read.set_metric_callback(query_count::count);
            write.set_metric_callback(query_count::count);
            Ok(Db {
                read,
                write,
                builds: Default::default(),
                job_names: Default::default(),
                events_written: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
                fence: None,
            })
        } else {
            let mut options = ConnectOptions::new(url);
            let idle = format!("{}ms", idle_transactions.as_millis().max(1));
            options
                .max_connections(connections)
                .min_connections(1)
                // Every statement planned with its values: a plan made for
                // any value (what PostgreSQL switches to after five runs of
                // a prepared statement) cannot tell a page of 50 from a
                // million rows, nor an evaluation of 100 builds from one of
                // 100,000 (measured: an evaluation's first page, 10 ms
                // planned with its values, 233 ms with the generic plan).
                .map_sqlx_postgres_opts(move |o| {
                    o.options([
                        ("idle_in_transaction_session_timeout", idle.as_str()),
                        ("plan_cache_mode", "force_custom_plan"),
                    ])
                })
                .connect_timeout(Duration::from_secs(10))
                .acquire_timeout(Duration::from_secs(60))
                .sqlx_logging(false);
            let mut conn = Database::connect(options).await?;
            conn.set_metric_callback(query_count::count);
            Ok(Db {
                read: conn.clone(),
                write: conn,
                builds: Default::default(),
                job_names: Default::default(),
                events_written: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
                fence: None,
            })
        }
    }

    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Db, DbErr> {
        let db = Db::connect(url).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Applies the pending migrations. On PostgreSQL under a session
    /// advisory lock, so that processes starting at once migrate one after
    /// the other (the later ones find nothing to do).
    pub async fn migrate(&self) -> Result<(), DbErr> {
        if self.backend() != DbBackend::Postgres {
            return Migrator::up(&self.write, None).await;
        }
        use sea_orm::sqlx;
        let mut lock = self
            .write
            .get_postgres_connection_pool()
            .acquire()
            .await
            .map_err(|e| DbErr::Custom(format!("cannot take a connection for the migrations' lock: {e}")))?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATIONS_LOCK)
            .execute(&mut *lock)
            .await
            .map_err(|e| DbErr::Custom(format!("cannot lock the migrations: {e}")))?;
        let migrated = Migrator::up(&self.write, None).await;
        if let Err(e) = sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATIONS_LOCK).execute(&mut *lock).await {
            // The lock goes with the connection.
            lock.close_on_drop();
            tracing::warn!("cannot unlock the migrations: {e}");
        }
        migrated
    }

    /// Keeps SQLite's planner statistics current as the history grows
    /// (`PRAGMA optimize`, as SQLite advises for long-lived connections;
    /// sampled). PostgreSQL's autovacuum does this itself.
    pub async fn refresh_statistics(&self) -> DbResult<()> {
        if self.backend() == DbBackend::Sqlite {
            use sea_orm::ConnectionTrait;
            self.write.execute_unprepared("PRAGMA analysis_limit = 1000; PRAGMA optimize;").await?;
        }
        Ok(())
    }

    /// Migrations applied so far and those still pending.
    pub async fn migration_status(&self) -> Result<(Vec<String>, Vec<String>), DbErr> {
        let applied = Migrator::get_applied_migrations(&self.read).await?;
        let pending = Migrator::get_pending_migrations(&self.read).await?;
        Ok((
            applied.iter().map(|m| m.name().to_owned()).collect(),
            pending.iter().map(|m| m.name().to_owned()).collect(),
        ))
    }

    pub fn backend(&self) -> DbBackend {
        self.read.get_database_backend()
    }

    pub(crate) fn read(&self) -> &DatabaseConnection {
        &self.read
    }

    pub(crate) fn write(&self) -> &DatabaseConnection {
        &self.write
    }

    /// Starts a transaction that will write. On SQLite it takes the write
    /// lock at `BEGIN` (`BEGIN IMMEDIATE`): a deferred transaction that read
    /// first fails at once with "database is locked" when another process
    /// (such as `orthrus project apply` beside the server) wrote in between,
    /// whereas waiting for the lock at `BEGIN` honours the busy timeout.
    ///
    /// A fenced handle (a role's holder) checks its lease first and fails
    /// with [`DbError::Fenced`] when another process took it.
    pub(crate) async fn begin_write(&self) -> DbResult<sea_orm::DatabaseTransaction> {
        use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
        let txn = self
            .write
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?;
        self.pass_fence(&txn).await?;
        Ok(txn)
    }
}

/// Takes the row lock a later UPDATE of this row needs, first: on
/// PostgreSQL, inserting rows that reference it takes a weaker lock, and
/// upgrading that lock later deadlocks with a cascading DELETE waiting
/// between the two (deleting a project while its jobset's evaluation or a
/// build's step is recorded). SQLite has one writer: nothing to do.
pub(crate) async fn lock_row(txn: &sea_orm::DatabaseTransaction, table: &str, id: i64) -> Result<(), DbErr> {
    use sea_orm::ConnectionTrait;
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let sql = format!("SELECT 1 FROM {table} WHERE id = $1 FOR NO KEY UPDATE");
    txn.execute_raw(sea_orm::Statement::from_sql_and_values(DbBackend::Postgres, sql, [id.into()])).await?;
    Ok(())
}

fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let file = rest.split('?').next()?;
    (!file.is_empty() && file != ":memory:").then_some(file)
}

fn sqlite_options(url: &str, connections: u32) -> ConnectOptions {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(120))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(60))
        });
    options
}

/// Inserts happen in chunks so that no statement exceeds the bound
/// parameter limits of SQLite (32766) and PostgreSQL (65535).
pub(crate) const INSERT_CHUNK: usize = 500;

/// What can go wrong in a database call.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    /// The change contradicts what is stored (a name already taken, …).
    #[error("{0}")]
    Conflict(String),
    /// This process wrote as the holder of a role that another process has
    /// taken since (or its lease ran out): nothing was written.
    #[error("this process no longer holds the {role} role (term {term}); another process runs it")]
    Fenced { role: crate::domain::ProcessRole, term: i64 },
}

pub type DbResult<T> = Result<T, DbError>;

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectionTrait, Statement};

    /// Two processes on one SQLite file (the server and `orthrus project
    /// apply`): a transaction that reads, then writes after the other
    /// process wrote, must wait for the lock instead of failing with
    /// "database is locked".
    #[tokio::test]
    async fn write_transactions_wait_for_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let first = Db::connect(&url).await.unwrap();
        let second = Db::connect(&url).await.unwrap();
        let sql = |s: &str| Statement::from_string(DbBackend::Sqlite, s.to_owned());
        first.write().execute_raw(sql("CREATE TABLE t (n INTEGER)")).await.unwrap();

        let txn = first.begin_write().await.unwrap();
        txn.query_all_raw(sql("SELECT n FROM t")).await.unwrap();
        let other =
            tokio::spawn(async move { second.write().execute_raw(sql("INSERT INTO t VALUES (2)")).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(200)).await;
        txn.execute_raw(sql("INSERT INTO t VALUES (1)")).await.expect("the transaction keeps its lock");
        txn.commit().await.unwrap();
        other.await.unwrap().expect("the other process waited for the lock");
        let rows = first.read().query_all_raw(sql("SELECT n FROM t ORDER BY n")).await.unwrap();
        assert_eq!(rows.len(), 2);
    }
}
