//! A window of a log, for reading a log of many megabytes a page at a time.
//!
//! A page holds the lines that *start* inside a byte range `[from, to)` of
//! the log, whole (a line crossing `to` is finished, up to `LINE_SLACK`).
//! So pages reached by following "earlier" (`to` = this page's `from`) and
//! "later" (`from` = this page's `to`) links show every line exactly once.
//! The file is decompressed as a stream and only the window is kept.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::frames::{FrameStart, Frames};

/// Which part of a log to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The lines starting in `[offset, offset + length)`.
    From(u64),
    /// The lines starting in `[offset - length, offset)`.
    To(u64),
    /// The lines starting in the last `length` bytes.
    Tail,
}

/// A part of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    /// The byte range whose lines the page shows.
    pub from: u64,
    pub to: u64,
    /// The lines, whole.
    pub text: Vec<u8>,
    /// The size of the whole log, uncompressed.
    pub total: u64,
}

/// How far past its window a page reads to finish its last line.
const LINE_SLACK: u64 = 64 << 10;

/// Decompresses the log file at `path` from the frame `start` on, handing
/// each chunk to `each` with its offset in the text, until `each` says
/// [`Decoded::Enough`] or the log ends; returns the offset reached, or
/// `None` if there is no such file. A log being written ends in an
/// unfinished frame: what was flushed so far is the log.
pub(super) fn decode_from(
    path: &Path,
    start: FrameStart,
    mut each: impl FnMut(u64, &[u8]) -> Decoded,
) -> std::io::Result<Option<u64>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(start.compressed))?;
    let mut decoder = zstd::stream::Decoder::new(file)?;
    let mut buffer = vec![0u8; 64 << 10];
    let mut position = start.text;
    loop {
        match decoder.read(&mut buffer) {
            Ok(0) | Err(_) => return Ok(Some(position)),
            Ok(n) => {
                let flow = each(position, &buffer[..n]);
                position += n as u64;
                if flow == Decoded::Enough {
                    return Ok(Some(position));
                }
            }
        }
    }
}

/// Whether a reader of [`decode_from`] wants more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decoded {
    More,
    Enough,
}

/// The length of the log's text: its last frame decoded (`None`: no log).
pub(super) fn length(path: &Path, frames: &Frames) -> std::io::Result<Option<u64>> {
    decode_from(path, frames.last(), |_, _| Decoded::More)
}

/// Reads a page of the log file at `path` (`None`: there is no log),
/// decompressing only the frames that hold it and the last one.
pub(super) fn read_page(path: &Path, window: Window, length: u64) -> std::io::Result<Option<LogPage>> {
    let length = length.max(1);
    let frames = Frames::load(path)?;
    let Some(total) = self::length(path, &frames)? else { return Ok(None) };
    // Asked for lines before a point past the end (the log is shorter than
    // when the link was made: a step that ran again): its end, whole.
    if matches!(window, Window::To(to) if to > total) {
        return read_page(path, Window::Tail, length);
    }
    let (from, to) = match window {
        Window::From(from) => (from.min(total), from.saturating_add(length).min(total)),
        Window::To(to) => (to.min(total).saturating_sub(length), to.min(total)),
        Window::Tail => (total.saturating_sub(length), total),
    };
    // What is kept: the byte before the window (is a line starting at its
    // beginning?) up to the slack after it.
    let (keep_start, keep_end) = (from.saturating_sub(1), to.saturating_add(LINE_SLACK));
    let mut kept: Vec<u8> = Vec::new();
    let mut kept_start = keep_start;
    decode_from(path, frames.containing(keep_start), |position, chunk| {
        let chunk_end = position + chunk.len() as u64;
        let (lo, hi) = (keep_start.max(position), keep_end.min(chunk_end));
        if lo < hi {
            if kept.is_empty() {
                kept_start = lo;
            }
            kept.extend_from_slice(&chunk[(lo - position) as usize..(hi - position) as usize]);
        }
        if chunk_end >= keep_end { Decoded::Enough } else { Decoded::More }
    })?;
    if kept.is_empty() {
        kept_start = from;
    }
    let text = lines_starting_in(&kept, kept_start, from, to, total);
    Ok(Some(LogPage { from, to, text, total }))
}

