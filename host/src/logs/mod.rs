//! Build logs: one zstd-compressed file per derivation under the data
//! directory, written while the step runs and readable at any moment.
//!
//! Layout: `logs/<first two chars of the drv name>/<rest>.zst`, as Nix lays
//! out its own `/nix/var/log/nix/drvs`, so no directory grows too large.
//!
//! While a step runs, its lines are also sent to whoever follows the log
//! live ([`LogStore::follow`]), each with its offset in the log, so that a
//! reader who read the file first can tell which lines it already has.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

mod page;
pub use page::{LogPage, Window};

use crate::nix::StorePath;

/// A written log is made readable at least this often while lines arrive.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
const COMPRESSION_LEVEL: i32 = 3;

/// Lines a live reader may fall behind by; it catches up from the file.
const LIVE_BACKLOG: usize = 256;

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
}

impl LogStore {
    pub fn new(dir: PathBuf) -> LogStore {
        LogStore { dir, live: LiveLogs::default() }
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
        std::fs::create_dir_all(path.parent().expect("log path has a parent"))?;
        let file = File::create(&path)?;
        let encoder = zstd::stream::Encoder::new(BufWriter::new(file), COMPRESSION_LEVEL)?;
        let channel = LiveChannel::default();
        let key = drv.base_name().to_owned();
        lock(&self.live).insert(key.clone(), channel.clone());
        Ok(LogWriter {
            encoder: Some(encoder),
            written: 0,
            last_flush: Instant::now(),
            dirty: false,
            live: Some(LiveSender { logs: self.live.clone(), key, channel }),
        })
    }

    pub fn exists(&self, drv: &StorePath) -> bool {
        self.path_for(drv).is_file()
    }

    /// The whole log, or `None` if this derivation has no log. A log still
    /// being written is returned up to its last flushed line.
    pub fn read(&self, drv: &StorePath) -> std::io::Result<Option<Vec<u8>>> {
        read_log_file(&self.path_for(drv))
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
        let step =
            steps.iter().rev().find(|s| s.status.is_some_and(|c| c != crate::db::status::SUCCESS)).or(steps.last())?;
        StorePath::parse(&step.drv_path).ok()
    }

    /// A page of the log, `length` bytes of it in whole lines (see
    /// `page.rs`), or `None` if this derivation has no log. Blocking: it
    /// decompresses the whole file.
    pub fn page(&self, drv: &StorePath, window: Window, length: u64) -> std::io::Result<Option<LogPage>> {
        page::read_page(&self.path_for(drv), window, length)
    }

    /// The last `lines` lines of the log.
    pub fn tail(&self, drv: &StorePath, lines: usize) -> std::io::Result<Option<Vec<u8>>> {
        // Read from a window at the end, widened until it holds the lines:
        // a log of many megabytes is not kept whole to show its end.
        let mut window: u64 = 64 << 10;
        loop {
            let Some(page) = self.page(drv, Window::Tail, window)? else { return Ok(None) };
            let tail = tail_lines(&page.text, lines);
            if tail.len() < page.text.len() || page.from == 0 {
                return Ok(Some(tail.to_vec()));
            }
            window *= 4;
        }
    }
}

fn read_log_file(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut log = Vec::new();
    Ok(page::decode_each(path, |chunk| log.extend_from_slice(chunk))?.map(|_| log))
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
    encoder: Option<zstd::stream::Encoder<'static, BufWriter<File>>>,
    written: u64,
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
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.flush()?;
        }
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

    #[test]
    fn written_log_reads_back_while_open_and_after_finish() {
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
        assert_eq!(store.tail(&drv(), 2).unwrap().unwrap(), b"second\nthird\n");
        assert!(dir.path().join("i3").join("m7y37jdyi708p9xfrkxr9wn91bv2gf-ok.drv.zst").is_file());
    }

    #[test]
    fn tail_reads_back_as_far_as_its_lines_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_owned());
        let mut writer = store.create(&drv()).unwrap();
        // Lines longer than the first window at the end of the log.
        let long = |c: &str| c.repeat(100 << 10);
        for line in ["first", &long("a"), &long("b"), "last"] {
            writer.write_line(line).unwrap();
        }
        writer.finish().unwrap();
        let tail = store.tail(&drv(), 3).unwrap().unwrap();
        assert_eq!(tail, format!("{}\n{}\nlast\n", long("a"), long("b")).into_bytes());
        let all = store.tail(&drv(), 10).unwrap().unwrap();
        assert_eq!(all, store.read(&drv()).unwrap().unwrap(), "fewer lines than asked: the whole log");
    }

    #[test]
    fn tail_of_short_and_unterminated_logs() {
        assert_eq!(tail_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail_lines(b"a\n", 5), b"a\n");
        assert_eq!(tail_lines(b"", 5), b"");
    }
}
