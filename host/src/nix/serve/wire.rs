//! The serve protocol's wire format: unsigned 64-bit little-endian
//! numbers (booleans too), strings as a length, the bytes and zero padding
//! to a multiple of eight, lists as a count and their items; reading
//! bounded, with the far side's standard error passed on as it comes.

use std::future::poll_fn;
use std::io;

use tokio::io::AsyncWriteExt;

use super::{Chunk, MAX_ITEMS, MAX_STRING, STDERR_TAIL, ServeConnection, ServeError, StderrSink};
use crate::nix::StorePath;

impl ServeConnection {
    // Writing.

    pub(super) async fn write_u64(&mut self, n: u64) -> Result<(), ServeError> {
        self.input.write_all(&n.to_le_bytes()).await?;
        Ok(())
    }

    pub(super) async fn write_str(&mut self, s: &str) -> Result<(), ServeError> {
        self.write_u64(s.len() as u64).await?;
        self.input.write_all(s.as_bytes()).await?;
        let padding = (8 - s.len() % 8) % 8;
        self.input.write_all(&[0u8; 8][..padding]).await?;
        Ok(())
    }

    pub(super) async fn write_paths(&mut self, paths: &[StorePath]) -> Result<(), ServeError> {
        self.write_u64(paths.len() as u64).await?;
        for path in paths {
            self.write_str(path.as_str()).await?;
        }
        Ok(())
    }

    pub(super) async fn flush(&mut self) -> Result<(), ServeError> {
        match self.input.flush().await {
            Ok(()) => Ok(()),
            // Writing failed because the far side is gone: say what it said.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(ServeError::Closed(self.last_words().await)),
            Err(e) => Err(e.into()),
        }
    }

    // Reading.

    /// Waits for more stdout, passing stderr that comes first to `sink`.
    pub(super) async fn fill(&mut self, sink: StderrSink<'_>) -> Result<(), ServeError> {
        loop {
            match poll_fn(|cx| self.output.poll_chunk(cx)).await? {
                Some(Chunk::Stdout(bytes)) => {
                    if self.pos == self.buffer.len() {
                        self.buffer.clear();
                        self.pos = 0;
                    }
                    self.buffer.extend_from_slice(&bytes);
                    return Ok(());
                }
                Some(Chunk::Stderr(bytes)) => {
                    self.stderr_tail.extend(bytes.iter().copied());
                    let excess = self.stderr_tail.len().saturating_sub(STDERR_TAIL);
                    self.stderr_tail.drain(..excess);
                    sink(&bytes);
                }
                None => return Err(ServeError::Closed(self.stderr_text())),
            }
        }
    }

    pub(super) async fn read_exact(&mut self, n: usize, sink: StderrSink<'_>) -> Result<&[u8], ServeError> {
        while self.buffer.len() - self.pos < n {
            if self.pos > 0 {
                self.buffer.drain(..self.pos);
                self.pos = 0;
            }
            self.fill(sink).await?;
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buffer[start..start + n])
    }

    pub(super) async fn read_u64(&mut self, sink: StderrSink<'_>) -> Result<u64, ServeError> {
        let bytes = self.read_exact(8, sink).await?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("eight bytes")))
    }

    pub(super) async fn read_count(&mut self, sink: StderrSink<'_>) -> Result<u64, ServeError> {
        let count = self.read_u64(sink).await?;
        if count > MAX_ITEMS {
            return Err(ServeError::Protocol(format!("a list of {count} items is not believable")));
        }
        Ok(count)
    }

    pub(super) async fn read_bytes(&mut self, sink: StderrSink<'_>) -> Result<Vec<u8>, ServeError> {
        let len = self.read_u64(sink).await?;
        if len > MAX_STRING {
            return Err(ServeError::Protocol(format!("a string of {len} bytes is not believable")));
        }
        let padded = (len as usize).div_ceil(8) * 8;
        let bytes = self.read_exact(padded, sink).await?;
        Ok(bytes[..len as usize].to_vec())
    }

    pub(super) async fn read_string(&mut self, sink: StderrSink<'_>) -> Result<String, ServeError> {
        let bytes = self.read_bytes(sink).await?;
        String::from_utf8(bytes).map_err(|_| ServeError::Protocol("a string is not UTF-8".into()))
    }

    pub(super) async fn read_strings(&mut self, sink: StderrSink<'_>) -> Result<Vec<String>, ServeError> {
        let count = self.read_count(sink).await?;
        let mut items = Vec::with_capacity(count.min(1024) as usize);
        for _ in 0..count {
            items.push(self.read_string(sink).await?);
        }
        Ok(items)
    }

    pub(super) async fn read_paths(&mut self, sink: StderrSink<'_>) -> Result<Vec<StorePath>, ServeError> {
        self.read_strings(sink).await?.iter().map(|p| parse_path(p)).collect()
    }
}

pub(super) fn parse_path(path: &str) -> Result<StorePath, ServeError> {
    StorePath::parse(path).map_err(|e| ServeError::Protocol(format!("the far side sent a bad store path: {e}")))
}
