//! SQLite: `/search` by a piece of a job name (migration 21).
//!
//! The jobsets' distinct job names (`jobset_jobs`, a few hundred thousand
//! at most, against millions of builds) are held in memory, lower-cased
//! one after another in one buffer, and a query is found in it with
//! `memchr`'s substring search: about a millisecond for 150,000 names,
//! where FTS5 read the whole posting list of each of a long query's
//! trigrams (see the migration). Each process reads the rows that are new
//! or moved since it last looked (`last_build_id` only grows: the
//! background writer of `search_index.rs` moves it, in build order) before
//! each search, so it finds what another process recorded.
//!
//! The builds of the names found are then read newest first, exactly:
//! names are taken in the order of their newest build, a chunk at a time,
//! each name's newest builds read from the `(jobset_id, job, id)` index,
//! until the next name's newest build is older than every build kept. A
//! common piece of a name (`python`) matches thousands of names but stops
//! after the first chunk.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use tokio::sync::Mutex;

use super::{Db, DbResult};

/// Names whose builds one statement reads (a `UNION ALL` of one indexed
/// walk each; SQLite allows 500 terms in a compound select).
const NAMES_PER_STATEMENT: usize = 100;

/// Names probed for one search at most: bounded work for an anonymous
/// visitor whatever the query. Only names whose newest build was deleted
/// (by retention) are ever probed for nothing, so the bound matters only
/// where thousands of those come first.
const NAMES_PROBED: usize = 5 * NAMES_PER_STATEMENT;

/// The job names of every jobset, as last read from `jobset_jobs`.
#[derive(Default)]
pub(super) struct JobNames {
    names: Mutex<Names>,
}

impl std::fmt::Debug for JobNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobNames").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Names {
    /// The highest `last_build_id` read: rows above it are new or moved.
    seen_up_to: i64,
    /// A row's `id` → its slot in the lists below.
    slot_of: HashMap<i64, usize>,
    jobset: Vec<i64>,
    /// Each name's newest build, as last read.
    newest: Vec<i64>,
    /// Where each name starts in `text` and `lower`; each ends with `\n`.
    start: Vec<usize>,
    text: String,
    /// `text` with ASCII letters lower-cased (the same length, the same
    /// offsets; a query is ASCII, see `SearchQuery`), as SQL's `LIKE` does.
    lower: Vec<u8>,
}

/// A job name found, with its newest build (an upper bound: that build may
/// have been deleted since).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    newest: i64,
    jobset_id: i64,
    name: String,
}

impl Names {
    fn add(&mut self, id: i64, jobset_id: i64, name: &str, newest: i64) {
        self.seen_up_to = self.seen_up_to.max(newest);
        if let Some(&slot) = self.slot_of.get(&id) {
            self.newest[slot] = newest;
            return;
        }
        self.slot_of.insert(id, self.jobset.len());
        self.jobset.push(jobset_id);
        self.newest.push(newest);
        self.start.push(self.text.len());
        // A name holds no newline in practice; if one did, it would only
        // split that name in two for matching.
        self.text.push_str(name);
        self.text.push('\n');
        self.lower.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        self.lower.push(b'\n');
    }

    /// The names holding `query` (ASCII, case-insensitive), newest build
    /// first, the first [`NAMES_PROBED`] of them: a common piece of a name
    /// matches thousands, which are ordered but not copied.
    fn matching(&self, query: &str) -> Vec<Found> {
        let needle = query.to_ascii_lowercase();
        let mut slots: Vec<usize> = memchr::memmem::find_iter(&self.lower, needle.as_bytes())
            .map(|at| self.start.partition_point(|&start| start <= at) - 1)
            .collect();
        // Hits come in order: a name matched twice is two neighbours.
        slots.dedup();
        slots.sort_unstable_by_key(|&slot| std::cmp::Reverse(self.newest[slot]));
        slots.truncate(NAMES_PROBED);
        slots
            .into_iter()
            .map(|slot| {
                let end = self.start.get(slot + 1).copied().unwrap_or(self.text.len()) - 1;
                Found {
                    newest: self.newest[slot],
                    jobset_id: self.jobset[slot],
                    name: self.text[self.start[slot]..end].to_owned(),
                }
            })
            .collect()
    }
}

impl Db {
    /// The newest `limit` builds whose job name contains `query`
    /// (case-insensitive), newest first.
    pub(super) async fn builds_by_job_name(&self, query: &str, limit: u64) -> DbResult<Vec<i64>> {
        let found = {
            let mut names = self.job_names.names.lock().await;
            self.read_new_job_names(&mut names).await?;
            names.matching(query)
        };
        self.newest_builds_of(&found, limit as usize).await
    }

    /// Reads the job names a search matches (SQLite; nothing to do on
    /// PostgreSQL, which matches them in its own index).
    pub async fn load_job_names(&self) -> DbResult<()> {
        if self.backend() == DbBackend::Sqlite {
            let mut names = self.job_names.names.lock().await;
            self.read_new_job_names(&mut names).await?;
        }
        Ok(())
    }

