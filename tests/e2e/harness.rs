//! The test bench: the real `orthrus` binary on a free port with a fresh
//! data directory, on SQLite or on a real PostgreSQL server started for the
//! test run, the machine's real Nix, and an HTTP client that talks to it
//! like a deploy script would.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Nix settings for a machine where Nix runs as root without a daemon and
/// without network; passed to the server through NIX_CONFIG.
pub const NIX_CONFIG: &str = "build-users-group =\nsandbox = false\nsubstituters =\n";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a scenario on both databases, as two tests.
#[macro_export]
macro_rules! on_both_backends {
    ($scenario:ident) => {
        mod $scenario {
            #[test]
            fn sqlite() {
                super::$scenario($crate::harness::Backend::Sqlite);
            }
            #[test]
            fn postgres() {
                super::$scenario($crate::harness::Backend::Postgres);
            }
        }
    };
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A unique word for this test process and call, to make derivations
/// unique so that nothing is found already built in the shared store.
pub fn nonce() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{}-{}-{}", std::process::id(), nanos, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Makes a child die with the thread that started it, so no server
/// outlives a test that panicked.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe; this runs in the child before exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Builds a plugin of `tests/plugins` (once per test run) and returns its
/// component. Each is built on its own: built together, cargo would give
/// the SDK the features of all of them.
pub fn test_plugin(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = root.join("target").join("test-plugins");
    let component = target.join(format!("wasm32-wasip2/release/orthrus_test_plugin_{}.wasm", name.replace('-', "_")));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let built_ok = build_wasm(&root.join(format!("tests/plugins/{name}/Cargo.toml")), &target);
        assert!(built_ok, "building the test plugin {name} failed");
        built.push(name.to_owned());
    }
    component
}

/// Builds a plugin crate for `wasm32-wasip2` in release mode, as a plugin
/// author does (without this build's flags, meant for the host).
pub fn build_wasm(manifest: &Path, target_dir: &Path) -> bool {
    Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cargo")
        .success()
}

// ---------------------------------------------------------------- PostgreSQL

struct Postgres {
    port: u16,
    bin: PathBuf,
}

fn postgres_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("ORTHRUS_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is needed for the tests: install the postgresql package (see .ci/run)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").is_file())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL server under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// PostgreSQL refuses to run as root: as root, run it as `postgres`. The
/// program runs as the child itself (its user and group set before exec,
/// not through `runuser`, whose own child would outlive the parent-death
/// signal and keep a server running after the tests).
fn as_postgres_user(program: &Path) -> Command {
    let mut command = Command::new(program);
    if is_root() {
        // SAFETY: getpwnam is given a NUL-terminated name; its answer is
        // read at once, before any other call could reuse its buffer.
        let (uid, gid) = unsafe {
            let entry = libc::getpwnam(c"postgres".as_ptr());
            assert!(!entry.is_null(), "there is no postgres user (Debian: apt install postgresql)");
            ((*entry).pw_uid, (*entry).pw_gid)
        };
        use std::os::unix::process::CommandExt;
        command.uid(uid).gid(gid);
    }
    command
}

