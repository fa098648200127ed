//! Wake-ups between processes: `NOTIFY` on one of `WakeChannel`'s
//! channels where a loop must look again (a push, builds queued, events
//! written), `LISTEN` in every process, which wakes its own loop. A
//! dropped connection may have lost notifications: on reconnecting every
//! loop here is woken once.

use std::time::Duration;

use sea_orm::sqlx::postgres::PgListener;
use tracing::{debug, warn};

use crate::db::{Db, WakeChannel};
use crate::domain::Wake;

/// The loops of this process that other processes may wake.
#[derive(Clone)]
pub struct Wakes {
    pub evaluate: Wake,
    pub queue: Wake,
}

impl Wakes {
    fn here(&self, db: &Db, channel: WakeChannel) {
        match channel {
            WakeChannel::Evaluate => self.evaluate.wake_here(),
            WakeChannel::Queue => self.queue.wake_here(),
            WakeChannel::Events => db.events_written_elsewhere(),
        }
    }

    fn all_here(&self, db: &Db) {
        for channel in WakeChannel::ALL {
            self.here(db, channel);
        }
    }
}

/// On PostgreSQL: makes `wakes` also wake the other processes, and runs
/// the listener that wakes this one's; `None` on SQLite, where every loop
/// is in this process.
pub fn carry_wake_ups(db: &Db, wakes: Wakes) -> Option<tokio::task::JoinHandle<()>> {
    db.postgres_pool()?;
    for (wake, channel) in [(&wakes.evaluate, WakeChannel::Evaluate), (&wakes.queue, WakeChannel::Queue)] {
        let db = db.clone();
        wake.also_wake_others(move || {
            let db = db.clone();
            tokio::spawn(async move {
                if let Err(e) = db.wake_others(channel).await {
                    // The others poll: this only delays them.
                    debug!("cannot wake the other processes on {}: {e}", channel.name());
                }
            });
        });
    }
    Some(tokio::spawn(listen(db.clone(), wakes)))
}

async fn listen(db: Db, wakes: Wakes) {
    let channels: Vec<&str> = WakeChannel::ALL.iter().map(|c| c.name()).collect();
    loop {
        let Some(pool) = db.postgres_pool() else { return };
        let listening = async {
            let mut listener = PgListener::connect_with(pool).await?;
            listener.listen_all(channels.iter().copied()).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        let mut listener = match listening.await {
            Ok(listener) => listener,
            Err(e) => {
                warn!("cannot listen for other processes' wake-ups (polling meanwhile): {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        wakes.all_here(&db);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Some(channel) = WakeChannel::from_name(notification.channel()) {
                        wakes.here(&db, channel);
                    }
                }
                // The connection dropped; the next call reconnects and
                // listens again. What was sent meanwhile is lost.
                Ok(None) => wakes.all_here(&db),
                Err(e) => {
                    warn!("lost the connection that hears other processes' wake-ups: {e}");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
