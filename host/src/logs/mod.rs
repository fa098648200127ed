//! Build logs: one zstd-compressed file per derivation under the data
//! directory, written while the step runs and readable at any moment.
//!
//! Layout: `logs/<first two chars of the drv name>/<rest>.zst`, as Nix lays
//! out its own `/nix/var/log/nix/drvs`, so no directory grows too large.
//!
//! While a step runs, its lines are also sent to whoever follows the log
//! live ([`LogStore::follow`]), each with its offset in the log, so that a
//! reader who read the file first can tell which lines it already has.
//!
//! A log is written in frames with an index beside it (`frames.rs`), so a
//! tail or a page decompresses a frame or two, not the whole log. Reading
//! runs on blocking threads, at most [`READERS`] at once, so that logs of
//! gigabytes cannot hold the async workers; a whole log is streamed, not
//! read into memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::{Semaphore, broadcast};

mod frames;
mod page;
mod sweep;
use frames::{FRAME_BYTES, FrameStart};
pub use page::{LogPage, Window};
pub use sweep::Swept;

use crate::nix::StorePath;

/// A written log is made readable at least this often while lines arrive.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
const COMPRESSION_LEVEL: i32 = 3;

/// Lines a live reader may fall behind by; it catches up from the file.
const LIVE_BACKLOG: usize = 256;
/// Logs read at once (decompression on blocking threads).
const READERS: usize = 4;
/// Text of a whole log handed to a client at a time.
const STREAM_CHUNK: usize = 256 << 10;

/// A line of a log being written, as sent to live readers.
#[derive(Debug, Clone)]
pub struct LiveLine {
    /// Bytes of the log before this line.
    pub offset: u64,
    pub text: Arc<str>,
}

/// The live side of a log being written. Readers and the writer take its
/// lock in turn, so a reader's subscription and its flush request land
/// between two lines: every line before the first one it receives is in
/// the file by then.
#[derive(Debug, Default)]
struct LiveState {
    /// Made by the first reader: a log nobody follows costs nothing.
    sender: Option<broadcast::Sender<LiveLine>>,
    flush_wanted: bool,
}

type LiveChannel = Arc<Mutex<LiveState>>;

/// The logs being written now, by derivation, for live readers.
type LiveLogs = Arc<Mutex<HashMap<String, LiveChannel>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone)]
pub struct LogStore {
    dir: PathBuf,
    live: LiveLogs,
    /// Permits to decompress: reading is bounded, whatever the requests.
    readers: Arc<Semaphore>,
}

impl LogStore {
    pub fn new(dir: PathBuf) -> LogStore {
        LogStore { dir, live: LiveLogs::default(), readers: Arc::new(Semaphore::new(READERS)) }
    }