/// One PostgreSQL server for the whole test process, on a private data
/// directory and port; it dies with the process.
fn postgres() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| {
        let bin = postgres_bin_dir();
        remove_stale_clusters();
        let dir = std::env::temp_dir().join(format!("orthrus-test-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let status = Command::new("chown").arg("postgres:postgres").arg(&dir).status().unwrap();
            assert!(status.success(), "cannot give {} to the postgres user", dir.display());
        }
        let data = dir.join("data");
        let output = as_postgres_user(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(output.status.success(), "initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        let port = free_port();
        let (tx, rx) = std::sync::mpsc::channel();
        let postgres = bin.join("postgres");
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        // The server is started from a thread that never ends, because the
        // parent-death signal follows the thread that spawned the child.
        std::thread::spawn(move || {
            let mut command = as_postgres_user(&postgres);
            command
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .args(["-c", "max_connections=400", "-k"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(log);
            die_with_parent(&mut command);
            let child = command.spawn();
            tx.send(child.map(|c| c.id()).map_err(|e| e.to_string())).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().unwrap().expect("cannot start PostgreSQL");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start within 30 seconds");
            std::thread::sleep(Duration::from_millis(100));
        }
        Postgres { port, bin }
    })
}

/// Clusters of earlier test runs whose process is gone.
fn remove_stale_clusters() {
    for entry in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("orthrus-test-pg-") else { continue };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A fresh, empty PostgreSQL database; returns its URL.
pub fn postgres_database() -> String {
    let server = postgres();
    let name = format!("orthrus_{}", nonce().replace('-', "_"));
    let output = Command::new(server.bin.join("createdb"))
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "postgres", &name])
        .output()
        .unwrap();
    assert!(output.status.success(), "createdb failed: {}", String::from_utf8_lossy(&output.stderr));
    format!("postgres://postgres@127.0.0.1:{}/{name}", server.port)
}

// ---------------------------------------------------------------- The server

/// A running `orthrus serve`.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub config_path: PathBuf,
    /// More environment for the server and the CLI (`Options::env`).
    pub env: Vec<(String, String)>,
    nix_config: Option<String>,
    serve_args: Vec<String>,
    run_as: Option<(u32, u32)>,
    /// The `orthrus` binary run (a copy the other user can reach, for `run_as`).
    binary: PathBuf,
    child: Option<Child>,
    agent: ureq::Agent,
    /// An API token of the `admin` user, which the plain request methods use.
    pub admin_token: String,
    /// The database (empty: SQLite in the data directory).
    database_url: String,
    /// As started, for peers (`Server::peer`).
    options: Options,
    /// Whether its log is printed when the test fails (a peer's: the
    /// test's messages quote the log of the process it asked).
    tell_log_on_failure: bool,
    /// Where its projects' `path` inputs may be (`evaluator.allowed_path_roots`).
    root: PathBuf,
}

/// Who a request claims to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    Token(String),
    /// A `hydra_session` cookie, with the Origin header a browser on this
    /// server's pages would send, or none.
    Session {
        cookie: String,
        origin: Option<String>,
    },
}

/// Settings a test may change.
#[derive(Debug, Clone)]
pub struct Options {
    pub max_jobs: usize,
    /// More lines for the `[queue]` table.
    pub queue_config: String,
    /// More lines for the `[evaluator]` table.
    pub evaluator_config: String,
    /// More lines for the `[web]` table.
    pub web_config: String,
    /// More tables at the end of the file.
    pub extra_tables: String,
    /// The `[gc]` table's lines; `None`: roots in the test's own directory
    /// (never in the real `/nix/var/nix/gcroots`, which no test collects).
    pub gc_config: Option<String>,
    /// More environment for the server and the CLI (a store of the test's
    /// own, say).
    pub env: Vec<(String, String)>,
    /// `NIX_CONFIG` for the server and the CLI; `None`: not set at all, as
    /// on a newcomer's machine.
    pub nix_config: Option<String>,
    /// More arguments for `orthrus serve` (`--demo`).
    pub serve_args: Vec<String>,
    /// The user (uid, gid) the server and the CLI run as; `None`: this one.
    pub run_as: Option<(u32, u32)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_jobs: 4,
            queue_config: String::new(),
            evaluator_config: String::new(),
            web_config: String::new(),
            extra_tables: String::new(),
            gc_config: None,
            env: Vec::new(),
            nix_config: Some(NIX_CONFIG.to_owned()),
            serve_args: Vec::new(),
            run_as: None,
        }
    }
}

/// An HTTP answer: status, headers we look at, and the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub content_type: String,
    pub set_cookie: Option<String>,
    pub vary: Option<String>,
    pub csp: Option<String>,
    /// `Server-Timing`: the database queries the answer took.
    pub server_timing: Option<String>,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// How many database queries the answer took, from `Server-Timing`.
    pub fn queries(&self) -> Option<u32> {
        let timing = self.server_timing.as_deref()?;
        let count = timing.split("desc=\"").nth(1)?.split(' ').next()?;
        count.parse().ok()
    }
}

/// The configuration file of a server in `dir` on `database_url`.
fn config_text(dir: &Path, root: &Path, database_url: &str, port: u16, options: &Options) -> String {
    let poll = if options.evaluator_config.contains("poll_interval_secs") { "" } else { "poll_interval_secs = 1" };
    format!(
        r#"
data_dir = "{data}"
database_url = "{database_url}"

[web]
listen = "127.0.0.1:{port}"
{web}

[evaluator]
{poll}
workers = 2
allowed_path_roots = ["{root}"]
{evaluator}

[queue]
max_jobs = {max_jobs}
{queue}

[gc]
{gc}

{extra_tables}
"#,
        data = dir.join("data").display(),
        root = root.display(),
        max_jobs = options.max_jobs,
        evaluator = options.evaluator_config,
        web = options.web_config,
        extra_tables = options.extra_tables,
        queue = options.queue_config,
        gc = options.gc_config.clone().unwrap_or_else(|| format!("roots_dir = \"{}\"", dir.join("gcroots").display())),
    )
}