/// The lines of the log starting in `[from, to)`, from the bytes `kept`
/// that begin at offset `kept_start` of a log of `total` bytes.
fn lines_starting_in(kept: &[u8], kept_start: u64, from: u64, to: u64, total: u64) -> Vec<u8> {
    let kept_end = kept_start + kept.len() as u64;
    let at = |offset: u64| kept.get((offset.checked_sub(kept_start)?) as usize).copied();
    // The first line start at or after `offset`: 0, a byte after a newline,
    // or the end.
    let line_start = |offset: u64| -> u64 {
        if offset == 0 || offset >= total {
            return offset.min(total);
        }
        if at(offset - 1) == Some(b'\n') {
            return offset;
        }
        let relative = (offset.max(kept_start) - kept_start) as usize;
        match kept.get(relative..).and_then(|rest| rest.iter().position(|&c| c == b'\n')) {
            Some(newline) => kept_start + (relative + newline) as u64 + 1,
            // The line goes on past what was kept: cut it there.
            None => kept_end,
        }
    };
    let start = line_start(from);
    let end = line_start(to).max(start);
    let slice = |offset: u64| (offset.clamp(kept_start, kept_end) - kept_start) as usize;
    kept[slice(start)..slice(end)].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_file(dir: &Path, text: &[u8]) -> std::path::PathBuf {
        let path = dir.join("log.zst");
        std::fs::write(&path, zstd::encode_all(text, 3).unwrap()).unwrap();
        path
    }

    fn numbered_lines(n: usize) -> Vec<u8> {
        (0..n).map(|i| format!("line {i} {}\n", "x".repeat(i % 13))).collect::<String>().into_bytes()
    }

    #[test]
    fn following_later_links_shows_every_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let text = numbered_lines(500);
        let path = log_file(dir.path(), &text);
        let mut shown = Vec::new();
        let mut window = Window::From(0);
        loop {
            let page = read_page(&path, window, 100).unwrap().unwrap();
            assert_eq!(page.total, text.len() as u64);
            assert!(page.text.is_empty() || page.text.ends_with(b"\n"), "whole lines only");
            shown.extend_from_slice(&page.text);
            if page.to >= page.total {
                break;
            }
            window = Window::From(page.to);
        }
        assert_eq!(shown, text);
    }

    #[test]
    fn following_earlier_links_from_the_tail_shows_every_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let text = numbered_lines(500);
        let path = log_file(dir.path(), &text);
        let tail = read_page(&path, Window::Tail, 100).unwrap().unwrap();
        assert_eq!(tail, read_page(&path, Window::To(text.len() as u64), 100).unwrap().unwrap());
        assert!(text.ends_with(&tail.text) && !tail.text.is_empty());
        let mut pages = vec![tail.text.clone()];
        let mut from = tail.from;
        while from > 0 {
            let page = read_page(&path, Window::To(from), 100).unwrap().unwrap();
            pages.push(page.text);
            from = page.from;
        }
        pages.reverse();
        assert_eq!(pages.concat(), text);
    }

    #[test]
    fn a_line_longer_than_the_slack_is_cut_and_small_logs_are_one_page() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("start\n{}\nend\n", "y".repeat(3 * LINE_SLACK as usize));
        let path = log_file(dir.path(), long.as_bytes());
        let page = read_page(&path, Window::From(0), 10).unwrap().unwrap();
        assert!(page.text.starts_with(b"start\nyyy"));
        assert!(page.text.len() as u64 <= 10 + LINE_SLACK + 1, "bounded: {}", page.text.len());

        let path = log_file(dir.path(), b"one\ntwo\n");
        let page = read_page(&path, Window::Tail, 1 << 20).unwrap().unwrap();
        assert_eq!((page.from, page.to, page.text.as_slice()), (0, 8, b"one\ntwo\n".as_slice()));
        assert_eq!(read_page(&dir.path().join("none.zst"), Window::Tail, 10).unwrap(), None);
        let past = read_page(&path, Window::From(100), 10).unwrap().unwrap();
        assert!(past.text.is_empty() && past.from == 8);
        let shorter = read_page(&path, Window::To(100), 6).unwrap().unwrap();
        assert_eq!((shorter.from, shorter.to, shorter.text.as_slice()), (2, 8, b"two\n".as_slice()), "its end");
    }
}