    /// Runs blocking log work with a reader's permit, off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let _permit = self.readers.acquire().await.map_err(std::io::Error::other)?;
        tokio::task::spawn_blocking(work).await.map_err(std::io::Error::other)?
    }

    /// Follows the log of a derivation being built now: its next lines,
    /// then the end of the channel when the step ends. `None` when no step
    /// writes it. Every line before the first one received is in the file
    /// by the time it is received.
    pub fn follow(&self, drv: &StorePath) -> Option<broadcast::Receiver<LiveLine>> {
        let channel = lock(&self.live).get(drv.base_name())?.clone();
        let mut state = lock(&channel);
        let receiver = state.sender.get_or_insert_with(|| broadcast::channel(LIVE_BACKLOG).0).subscribe();
        state.flush_wanted = true;
        Some(receiver)
    }

    fn path_for(&self, drv: &StorePath) -> PathBuf {
        let base = drv.base_name();
        self.dir.join(&base[..2]).join(format!("{}.zst", &base[2..]))
    }

    /// Starts (or restarts) the log of a derivation.
    pub fn create(&self, drv: &StorePath) -> std::io::Result<LogWriter> {
        let path = self.path_for(drv);
        // Live before its files exist: retention never deletes a live log
        // (see `sweep.rs`), so it cannot unlink one being started.
        let channel = LiveChannel::default();
        let key = drv.base_name().to_owned();
        lock(&self.live).insert(key.clone(), channel.clone());
        // Unregisters it again if the files cannot be made.
        let live = LiveSender { logs: self.live.clone(), key, channel };
        std::fs::create_dir_all(path.parent().expect("log path has a parent"))?;
        // The index first: a reader never sees a new log with an old index.
        let index = File::create(frames::index_path(&path))?;
        let file = Counted { file: File::create(&path)?, written: 0 };
        let encoder = zstd::stream::Encoder::new(BufWriter::new(file), COMPRESSION_LEVEL)?;
        Ok(LogWriter {
            encoder: Some(encoder),
            index,
            written: 0,
            frame_start: 0,
            last_flush: Instant::now(),
            dirty: false,
            live: Some(live),
        })
    }

    pub fn exists(&self, drv: &StorePath) -> bool {
        self.path_for(drv).is_file()
    }

    /// The whole log, or `None` if this derivation has no log. A log still
    /// being written is returned up to its last flushed line. Blocking, and
    /// as large as the log: for tests; the server streams ([`LogStore::stream`]).
    pub fn read(&self, drv: &StorePath) -> std::io::Result<Option<Vec<u8>>> {
        let mut log = Vec::new();
        Ok(page::decode_from(&self.path_for(drv), FrameStart::FIRST, |_, chunk| {
            log.extend_from_slice(chunk);
            page::Decoded::More
        })?
        .map(|_| log))
    }

    /// The whole log as a stream of chunks, decompressed a chunk at a time
    /// on a blocking thread (each with a reader's permit, given back while
    /// the client takes the chunk), or `None` if there is no log.
    pub async fn stream(
        &self,
        drv: &StorePath,
    ) -> std::io::Result<Option<impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static>> {
        let path = self.path_for(drv);
        let opened = self.blocking(move || match File::open(&path) {
            Ok(file) => Ok(Some(zstd::stream::Decoder::new(file)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        });
        let Some(decoder) = opened.await? else { return Ok(None) };
        let store = self.clone();
        Ok(Some(futures_util::stream::unfold(Some(decoder), move |decoder| {
            let store = store.clone();
            async move {
                let mut decoder = decoder?;
                let chunk = store
                    .blocking(move || {
                        let mut chunk = vec![0u8; STREAM_CHUNK];
                        let mut filled = 0;
                        while filled < chunk.len() {
                            match std::io::Read::read(&mut decoder, &mut chunk[filled..]) {
                                // The end, or the unfinished frame of a log being written.
                                Ok(0) | Err(_) => break,
                                Ok(n) => filled += n,
                            }
                        }
                        chunk.truncate(filled);
                        Ok((decoder, chunk))
                    })
                    .await;
                match chunk {
                    Ok((_, chunk)) if chunk.is_empty() => None,
                    Ok((decoder, chunk)) => Some((Ok(Bytes::from(chunk)), Some(decoder))),
                    Err(e) => Some((Err(e), None)),
                }
            }
        })))
    }

    /// The derivation whose log is "the build's log": the build's own, or
    /// else that of its last failed step (a dependency that failed), or of
    /// its last step.
    pub fn build_log(&self, build_drv: &str, steps: &[crate::db::BuildStep]) -> Option<StorePath> {
        if let Ok(drv) = StorePath::parse(build_drv) {
            if self.exists(&drv) {
                return Some(drv);
            }
        }
        let step = steps
            .iter()
            .rev()
            .find(|s| s.status.is_some_and(|c| c != crate::domain::BuildStatus::Succeeded.code()))
            .or(steps.last())?;
        StorePath::parse(&step.drv_path).ok()
    }

    /// A page of the log, `length` bytes of it in whole lines (see
    /// `page.rs`), or `None` if this derivation has no log.
    pub async fn page(&self, drv: &StorePath, window: Window, length: u64) -> std::io::Result<Option<LogPage>> {
        let path = self.path_for(drv);
        self.blocking(move || page::read_page(&path, window, length)).await
    }

    /// The last `lines` lines of the log (at most [`MAX_TAIL`] bytes).
    pub async fn tail(&self, drv: &StorePath, lines: usize) -> std::io::Result<Option<Vec<u8>>> {
        let path = self.path_for(drv);
        self.blocking(move || read_tail(&path, lines)).await
    }

    /// The tails of many logs in one trip off the async threads, until
    /// they add up to `budget` bytes: those left out (and those that could
    /// not be read) are missing from the answer, for `tail` to read.
    pub async fn tails(&self, drvs: Vec<StorePath>, lines: usize, budget: u64) -> HashMap<StorePath, Vec<u8>> {
        let paths: Vec<(StorePath, PathBuf)> = drvs
            .into_iter()
            .map(|drv| {
                let path = self.path_for(&drv);
                (drv, path)
            })
            .collect();
        let read = self.blocking(move || {
            let mut tails = HashMap::new();
            let mut total = 0u64;
            for (drv, path) in paths {
                if let Ok(Some(tail)) = read_tail(&path, lines) {
                    total += tail.len() as u64;
                    tails.insert(drv, tail);
                }
                if total >= budget {
                    break;
                }
            }
            Ok(tails)
        });
        read.await.unwrap_or_default()
    }
}

/// A tail is at most this long, however long its lines.
pub const MAX_TAIL: u64 = 4 << 20;

/// The last `lines` lines of the log at `path`: read from a window at the
/// end, widened until it holds the lines (up to [`MAX_TAIL`]).
fn read_tail(path: &Path, lines: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut window: u64 = 64 << 10;
    loop {
        let Some(page) = page::read_page(path, Window::Tail, window)? else { return Ok(None) };
        let tail = tail_lines(&page.text, lines);
        if tail.len() < page.text.len() || page.from == 0 || window >= MAX_TAIL {
            return Ok(Some(tail.to_vec()));
        }
        window *= 4;
    }
}

/// The log file, counting what was written to it: where a frame ends.
struct Counted {
    file: File,
    written: u64,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The suffix of `log` holding its last `lines` lines.
pub fn tail_lines(log: &[u8], lines: usize) -> &[u8] {
    let body = log.strip_suffix(b"\n").unwrap_or(log);
    let mut seen = 0;
    for (i, &c) in body.iter().enumerate().rev() {
        if c == b'\n' {
            seen += 1;
            if seen == lines {
                return &log[i + 1..];
            }
        }
    }
    log
}

/// Appends lines to one derivation's log.
pub struct LogWriter {
    encoder: Option<zstd::stream::Encoder<'static, BufWriter<Counted>>>,
    /// Where each frame after the first starts.
    index: File,
    written: u64,
    /// Where the current frame's text starts.
    frame_start: u64,
    last_flush: Instant,
    dirty: bool,
    live: Option<LiveSender>,
}

/// The live channel of a log being written; it leaves the registry when the
/// writer goes, which ends the channel for its readers.
struct LiveSender {
    logs: LiveLogs,
    key: String,
    channel: LiveChannel,
}

impl Drop for LiveSender {
    fn drop(&mut self) {
        let mut logs = lock(&self.logs);
        // A restarted step may have registered its own writer since.
        if logs.get(&self.key).is_some_and(|c| Arc::ptr_eq(c, &self.channel)) {
            logs.remove(&self.key);
        }
        // Dropping the only sender ends the channel for its readers.
        lock(&self.channel).sender = None;
    }
}

impl LogWriter {
    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        if let Some(live) = &self.live {
            let mut state = lock(&live.channel);
            if state.flush_wanted {
                state.flush_wanted = false;
                if let Some(encoder) = self.encoder.as_mut().filter(|_| self.dirty) {
                    encoder.flush()?;
                    encoder.get_mut().flush()?;
                    self.dirty = false;
                }
            }
            if let Some(sender) = state.sender.as_ref().filter(|s| s.receiver_count() > 0) {
                let _ = sender.send(LiveLine { offset: self.written, text: line.into() });
            }
        }
        let encoder = self.encoder.as_mut().expect("log writer used after finish");
        encoder.write_all(line.as_bytes())?;
        encoder.write_all(b"\n")?;
        self.written += line.len() as u64 + 1;
        self.dirty = true;
        if self.written - self.frame_start >= FRAME_BYTES {
            self.next_frame()?;
        } else if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.flush()?;
        }
        Ok(())
    }

    /// Ends the current frame and starts the next, noting where it starts.
    fn next_frame(&mut self) -> std::io::Result<()> {
        let encoder = self.encoder.take().expect("log writer used after finish");
        let mut file = encoder.finish()?;
        file.flush()?;
        let start = FrameStart { compressed: file.get_ref().written, text: self.written };
        self.encoder = Some(zstd::stream::Encoder::new(file, COMPRESSION_LEVEL)?);
        frames::append(&mut self.index, start)?;
        self.frame_start = self.written;
        self.dirty = false;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Uncompressed bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes everything written so far readable by [`LogStore::read`].
    pub fn flush(&mut self) -> std::io::Result<()> {
        if let Some(encoder) = self.encoder.as_mut().filter(|_| self.dirty) {
            encoder.flush()?;
            encoder.get_mut().flush()?;
            self.dirty = false;
        }
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Ends the compressed frame and closes the file, then the live channel.
    pub fn finish(mut self) -> std::io::Result<()> {
        if let Some(encoder) = self.encoder.take() {
            encoder.finish()?.flush()?;
        }
        self.live.take();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_readers_get_new_lines_with_offsets_then_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_owned());
        assert!(store.follow(&drv()).is_none(), "nothing is written yet");
        let mut writer = store.create(&drv()).unwrap();
        writer.write_line("before").unwrap();
        let mut lines = store.follow(&drv()).unwrap();
        writer.write_line("after").unwrap();
        // The reader's first line finds every earlier line in the file.
        let line = lines.try_recv().unwrap();
        assert_eq!((line.offset, &*line.text), (7, "after"));
        assert_eq!(store.read(&drv()).unwrap().unwrap(), b"before\n");
        writer.finish().unwrap();
        assert!(matches!(lines.try_recv(), Err(broadcast::error::TryRecvError::Closed)));
        assert!(store.follow(&drv()).is_none(), "the step is over");
    }

    fn drv() -> StorePath {
        StorePath::parse("/nix/store/i3m7y37jdyi708p9xfrkxr9wn91bv2gf-ok.drv").unwrap()
    }

    #[tokio::test]
    async fn written_log_reads_back_while_open_and_after_finish() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_owned());
        assert_eq!(store.read(&drv()).unwrap(), None);
        let mut writer = store.create(&drv()).unwrap();
        writer.write_line("first").unwrap();
        writer.write_line("second").unwrap();
        writer.flush().unwrap();
        assert_eq!(store.read(&drv()).unwrap().unwrap(), b"first\nsecond\n");
        writer.write_line("third").unwrap();
        writer.finish().unwrap();
        assert_eq!(store.read(&drv()).unwrap().unwrap(), b"first\nsecond\nthird\n");
        assert_eq!(store.tail(&drv(), 2).await.unwrap().unwrap(), b"second\nthird\n");
        assert!(dir.path().join("i3").join("m7y37jdyi708p9xfrkxr9wn91bv2gf-ok.drv.zst").is_file());
    }

    #[tokio::test]
    async fn tail_reads_back_as_far_as_its_lines_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_owned());
        let mut writer = store.create(&drv()).unwrap();
        // Lines longer than the first window at the end of the log.
        let long = |c: &str| c.repeat(100 << 10);
        for line in ["first", &long("a"), &long("b"), "last"] {
            writer.write_line(line).unwrap();
        }
        writer.finish().unwrap();
        let tail = store.tail(&drv(), 3).await.unwrap().unwrap();
        assert_eq!(tail, format!("{}\n{}\nlast\n", long("a"), long("b")).into_bytes());
        let all = store.tail(&drv(), 10).await.unwrap().unwrap();
        assert_eq!(all, store.read(&drv()).unwrap().unwrap(), "fewer lines than asked: the whole log");
    }

    /// A log of several frames: read whole (as one zstd stream), streamed,
    /// and its tail and pages read from their own frames only.
    #[tokio::test]
    async fn long_logs_are_read_a_frame_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_owned());
        let mut writer = store.create(&drv()).unwrap();
        let mut text = Vec::new();
        for i in 0..60_000 {
            let line = format!("line {i} {}", "x".repeat(i % 97));
            writer.write_line(&line).unwrap();
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        }
        writer.finish().unwrap();
        let path = store.path_for(&drv());
        let frames = frames::Frames::load(&path).unwrap();
        assert!(frames.last().text > 2 * FRAME_BYTES, "several frames: {frames:?}");
        // One zstd stream, as `zstd -d` reads it: every frame in turn.
        assert_eq!(zstd::decode_all(std::fs::File::open(&path).unwrap()).unwrap(), text);
        assert_eq!(store.read(&drv()).unwrap().unwrap(), text);
        let streamed: Vec<u8> =
            futures_util::StreamExt::collect::<Vec<_>>(store.stream(&drv()).await.unwrap().unwrap())
                .await
                .into_iter()
                .flat_map(|chunk| chunk.unwrap().to_vec())
                .collect();
        assert_eq!(streamed, text);

        // Spoil the first frame: the tail and a late page do not read it.
        let mut bytes = std::fs::read(&path).unwrap();
        for byte in &mut bytes[100..1000] {
            *byte = 0xff;
        }
        std::fs::write(&path, bytes).unwrap();
        let tail = store.tail(&drv(), 2).await.unwrap().unwrap();
        assert_eq!(tail, tail_lines(&text, 2));
        let from = text.len() as u64 - 10_000;
        let page = store.page(&drv(), Window::From(from), 5000).await.unwrap().unwrap();
        assert_eq!(page.total, text.len() as u64);
        let start = from as usize + text[from as usize..].iter().position(|&c| c == b'\n').unwrap() + 1;
        assert!(text[start..].starts_with(&page.text), "the page's lines");
    }

    #[test]
    fn tail_of_short_and_unterminated_logs() {
        assert_eq!(tail_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail_lines(b"a\n", 5), b"a\n");
        assert_eq!(tail_lines(b"", 5), b"");
    }
}
