//! A local `nix-store --serve` process as the far side of a connection.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::{Chunk, ServeOutput};

/// A `nix-store --serve` child process as a [`ServeOutput`]. Stderr is read
/// first, and drained once more whenever stdout brings something, so that
/// every log line written before a reply is passed on before the reply.
pub(in crate::nix) struct ProcessOutput {
    child: tokio::process::Child,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::io::unix::AsyncFd<std::fs::File>>,
    pending: VecDeque<Chunk>,
    /// Once stdout is closed: how long stderr may still take to close. Nix
    /// may print its last words after closing stdout; a grandchild holding
    /// stderr open must not hold the reader forever.
    stderr_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long a closed far side's stderr is awaited for its last words.
const CLOSING_STDERR: Duration = Duration::from_secs(2);

impl ProcessOutput {
    pub(in crate::nix) fn new(
        child: tokio::process::Child,
        stdout: tokio::process::ChildStdout,
        stderr: tokio::process::ChildStderr,
    ) -> io::Result<ProcessOutput> {
        // Tokio made the pipe non-blocking; reading it directly (not only when
        // the reactor says it is readable) is what makes the drain reliable.
        // Taking the descriptor out of tokio makes it blocking again, which
        // would make the drain wait for the child's exit.
        let stderr = std::fs::File::from(stderr.into_owned_fd()?);
        set_nonblocking(&stderr)?;
        // SAFETY: the file is owned by the AsyncFd and stays open as long as
        // it is registered.
        let stderr = unsafe { tokio::io::unix::AsyncFd::register(stderr)? };
        Ok(ProcessOutput {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
            pending: VecDeque::new(),
            stderr_deadline: None,
        })
    }

    /// Reads whatever stderr holds right now, without waiting.
    fn drain_stderr(&mut self) {
        use std::io::Read;
        let Some(stderr) = &self.stderr else { return };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stderr.get_ref().read(&mut buf) {
                Ok(0) => {
                    self.stderr = None;
                    return;
                }
                Ok(n) => self.pending.push_back(Chunk::Stderr(buf[..n].to_vec())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

fn set_nonblocking(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: plain fcntl calls on a descriptor this function borrows.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl ServeOutput for ProcessOutput {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Chunk>>> {
        use std::io::Read;
        use tokio::io::{AsyncRead, ReadBuf};
        if let Some(chunk) = self.pending.pop_front() {
            return Poll::Ready(Ok(Some(chunk)));
        }
        let mut buf = vec![0u8; 64 * 1024];
        if let Some(stderr) = &self.stderr {
            while let Poll::Ready(guard) = stderr.poll_read_ready(cx) {
                let mut guard = guard?;
                match guard.try_io(|fd| fd.get_ref().read(&mut buf)) {
                    Ok(Ok(0)) => {
                        self.stderr = None;
                        break;
                    }
                    Ok(Ok(n)) => return Poll::Ready(Ok(Some(Chunk::Stderr(buf[..n].to_vec())))),
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Ok(Err(e)) => return Poll::Ready(Err(e)),
                    Err(_would_block) => continue,
                }
            }
        }
        if let Some(stdout) = &mut self.stdout {
            let mut read_buf = ReadBuf::new(&mut buf);
            match Pin::new(stdout).poll_read(cx, &mut read_buf) {
                Poll::Ready(Ok(())) => {
                    let data = read_buf.filled().to_vec();
                    self.drain_stderr();
                    if data.is_empty() {
                        self.stdout = None;
                    } else {
                        self.pending.push_back(Chunk::Stdout(data));
                    }
                    if let Some(chunk) = self.pending.pop_front() {
                        return Poll::Ready(Ok(Some(chunk)));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.stdout.is_none() {
            if self.stderr.is_some() {
                // Woken by stderr (above) or by the deadline.
                let deadline = self.stderr_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSING_STDERR)));
                if deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            // The far side is gone; what it said on stderr has been passed on.
            return Poll::Ready(Ok(None));
        }
        Poll::Pending
    }

    fn is_closed(&mut self) -> bool {
        self.stdout.is_none() || !matches!(self.child.try_wait(), Ok(None))
    }
}