impl Server {
    pub fn start(backend: Backend) -> Server {
        Server::start_with(backend, Options::default())
    }

    pub fn start_with(backend: Backend, options: Options) -> Server {
        let dir = tempfile::Builder::new().prefix("orthrus-e2e-").tempdir().unwrap();
        let database_url = match backend {
            Backend::Sqlite => String::new(),
            Backend::Postgres => postgres_database(),
        };
        let port = free_port();
        let config = config_text(dir.path(), dir.path(), &database_url, port, &options);
        let config_path = dir.path().join("orthrus.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut binary = PathBuf::from(env!("CARGO_BIN_EXE_orthrus"));
        if let Some((uid, gid)) = options.run_as {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&config_path, Some(uid), Some(gid)).unwrap();
            // The build tree may be out of the other user's reach.
            let copy = dir.path().join("orthrus");
            std::fs::copy(&binary, &copy).unwrap();
            binary = copy;
        }
        // A fresh connection per request: a pooled one the server has just
        // closed fails the next request with "peer disconnected" (seen once
        // under a loaded CI), which says nothing about the server.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let root = dir.path().to_owned();
        let mut server = Server {
            url: format!("http://127.0.0.1:{port}"),
            database_url,
            options: options.clone(),
            dir,
            config_path,
            env: options.env.clone(),
            nix_config: options.nix_config.clone(),
            serve_args: options.serve_args.clone(),
            run_as: options.run_as,
            binary,
            child: None,
            agent,
            admin_token: String::new(),
            tell_log_on_failure: false,
            root,
        };
        server.cli_ok(&["user", "add", "admin", "--role", "admin", "--password-stdin"], Some("admin-password\n"));
        server.admin_token =
            server.cli_ok(&["user", "token", "admin", "--scope", "all", "--name", "tests"], None).trim().to_owned();
        server.launch();
        server
    }

    /// Another process on this server's PostgreSQL database, in a directory
    /// of its own (as on another host, but for the shared Nix store),
    /// started with `orthrus serve ARGS`, `--roles …` say. It shares the
    /// users and so the admin token.
    pub fn peer(&self, serve_args: &[&str]) -> Server {
        assert!(!self.database_url.is_empty(), "peers share a PostgreSQL database");
        let dir = tempfile::Builder::new().prefix("orthrus-e2e-").tempdir().unwrap();
        let port = free_port();
        let options =
            Options { serve_args: serve_args.iter().map(|a| a.to_string()).collect(), ..self.options.clone() };
        let config_path = dir.path().join("orthrus.toml");
        // Sources are written under the first process's directory.
        let config = config_text(dir.path(), &self.root, &self.database_url, port, &options);
        std::fs::write(&config_path, config).unwrap();
        let mut peer = Server {
            url: format!("http://127.0.0.1:{port}"),
            database_url: self.database_url.clone(),
            options: options.clone(),
            dir,
            config_path,
            env: options.env.clone(),
            nix_config: options.nix_config.clone(),
            serve_args: options.serve_args.clone(),
            run_as: None,
            binary: self.binary.clone(),
            child: None,
            agent: self.agent.clone(),
            admin_token: self.admin_token.clone(),
            tell_log_on_failure: true,
            root: self.root.clone(),
        };
        peer.launch();
        peer
    }

