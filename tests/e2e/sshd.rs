//! A real sshd on loopback with its own host key and a key pair made
//! here: a remote build machine (running `nix-store --serve` through a
//! wrapper that logs each call) and a host of private git repositories.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{die_with_parent, write};

/// A feature only the SSH machine has (its Nix is told so too).
pub const REMOTE_FEATURE: &str = "orthrus-remote-feature";
/// A system type only the SSH machine builds (as an extra platform).
pub const REMOTE_SYSTEM: &str = "orthrus-remote-system";

/// An sshd on a loopback port, running `nix-store --serve` through a
/// wrapper that logs each call and gives Nix this machine's test settings.
pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::Builder::new().prefix("orthrus-sshd-").tempdir().unwrap();
        let path = dir.path();
        keygen(&path.join("host_key"));
        keygen(&path.join("client_key"));
        std::fs::copy(path.join("client_key.pub"), path.join("authorized_keys")).unwrap();
        let nix_store =
            String::from_utf8(Command::new("sh").args(["-c", "command -v nix-store"]).output().unwrap().stdout)
                .unwrap()
                .trim()
                .to_owned();
        let wrapper = path.join("remote-nix-store");
        write(
            &wrapper,
            &format!(
                "#!/bin/sh\necho \"$$ $*\" >> {calls}\nexec {nix_store} --option build-users-group '' --option sandbox false \
                 --option substituters '' --option system-features '{REMOTE_FEATURE}' \
                 --option extra-platforms '{REMOTE_SYSTEM}' \"$@\"\n",
                calls = path.join("calls").display(),
            ),
        );
        Command::new("chmod").arg("755").arg(&wrapper).status().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        write(
            &path.join("sshd_config"),
            &format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\n\
                 PidFile {dir}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nPrintMotd no\nPrintLastLog no\n",
                dir = path.display()
            ),
        );
        // Debian's sshd wants its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut sshd = Sshd { port, child: None, dir };
        sshd.launch();
        sshd
    }

    pub fn launch(&mut self) {
        let path = self.dir.path();
        let mut command = Command::new(sshd_program());
        command
            .args(["-D", "-e", "-f"])
            .arg(path.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path.join("sshd.log")).unwrap());
        die_with_parent(&mut command);
        self.child = Some(command.spawn().expect("cannot start sshd (install openssh-server)"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn user() -> String {
        String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().to_owned()
    }

    /// The machine's URI, as steps and `/machines` name it.
    pub fn uri(&self) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}?remote-program={}",
            Sshd::user(),
            self.port,
            self.dir.path().join("remote-nix-store").display()
        )
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// The host's public key line (`ssh-ed25519 AAAA…`).
    pub fn host_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap().trim().to_owned()
    }

    /// How often the server started `nix-store --serve` here.
    pub fn serve_calls(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default().lines().count()
    }

    /// The machine dies: sshd and everything it started (sessions,
    /// `nix-store --serve`, builders) are killed at once.
    pub fn kill_everything(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let root = child.id() as i32;
        let mut doomed = vec![root];
        loop {
            let more: Vec<i32> = processes()
                .into_iter()
                .filter(|(pid, ppid)| doomed.contains(ppid) && !doomed.contains(pid))
                .map(|(pid, _)| pid)
                .collect();
            if more.is_empty() {
                break;
            }
            doomed.extend(more);
        }
        for pid in &doomed {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let _ = child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_everything();
    }
}

/// (pid, parent pid) of every process.
fn processes() -> Vec<(i32, i32)> {
    let mut result = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid …": comm may contain spaces, so read after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { continue };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            result.push((pid, ppid));
        }
    }
    result
}

fn sshd_program() -> PathBuf {
    ["/usr/sbin/sshd", "/usr/bin/sshd"].iter().map(PathBuf::from).find(|p| p.exists()).unwrap_or("sshd".into())
}

pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "orthrus-test", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("ssh-keygen (install openssh-client)");
    assert!(status.success());
}

impl Sshd {
    /// The directory sshd keeps its files in (repositories may go there too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `known_hosts` file that trusts this sshd's host key.
    pub fn known_hosts(&self) -> PathBuf {
        let file = self.dir.path().join("known_hosts");
        write(&file, &format!("[127.0.0.1]:{} {}\n", self.port, self.host_key()));
        file
    }
}
