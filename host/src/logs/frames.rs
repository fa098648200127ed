//! Where a log's zstd frames start, so that a page or a tail decompresses
//! only the frames it shows (and the last one, to know the log's length),
//! not the whole log.
//!
//! A log is written as a sequence of zstd frames of about [`FRAME_BYTES`]
//! of text each — still one valid zstd stream, which `zstd -d` reads whole
//! — and beside it, `<log>.idx` lists where each frame after the first
//! starts: 16 bytes each, the offset in the compressed file and in the
//! text, little-endian. A log written before the index existed has no
//! `.idx`: it is one frame, read from its start.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Text per frame: a tail or a page decompresses at most about this much
/// more than it shows.
pub const FRAME_BYTES: u64 = 1 << 20;

/// Where a frame starts: in the compressed file, and in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FrameStart {
    pub compressed: u64,
    pub text: u64,
}

impl FrameStart {
    pub const FIRST: FrameStart = FrameStart { compressed: 0, text: 0 };
}

/// The frames of one log, in order; the first starts at 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frames {
    starts: Vec<FrameStart>,
}

/// The index file of the log at `log`.
pub fn index_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".idx");
    PathBuf::from(name)
}

impl Frames {
    /// The frames of the log at `log` (one, when it has no index).
    pub fn load(log: &Path) -> std::io::Result<Frames> {
        let mut starts = vec![FrameStart::FIRST];
        let mut bytes = Vec::new();
        match File::open(index_path(log)) {
            Ok(mut file) => {
                file.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // A last entry half written (the writer is appending it) is ignored.
        for entry in bytes.chunks_exact(16) {
            let number = |range: std::ops::Range<usize>| u64::from_le_bytes(entry[range].try_into().expect("8 bytes"));
            let start = FrameStart { compressed: number(0..8), text: number(8..16) };
            // Entries only grow; anything else is not an index of this log.
            if start <= *starts.last().expect("never empty") {
                break;
            }
            starts.push(start);
        }
        Ok(Frames { starts })
    }

    /// The frame holding text offset `offset` (the last one starting at or
    /// before it).
    pub fn containing(&self, offset: u64) -> FrameStart {
        let after = self.starts.partition_point(|start| start.text <= offset);
        self.starts[after.saturating_sub(1)]
    }

    pub fn last(&self) -> FrameStart {
        *self.starts.last().expect("never empty")
    }
}

/// Appends a frame's start to the index of the log at `log`.
pub fn append(index: &mut File, start: FrameStart) -> std::io::Result<()> {
    let mut entry = [0u8; 16];
    entry[..8].copy_from_slice(&start.compressed.to_le_bytes());
    entry[8..].copy_from_slice(&start.text.to_le_bytes());
    index.write_all(&entry)?;
    index.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_found_by_text_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.drv.zst");
        assert_eq!(Frames::load(&log).unwrap().last(), FrameStart::FIRST, "no index: one frame");
        let mut index = File::create(index_path(&log)).unwrap();
        append(&mut index, FrameStart { compressed: 100, text: 1000 }).unwrap();
        append(&mut index, FrameStart { compressed: 180, text: 2000 }).unwrap();
        index.write_all(&[1, 2, 3]).unwrap();
        let frames = Frames::load(&log).unwrap();
        assert_eq!(frames.containing(0), FrameStart::FIRST);
        assert_eq!(frames.containing(999), FrameStart::FIRST);
        assert_eq!(frames.containing(1000).text, 1000);
        assert_eq!(frames.containing(1999).compressed, 100);
        assert_eq!(frames.containing(5000).text, 2000);
        assert_eq!(frames.last().compressed, 180);
    }
}