    /// The server's process id (for signals a test sends it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// The environment and user every run of the binary gets.
    fn set_nix_config(&self, command: &mut Command) {
        match &self.nix_config {
            Some(config) => command.env("NIX_CONFIG", config),
            None => command.env_remove("NIX_CONFIG"),
        };
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            // (std drops root's supplementary groups as it switches.)
            command.uid(uid).gid(gid).env("HOME", self.dir.path()).env_remove("USER");
        }
    }

    /// Runs `orthrus ARGS --config …`; returns its output.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.set_nix_config(&mut command);
        let mut child = command.spawn().expect("cannot run orthrus");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Runs the CLI, which must succeed; returns its standard output.
    pub fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let output = self.cli(args, stdin);
        assert!(output.status.success(), "orthrus {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .args(&self.serve_args)
            .arg("--config")
            .arg(&self.config_path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info,orthrus=debug,sqlx=warn,sea_orm=warn,sea_orm_migration=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.set_nix_config(&mut command);
        die_with_parent(&mut command);
        self.child = Some(command.spawn().expect("cannot start orthrus"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("orthrus exited at start ({status}):\n{}", self.log());
            }
            if self.agent.get(&self.url).call().is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "orthrus did not answer within 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server process's resident memory now and at its peak (`VmRSS`,
    /// `VmHWM`), in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}"));
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Kills the server without warning, as a power cut would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory and database.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let start = log.len().saturating_sub(20_000);
        let start = (start..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(log.len());
        log[start..].to_owned()
    }

    /// A directory the server may read `path` inputs from.
    pub fn source_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn answer(&self, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut response = result.unwrap_or_else(|e| panic!("HTTP request failed: {e}\n{}", self.log()));
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let location = header("location");
        let content_type = header("content-type").unwrap_or_default();
        let set_cookie = header("set-cookie");
        let vary = header("vary");
        let csp = header("content-security-policy");
        let server_timing = header("server-timing");
        let retry_after = header("retry-after");
        let body = response.body_mut().with_config().limit(256 << 20).read_to_string().unwrap_or_default();
        Answer {
            status: response.status().as_u16(),
            location,
            content_type,
            set_cookie,
            vary,
            csp,
            server_timing,
            retry_after,
            body,
        }
    }

    /// A request as `who`: `body` is (content type, text).
    pub fn request(&self, who: &Identity, method: &str, path: &str, body: Option<(&str, &str)>) -> Answer {
        self.request_with(who, method, path, body, &[("Accept", "application/json")])
    }

    /// A request with the given headers (and no default Accept).
    pub fn request_with(
        &self,
        who: &Identity,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.url) };
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        match who {
            Identity::Anonymous => {}
            Identity::Token(token) => builder = builder.header("Authorization", format!("Bearer {token}")),
            Identity::Session { cookie, origin } => {
                builder = builder.header("Cookie", format!("hydra_session={cookie}"));
                if let Some(origin) = origin {
                    builder = builder.header("Origin", origin);
                }
            }
        }
        let result = match body {
            Some((content_type, text)) => {
                let request = builder.header("Content-Type", content_type).body(text.to_owned()).unwrap();
                self.agent.run(request)
            }
            None => self.agent.run(builder.body(()).unwrap()),
        };
        let answer = self.answer(result);
        if answer.status == 500 {
            // Shown only when the test fails: what the server said and logged.
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("{method} {path} answered 500: {}\n--- server log, last lines ---", answer.body);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        answer
    }

    pub fn admin(&self) -> Identity {
        Identity::Token(self.admin_token.clone())
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request(&self.admin(), "GET", path, None)
    }

    /// GET of a page as a browser asks for it, by the admin; it must be a
    /// page, and 200.
    pub fn get_page(&self, path: &str) -> String {
        let answer = self.request_with(&self.admin(), "GET", path, None, &[("Accept", "text/html")]);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert!(answer.content_type.starts_with("text/html"), "{path}: {}", answer.content_type);
        answer.body
    }

    /// GET that must succeed with JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let answer = self.get(path);
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
        answer.json()
    }

    /// GET following redirects, as `curl --location` does.
    pub fn get_following(&self, path: &str) -> Answer {
        self.get_following_as(&self.admin(), path)
    }

    pub fn get_following_as(&self, who: &Identity, path: &str) -> Answer {
        let mut answer = self.request(who, "GET", path, None);
        let mut hops = 0;
        while answer.status == 302 {
            let location = answer.location.clone().expect("302 without Location");
            assert!(location.starts_with("http://"), "Location must be absolute: {location}");
            answer = self.request(who, "GET", &location, None);
            hops += 1;
            assert!(hops < 5, "redirect loop");
        }
        answer
    }

    pub fn put_raw(&self, path: &str, body: &str) -> Answer {
        self.request(&self.admin(), "PUT", path, Some(("application/json", body)))
    }

    pub fn put(&self, path: &str, body: &Value) -> Answer {
        self.put_raw(path, &body.to_string())
    }

    pub fn post(&self, path: &str) -> Answer {
        self.request(&self.admin(), "POST", path, None)
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.request(&self.admin(), "DELETE", path, None)
    }

    /// Logs in with a password; returns the session cookie's value.
    pub fn login(&self, username: &str, password: &str) -> String {
        let body = serde_json::json!({ "username": username, "password": password }).to_string();
        let answer = self.request(&Identity::Anonymous, "POST", "/login", Some(("application/json", &body)));
        assert_eq!(answer.status, 302, "login as {username}: {}", answer.body);
        let cookie = answer.set_cookie.expect("login sets a cookie");
        let value = cookie.split(';').next().unwrap().strip_prefix("hydra_session=").expect("hydra_session cookie");
        value.to_owned()
    }

    /// Polls `check` until it gives a value, or fails the test with the
    /// server's log after `timeout`.
    pub fn wait_for<T>(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}\n--- server log ---\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates a project and a jobset evaluating `expr_file` from the
    /// directory `source` (a `path` input named `src`), plus extra inputs.
    pub fn create_jobset(&self, project: &str, jobset: &str, source: &Path, expr_file: &str, inputs: Value) {
        let answer = self.put(
            &format!("/project/{project}"),
            &serde_json::json!({ "displayname": project, "enabled": true, "visible": true }),
        );
        assert!(matches!(answer.status, 200 | 201), "PUT project: {}", answer.body);
        let answer = self.put_jobset(project, jobset, source, expr_file, inputs, serde_json::json!({}));
        assert_eq!(answer.status, 201, "PUT jobset: {}", answer.body);
    }

    /// Creates or changes a jobset evaluating `expr_file` from the
    /// directory `source` (a `path` input named `src`), plus extra inputs;
    /// `settings` adds to the jobset's fields or overrides them (`keepnr`).
    pub fn put_jobset(
        &self,
        project: &str,
        jobset: &str,
        source: &Path,
        expr_file: &str,
        inputs: Value,
        settings: Value,
    ) -> Answer {
        let mut all_inputs = serde_json::json!({ "src": { "type": "path", "value": source.display().to_string() } });
        for (name, input) in inputs.as_object().unwrap() {
            all_inputs[name] = input.clone();
        }
        let mut body = serde_json::json!({
            "enabled": 1,
            "visible": true,
            "nixexprinput": "src",
            "nixexprpath": expr_file,
            "checkinterval": 0,
            "schedulingshares": 100,
            "inputs": all_inputs,
        });
        for (field, value) in settings.as_object().unwrap() {
            body[field] = value.clone();
        }
        self.put(&format!("/jobset/{project}/{jobset}"), &body)
    }

    /// Evaluations of a jobset, newest first.
    pub fn evals(&self, project: &str, jobset: &str) -> Vec<Value> {
        self.get_json(&format!("/jobset/{project}/{jobset}/evals"))["evals"].as_array().unwrap().clone()
    }

    /// Waits for the jobset to have `count` evaluations; returns the newest.
    pub fn wait_for_evals(&self, project: &str, jobset: &str, count: usize) -> Value {
        self.wait_for(&format!("evaluation {count} of {project}:{jobset}"), Duration::from_secs(120), || {
            let evals = self.evals(project, jobset);
            (evals.len() >= count).then(|| evals[0].clone())
        })
    }

    /// Waits until every build of an evaluation has finished; returns them by job name.
    pub fn wait_for_eval_builds(&self, eval_id: i64) -> std::collections::BTreeMap<String, Value> {
        self.wait_for(&format!("the builds of evaluation {eval_id}"), Duration::from_secs(180), || {
            let builds = self.get_json(&format!("/eval/{eval_id}/builds"));
            let builds = builds.as_array().unwrap();
            builds
                .iter()
                .all(|b| b["finished"] == 1)
                .then(|| builds.iter().map(|b| (b["job"].as_str().unwrap().to_owned(), b.clone())).collect())
        })
    }

    /// Asks for an evaluation now, as a push hook would.
    pub fn push(&self, project: &str, jobset: &str, force: bool) {
        let force = if force { "&force=1" } else { "" };
        let answer = self.post(&format!("/api/push?jobsets={project}:{jobset}{force}"));
        assert_eq!(answer.status, 200, "push: {}", answer.body);
        assert_eq!(answer.json()["jobsetsTriggered"], serde_json::json!([format!("{project}:{jobset}")]));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.tell_log_on_failure && std::thread::panicking() {
            eprintln!("--- log of the process serve {:?} ({}) ---\n{}", self.serve_args, self.url, self.log());
        }
        self.kill9();
    }
}

/// Writes a file, creating its directory.
pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// The Nix helper every test expression starts with: a derivation built by
/// /bin/sh with coreutils on PATH, made unique by the `nonce` input.
/// A Nix command with the tests' settings (no build users, no sandbox,
/// no substituters).
pub fn nix(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).env("NIX_CONFIG", NIX_CONFIG).output().unwrap()
}

/// The same, which must succeed; its standard output.
#[track_caller]
pub fn nix_ok(args: &[&str]) -> String {
    let output = nix(args);
    assert!(output.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

pub const MK: &str = r#"
  mk = name: script: derivation {
    inherit name nonce;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
  };
"#;

/// The sha256 of a file, hex, computed by the test itself.
pub fn sha256_hex(path: &str) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}