    /// Reads the rows of `jobset_jobs` new or moved since `names` last did.
    async fn read_new_job_names(&self, names: &mut Names) -> DbResult<()> {
        let rows = self
            .read()
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "SELECT id, jobset_id, name, last_build_id FROM jobset_jobs WHERE last_build_id > ?1",
                [names.seen_up_to.into()],
            ))
            .await?;
        for row in rows {
            let name: String = row.try_get("", "name")?;
            names.add(row.try_get("", "id")?, row.try_get("", "jobset_id")?, &name, row.try_get("", "last_build_id")?);
        }
        Ok(())
    }

    /// The newest `limit` builds of these names (newest build first, at
    /// most [`NAMES_PROBED`]).
    async fn newest_builds_of(&self, names: &[Found], limit: usize) -> DbResult<Vec<i64>> {
        let mut kept: Vec<i64> = Vec::new();
        for chunk in names.chunks(NAMES_PER_STATEMENT) {
            // Names come newest first: once the next one's newest build is
            // older than every build kept, no later name has a newer one.
            if kept.len() >= limit && kept.last().is_some_and(|&oldest| chunk[0].newest < oldest) {
                break;
            }
            let one = "SELECT id FROM (SELECT id FROM builds WHERE jobset_id = ? AND job = ? ORDER BY id DESC LIMIT ?)";
            let sql = vec![one; chunk.len()].join(" UNION ALL ");
            let values: Vec<Value> =
                chunk.iter().flat_map(|n| [n.jobset_id.into(), n.name.clone().into(), (limit as i64).into()]).collect();
            let rows =
                self.read().query_all_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)).await?;
            let ids = rows.iter().map(|row| row.try_get("", "id")).collect::<Result<Vec<i64>, _>>()?;
            kept = super::search::newest_of(kept, ids, limit as u64);
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{eval, fresh_db, job, main_jobset};
    use super::*;

    /// The newest builds of every name matched, newest first, past the
    /// first statement's names; a name's older builds count too; another
    /// handle on the database (another process) finds names written after
    /// it first searched.
    #[tokio::test]
    async fn builds_of_the_names_found_newest_first() {
        let (dir, db) = fresh_db().await;
        let jobset = main_jobset(&db).await;
        let names = NAMES_PER_STATEMENT * 2 + 50;
        let first = eval(&db, jobset.id, 1, (0..names).map(|i| job(&format!("lib{i:03}"), "a")).collect()).await;
        let second = eval(&db, jobset.id, 2, vec![job("lib007", "b"), job("other", "b")]).await;
        db.merge_search_index().await.unwrap();
        let newest_five = [second[0], first[names - 1], first[names - 2], first[names - 3], first[names - 4]];
        assert_eq!(db.builds_by_job_name("LIB", 5).await.unwrap(), newest_five);
        assert_eq!(db.builds_by_job_name("lib007", 10).await.unwrap(), [second[0], first[7]]);
        assert_eq!(db.builds_by_job_name("lib", 1000).await.unwrap().len(), names + 1);
        assert_eq!(db.builds_by_job_name("nothing", 10).await.unwrap(), Vec::<i64>::new());

        let other = Db::connect(&format!("sqlite://{}", dir.path().join("db.sqlite").display())).await.unwrap();
        assert_eq!(other.builds_by_job_name("lib007", 10).await.unwrap(), [second[0], first[7]]);
        let third = eval(&db, jobset.id, 3, vec![job("lib007", "c"), job("newcomer", "c")]).await;
        db.merge_search_index().await.unwrap();
        assert_eq!(other.builds_by_job_name("lib007", 10).await.unwrap(), [third[0], second[0], first[7]]);
        assert_eq!(other.builds_by_job_name("comer", 10).await.unwrap(), [third[1]]);
    }

    fn names(rows: &[(i64, i64, &str, i64)]) -> Names {
        let mut names = Names::default();
        for &(id, jobset, name, newest) in rows {
            names.add(id, jobset, name, newest);
        }
        names
    }

    fn matched(names: &Names, query: &str) -> Vec<(String, i64)> {
        names.matching(query).into_iter().map(|f| (f.name, f.newest)).collect()
    }

    /// Anywhere in a name, any case, each name once, newest build first;
    /// not across two names.
    #[test]
    fn a_piece_of_a_name_finds_it_newest_first() {
        let names = names(&[
            (1, 1, "python311Packages.numpy", 10),
            (2, 1, "hello", 30),
            (3, 2, "python312Packages.numpy-stl", 20),
            (4, 1, "nonono", 5),
        ]);
        assert_eq!(
            matched(&names, "NumPy"),
            [("python312Packages.numpy-stl".to_owned(), 20), ("python311Packages.numpy".to_owned(), 10)]
        );
        assert_eq!(matched(&names, "no"), [("nonono".to_owned(), 5)]);
        assert_eq!(matched(&names, "numpyhello"), []);
        assert_eq!(matched(&names, "ohello"), []);
        assert_eq!(matched(&names, "hello"), [("hello".to_owned(), 30)]);
    }

    /// A row read again (a new build of the name) moves its newest build
    /// and adds no second name.
    #[test]
    fn a_name_read_again_moves_its_newest_build() {
        let mut names = names(&[(1, 1, "hello", 10), (2, 1, "world", 20)]);
        names.add(1, 1, "hello", 40);
        assert_eq!(names.seen_up_to, 40);
        assert_eq!(matched(&names, "o"), [("hello".to_owned(), 40), ("world".to_owned(), 20)]);
        assert_eq!(names.text, "hello\nworld\n");
    }
}
