//! What a Nix process writes, read with bounds: an expression decides what
//! an evaluator prints (`builtins.trace` of a gigabyte, a job whose
//! `meta.description` is one), so nothing a process writes is kept whole.
//! Each stream is read to its end — a process is never stuck on a full
//! pipe — keeping a bounded part: the beginning of results, the end of
//! messages (where the error is).

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt};

/// The last bytes of a stream, and how many came before them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tail {
    pub bytes: Vec<u8>,
    /// Bytes dropped from the front.
    pub cut: u64,
}

/// The first bytes of a stream, and whether there were more.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Head {
    pub bytes: Vec<u8>,
    /// Bytes dropped at the end (the stream was longer than its cap).
    pub cut: u64,
}

/// Reads `stream` to its end, keeping its last `keep` bytes (at most twice
/// that while reading).
pub async fn read_tail(stream: &mut (impl AsyncRead + Unpin), keep: usize) -> std::io::Result<Tail> {
    let mut tail = Tail::default();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(tail);
        }
        tail.push(&buf[..n], keep);
    }
}

impl Tail {
    /// Appends `bytes`, keeping the last `keep` (at most twice that between
    /// trims, so that trimming stays rare).
    pub fn push(&mut self, bytes: &[u8], keep: usize) {
        self.bytes.extend_from_slice(bytes);
        if self.bytes.len() > 2 * keep {
            let drop = self.bytes.len() - keep;
            self.bytes.drain(..drop);
            self.cut += drop as u64;
        }
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.cut = 0;
    }
}

/// Reads `stream` to its end, keeping its first `cap` bytes.
pub async fn read_head(stream: &mut (impl AsyncRead + Unpin), cap: usize) -> std::io::Result<Head> {
    let mut head = Head::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(head);
        }
        let room = cap.saturating_sub(head.bytes.len()).min(n);
        head.bytes.extend_from_slice(&buf[..room]);
        head.cut += (n - room) as u64;
    }
}

/// Reads the next line into `line` (without its newline); `Some(false)`
/// when it was longer than `max` bytes (it is skipped, a bounded piece at a
/// time, never kept whole), `None` at the end.
pub async fn read_bounded_line(
    stream: &mut (impl AsyncBufReadExt + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let n = (&mut *stream).take(max as u64 + 1).read_until(b'\n', line).await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Some(true));
    }
    if line.len() <= max {
        // The last line, without a newline.
        return Ok(Some(true));
    }
    loop {
        line.clear();
        let n = (&mut *stream).take(1 << 16).read_until(b'\n', line).await?;
        if n == 0 || line.last() == Some(&b'\n') {
            line.clear();
            return Ok(Some(false));
        }
    }
}

/// The marker put where output was cut.
pub fn cut_marker(bytes: u64) -> String {
    format!("[… {bytes} bytes of output cut here …]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_are_read_whole_and_kept_in_part() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let tail = read_tail(&mut &data[..], 1000).await.unwrap();
        assert!(tail.bytes.len() >= 1000 && tail.bytes.len() <= 2000);
        assert!(data.ends_with(&tail.bytes));
        assert_eq!(tail.cut as usize + tail.bytes.len(), data.len());
        let head = read_head(&mut &data[..], 1000).await.unwrap();
        assert_eq!(head.bytes, data[..1000]);
        assert_eq!(head.cut as usize, data.len() - 1000);
        let short = read_head(&mut &b"abc"[..], 1000).await.unwrap();
        assert_eq!(short, Head { bytes: b"abc".to_vec(), cut: 0 });
    }
}
