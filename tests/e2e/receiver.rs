//! Real receivers on loopback for what notifiers send: an HTTP server that
//! records each request (and can refuse the first ones on a path), and
//! aiosmtpd, Python's SMTP server, writing the mails it receives to a
//! maildir.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// The status it was answered with.
    pub status: u16,
    /// Which run of the server the test was in when it arrived.
    pub run: usize,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Path prefix to the number of requests still to refuse with 500.
    refuse: BTreeMap<String, usize>,
    run: usize,
    /// How long each answer waits (a slow receiver).
    delay: Duration,
}

pub struct HttpReceiver {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl HttpReceiver {
    pub fn start() -> HttpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        HttpReceiver { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers the next `count` requests under `prefix` with a 500.
    pub fn refuse(&self, prefix: &str, count: usize) {
        self.state.lock().unwrap().refuse.insert(prefix.to_owned(), count);
    }

    /// Answers each request only after `delay`.
    pub fn slow_down(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// Marks the requests that arrive from now on as those of the next run.
    pub fn next_run(&self) {
        self.state.lock().unwrap().run += 1;
    }

    /// What arrived under `prefix`, in order.
    pub fn received(&self, prefix: &str) -> Vec<Received> {
        self.state.lock().unwrap().received.iter().filter(|r| r.path.starts_with(prefix)).cloned().collect()
    }
}

fn serve(stream: std::net::TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let (method, path) = (words.next().unwrap_or("").to_owned(), words.next().unwrap_or("").to_owned());
        let mut headers = BTreeMap::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let delay = state.lock().unwrap().delay;
        std::thread::sleep(delay);
        let status = {
            let mut state = state.lock().unwrap();
            let refused =
                state.refuse.iter_mut().find(|(prefix, left)| path.starts_with(prefix.as_str()) && **left > 0);
            let status = match refused {
                Some((_, left)) => {
                    *left -= 1;
                    500
                }
                None if path.contains("/statuses/") => 201,
                None => 200,
            };
            let run = state.run;
            state.received.push(Received {
                method,
                path,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                status,
                run,
            });
            status
        };
        let text = if status == 500 { "refused on purpose" } else { "{}" };
        write!(
            writer,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
        writer.flush()?;
    }
}

/// aiosmtpd on loopback, saving mails to a maildir.
pub struct SmtpReceiver {
    pub port: u16,
    maildir: PathBuf,
    child: Child,
}

impl SmtpReceiver {
    pub fn start(dir: &Path) -> SmtpReceiver {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let maildir = dir.join("maildir");
        let mut command = Command::new("/usr/bin/python3");
        command
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::harness::die_with_parent(&mut command);
        let child = command.spawn().expect("python3 with aiosmtpd (Debian: python3-aiosmtpd)");
        let ready = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(ready, "aiosmtpd did not start on port {port}");
        SmtpReceiver { port, maildir, child }
    }

    /// The mails received so far, as text.
    pub fn mails(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = ["new", "cur"]
            .iter()
            .filter_map(|d| std::fs::read_dir(self.maildir.join(d)).ok())
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect()
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
