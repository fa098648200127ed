//! Evaluations as Hydra's JSON objects, each with `builds`, the ids of all
//! its builds, written out while they are read.
//!
//! An evaluation of nixpkgs has 100,000 builds, and a page of
//! `/jobset/P/J/evals` ten evaluations: a million ids, 7 MB of JSON.
//! Gathered first and then serialized, that took 1.2–2.7 s before the
//! first byte and a hundred megabytes of `Value`s. Here the page's head
//! goes out at once, then each evaluation, its ids read a range of the
//! members' primary key at a time: the client reads while the server
//! writes, and the server holds one chunk.
//!
//! A database error after the head is sent cannot become an error status
//! any more: the body ends there, unfinished, and the error is logged, so
//! that no client takes a cut list for a whole one.

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::db::Db;

/// Ids read (and written) per query.
const IDS_PER_CHUNK: u64 = 20_000;

/// Chunks written ahead of a slow client at most.
const CHUNKS_AHEAD: usize = 4;

/// One evaluation's object, `builds` left out (written from its members).
pub struct EvalObject {
    pub eval_id: i64,
    pub fields: Map<String, Value>,
}

/// What the answer is: one evaluation's object, or a page object whose
/// `list_key` field lists them beside the page's own fields.
pub enum Shape {
    One(EvalObject),
    Page { head: Map<String, Value>, list_key: &'static str, evals: Vec<EvalObject> },
}

/// The streamed JSON answer.
pub fn respond(db: Db, shape: Shape) -> Response {
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_AHEAD);
    tokio::spawn(async move {
        let mut writer = Writer { db, sender, buffer: Vec::with_capacity(64 * 1024) };
        if let Err(Stop::Failed(e)) = writer.write(shape).await {
            tracing::error!("evaluation list cut short: {e}");
            // The body ends unfinished: the client sees a broken answer.
            let _ = writer.sender.send(Err(std::io::Error::other(e))).await;
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response()
}

enum Stop {
    /// The client is gone: nothing more to do.
    Gone,
    Failed(String),
}

struct Writer {
    db: Db,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl Writer {
    async fn write(&mut self, shape: Shape) -> Result<(), Stop> {
        match shape {
            Shape::One(eval) => self.eval(eval).await?,
            Shape::Page { head, list_key, evals } => {
                let mut head = Value::Object(head).to_string();
                head.pop(); // its closing brace
                if head.len() > 1 {
                    head.push(',');
                }
                head.push_str(&Value::String(list_key.into()).to_string());
                head.push_str(":[");
                self.buffer.extend_from_slice(head.as_bytes());
                // The head now, before any member is read.
                self.flush().await?;
                for (n, eval) in evals.into_iter().enumerate() {
                    if n > 0 {
                        self.buffer.push(b',');
                    }
                    self.eval(eval).await?;
                }
                self.buffer.extend_from_slice(b"]}");
            }
        }
        self.flush().await
    }

    /// `{...fields, "builds": [ids]}`.
    async fn eval(&mut self, eval: EvalObject) -> Result<(), Stop> {
        let mut fields = Value::Object(eval.fields).to_string();
        fields.pop();
        if fields.len() > 1 {
            fields.push(',');
        }
        fields.push_str("\"builds\":[");
        self.buffer.extend_from_slice(fields.as_bytes());
        let mut after = i64::MIN;
        let mut first = true;
        loop {
            let ids = self
                .db
                .eval_members_after(eval.eval_id, after, IDS_PER_CHUNK)
                .await
                .map_err(|e| Stop::Failed(format!("members of evaluation {}: {e}", eval.eval_id)))?;
            for &id in &ids {
                if !first {
                    self.buffer.push(b',');
                }
                first = false;
                // Writing to a Vec cannot fail.
                let _ = write!(self.buffer, "{id}");
            }
            self.flush().await?;
            match ids.last() {
                Some(&last) if ids.len() as u64 == IDS_PER_CHUNK => after = last,
                _ => break,
            }
        }
        self.buffer.extend_from_slice(b"]}");
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(64 * 1024)));
        self.sender.send(Ok(chunk)).await.map_err(|_| Stop::Gone)
    }
}
