//! The box's plan: the `bwrap` arguments every run shares (namespaces,
//! the system read-only, `/etc` files, the allowed roots minus the
//! server's own files), checked once by a probe, and the command of one
//! run (its scratch directory, credentials, network, environment).

use super::*;

#[derive(Debug)]
pub(super) struct Plan {
    bwrap: PathBuf,
    /// Namespaces and the mounts every run shares, in order.
    base: Vec<OsString>,
    path: String,
}

impl Plan {
    pub(super) fn command(&self, run: &Run) -> Result<Command, String> {
        let plan = self;
        let program = find_program(run.program, &plan.path)
            .ok_or_else(|| format!("{} is not installed (not found on PATH)", run.program))?;
        let mut args = plan.base.clone();
        if run.network {
            args.push("--share-net".into());
        }
        push(&mut args, ["--bind"]);
        args.push(run.scratch.into());
        args.push("/scratch".into());
        let mut env: Vec<(&str, String)> = vec![
            ("PATH", plan.path.clone()),
            ("HOME", HOME.into()),
            ("LANG", "C.UTF-8".into()),
            ("TZ", "UTC".into()),
            // No system or global git configuration; no prompts.
            ("GIT_CONFIG_NOSYSTEM", "1".into()),
            ("GIT_CONFIG_GLOBAL", "/dev/null".into()),
            ("GIT_TERMINAL_PROMPT", "0".into()),
        ];
        let mut ssh = "ssh -F /dev/null -o BatchMode=yes -o GlobalKnownHostsFile=/dev/null".to_owned();
        ssh.push_str(" -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes");
        let credentials = run.credentials;
        if let Some(key) = &credentials.ssh_key {
            mount_file(&mut args, key, SSH_KEY)?;
            ssh.push_str(&format!(" -i {SSH_KEY}"));
        }
        match &credentials.known_hosts {
            Some(known_hosts) => {
                mount_file(&mut args, known_hosts, KNOWN_HOSTS)?;
                ssh.push_str(&format!(" -o UserKnownHostsFile={KNOWN_HOSTS}"));
            }
            None => ssh.push_str(" -o UserKnownHostsFile=/dev/null"),
        }
        if let Some(file) = &credentials.git_credentials {
            mount_file(&mut args, file, GIT_CREDENTIALS)?;
            env.push(("GIT_CONFIG_COUNT", "1".into()));
            env.push(("GIT_CONFIG_KEY_0", "credential.helper".into()));
            env.push(("GIT_CONFIG_VALUE_0", format!("store --file={GIT_CREDENTIALS}")));
        }
        env.push(("GIT_SSH_COMMAND", ssh.clone()));
        env.push(("SVN_SSH", ssh));
        push(&mut args, ["--chdir"]);
        args.push(Path::new("/scratch").join(run.workdir).into());
        args.push("--".into());
        args.push(program.into());
        args.extend(run.args.iter().map(OsString::from));

        let mut command = Command::new(&plan.bwrap);
        command.args(args).env_clear();
        // SAFETY: close_range is async-signal-safe; this runs in the forked
        // child before exec. The server's descriptors (sockets, database,
        // logs) are not for the box: closed at exec, whatever opened them.
        unsafe {
            command.pre_exec(|| {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
                Ok(())
            });
        }
        for (name, value) in env {
            command.env(name, value);
        }
        Ok(command)
    }

