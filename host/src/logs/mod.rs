//! Build logs: one zstd-compressed file per derivation under the data
//! directory, written while the step runs and readable at any moment.
//!
//! Layout: `logs/<first two chars of the drv name>/<rest>.zst`, as Nix lays
//! out its own `/nix/var/log/nix/drvs`, so no directory grows too large.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::nix::StorePath;

/// A written log is made readable at least this often while lines arrive.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
const COMPRESSION_LEVEL: i32 = 3;

#[derive(Debug, Clone)]
pub struct LogStore {
    dir: PathBuf,
}

impl LogStore {
    pub fn new(dir: PathBuf) -> LogStore {
        LogStore { dir }
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
        Ok(LogWriter { encoder: Some(encoder), written: 0, last_flush: Instant::now(), dirty: false })
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

    /// The last `lines` lines of the log.
    pub fn tail(&self, drv: &StorePath, lines: usize) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.read(drv)?.map(|log| tail_lines(&log, lines).to_vec()))
    }
}

fn read_log_file(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut decoder = zstd::stream::Decoder::new(file)?;
    let mut log = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => log.extend_from_slice(&buf[..n]),
            // A log being written ends in an unfinished frame: what was
            // flushed so far is all there is to read.
            Err(_) => break,
        }
    }
    Ok(Some(log))
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
}

impl LogWriter {
    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
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

    /// Ends the compressed frame and closes the file.
    pub fn finish(mut self) -> std::io::Result<()> {
        if let Some(encoder) = self.encoder.take() {
            encoder.finish()?.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn tail_of_short_and_unterminated_logs() {
        assert_eq!(tail_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail_lines(b"a\n", 5), b"a\n");
        assert_eq!(tail_lines(b"", 5), b"");
    }
}