    /// The box of `settings`. `nested_userns_off` also forbids the
    /// programs to make user namespaces of their own (which needs the box
    /// to have its own user namespace: a machine without them gets a box
    /// without that).
    pub(super) fn new(settings: &SandboxSettings, nested_userns_off: bool) -> Result<Plan, String> {
        let bwrap = find_program(&settings.bwrap, &settings.path).ok_or_else(|| {
            format!(
                "the sandbox program {:?} is not installed (Debian: apt install bubblewrap; or set plugins.bwrap)",
                settings.bwrap
            )
        })?;
        let passwd = write_passwd(&settings.runtime_dir)?;
        let private: Vec<PathBuf> = settings.private.iter().filter_map(|p| std::fs::canonicalize(p).ok()).collect();
        let home = std::env::var_os("HOME").map(PathBuf::from).filter(|h| h.is_absolute() && h != Path::new("/"));
        let mut base: Vec<OsString> = Vec::new();
        push(&mut base, ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]);
        if nested_userns_off {
            push(&mut base, ["--unshare-user", "--disable-userns"]);
        }
        push(&mut base, ["--hostname", "orthrus-plugin"]);
        // Everything bound from the host, to hide the server's files in.
        let mut sources: Vec<PathBuf> = Vec::new();
        // The system's programs and libraries.
        ro_bind_try(&mut base, Path::new("/usr"));
        sources.push("/usr".into());
        for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            let top = Path::new(top);
            match std::fs::read_link(top) {
                // Merged /usr: the same link in the box.
                Ok(target) => {
                    push(&mut base, ["--symlink"]);
                    base.push(target.into());
                    base.push(top.into());
                }
                Err(_) => {
                    ro_bind_try(&mut base, top);
                    sources.push(top.into());
                }
            }
        }
        ro_bind_try(&mut base, Path::new(crate::nix::store_dir()));
        // PATH's directories, but those in a home directory or among the
        // server's own files (a user's `~/bin` is theirs, not the system's).
        for dir in std::env::split_paths(&settings.path).filter_map(|d| std::fs::canonicalize(d).ok()) {
            let personal = home.as_ref().is_some_and(|home| dir.starts_with(home))
                || private.iter().any(|p| dir.starts_with(p))
                || dir.starts_with("/home")
                || dir.starts_with("/root");
            if !personal {
                ro_bind_try(&mut base, &dir);
                sources.push(dir);
            }
        }
        push(&mut base, ["--dir", "/etc"]);
        for name in ETC_FILES {
            ro_bind_try(&mut base, &Path::new("/etc").join(name));
        }
        for name in ["passwd", "group"] {
            push(&mut base, ["--ro-bind"]);
            base.push(passwd.join(name).into());
            base.push(Path::new("/etc").join(name).into());
        }
        push(&mut base, ["--proc", "/proc", "--dev", "/dev"]);
        push(&mut base, ["--size", TMPFS_SIZE, "--tmpfs", "/tmp", "--size", TMPFS_SIZE, "--tmpfs", "/home"]);
        push(&mut base, ["--dir", HOME]);
        // Local repositories, read-only; the server's own files hidden in them.
        let roots: Vec<PathBuf> =
            settings.readable_roots.iter().filter_map(|root| std::fs::canonicalize(root).ok()).collect();
        for root in &roots {
            ro_bind_try(&mut base, root);
        }
        sources.extend(roots.iter().cloned());
        let hidden: Vec<&PathBuf> =
            private.iter().filter(|p| sources.iter().any(|source| p.starts_with(source))).collect();
        hide(&mut base, &hidden);
        // A root the operator allowed inside a hidden directory (the demo's,
        // inside the data directory) is shown again — and what is hidden
        // inside it hidden again.
        let shown_again: Vec<&PathBuf> =
            roots.iter().filter(|root| hidden.iter().any(|h| root.starts_with(h) && *root != *h)).collect();
        if !shown_again.is_empty() {
            for root in &shown_again {
                ro_bind_try(&mut base, root);
            }
            let inside: Vec<&PathBuf> =
                hidden.iter().copied().filter(|h| shown_again.iter().any(|root| h.starts_with(root))).collect();
            hide(&mut base, &inside);
        }
        Ok(Plan { bwrap, base, path: settings.path.clone() })
    }

    /// Reads the box's network namespace: does this machine let bubblewrap
    /// make a box, and is it one (not the server's own namespace)?
    pub(super) async fn probe(&self) -> Result<(), String> {
        let scratch = tempfile::tempdir().map_err(|e| format!("cannot make a directory to try the sandbox in: {e}"))?;
        let args = ["/proc/self/ns/net".to_owned()];
        let run = Run {
            program: "readlink",
            args: &args,
            scratch: scratch.path(),
            workdir: Path::new(""),
            network: false,
            credentials: &Credentials::default(),
        };
        let mut command = self.command(&run)?;
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(20), command.output())
            .await
            .map_err(|_| "the sandbox did not start within 20 seconds".to_owned())?
            .map_err(|e| format!("cannot run {}: {e}", self.bwrap.display()))?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr);
            return Err(format!("{} cannot make a sandbox on this machine: {}", self.bwrap.display(), said.trim()));
        }
        let inside = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let outside = std::fs::read_link("/proc/self/ns/net").map(|l| l.display().to_string()).unwrap_or_default();
        if inside.is_empty() || inside == outside {
            return Err(format!("{} ran the program in the server's own network namespace", self.bwrap.display()));
        }
        Ok(())
    }
}

/// Hides directories under an empty tmpfs and files under `/dev/null`.
fn hide(args: &mut Vec<OsString>, paths: &[&PathBuf]) {
    for path in paths {
        if path.is_dir() {
            push(args, ["--tmpfs"]);
        } else {
            push(args, ["--ro-bind", "/dev/null"]);
        }
        args.push(path.into());
    }
}

fn push<const N: usize>(args: &mut Vec<OsString>, words: [&str; N]) {
    args.extend(words.iter().map(OsString::from));
}

fn ro_bind_try(args: &mut Vec<OsString>, path: &Path) {
    push(args, ["--ro-bind-try"]);
    args.push(path.into());
    args.push(path.into());
}

/// Mounts a credential file read-only at `at`; it must be a regular file.
fn mount_file(args: &mut Vec<OsString>, file: &Path, at: &str) -> Result<(), String> {
    if !std::fs::metadata(file).is_ok_and(|m| m.is_file()) {
        return Err(format!("the granted credential file {} does not exist", file.display()));
    }
    push(args, ["--ro-bind"]);
    args.push(file.into());
    args.push(at.into());
    Ok(())
}

/// A program by name (looked up on `path`) or by absolute path, if it is an
/// executable file.
pub(super) fn find_program(program: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = PathBuf::from(program);
        return (p.is_absolute() && executable(&p)).then_some(p);
    }
    std::env::split_paths(path).map(|dir| dir.join(program)).find(|p| p.is_absolute() && executable(p))
}

/// The box's `/etc/passwd` and `/etc/group`: root and the server's own
/// user, with the box's home (ssh looks its user up).
pub(super) fn write_passwd(dir: &Path) -> Result<PathBuf, String> {
    // SAFETY: getuid and getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let dir = dir.join("sandbox-etc");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut passwd = format!("root:x:0:0:root:{HOME}:/bin/sh\n");
    let mut group = "root:x:0:\n".to_owned();
    if uid != 0 {
        passwd.push_str(&format!("orthrus:x:{uid}:{gid}:orthrus:{HOME}:/bin/sh\n"));
        group.push_str(&format!("orthrus:x:{gid}:\n"));
    }
    for (name, text) in [("passwd", passwd), ("group", group)] {
        let file = dir.join(name);
        std::fs::write(&file, text).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    Ok(dir)
}
