//! The `orthrus` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orthrus::config::Config;
use orthrus::db::Db;
use orthrus::domain::ProcessRoles;
use orthrus::parts::Parts;

/// Orthrus: continuous integration and releases for Nix projects.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file (TOML). Without one, every setting has its default.
    #[arg(long, short, global = true, env = "ORTHRUS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: web and API, evaluator and queue runner.
    Serve {
        /// Also create a demo project that builds with the local Nix.
        #[arg(long)]
        demo: bool,
        /// The roles this process runs, comma-separated, of web, evaluator,
        /// queue, notifier, publisher, maintenance (default: the
        /// configuration's `roles`, else all). Only on PostgreSQL may a
        /// process run fewer than all.
        #[arg(long, value_parser = parse_roles)]
        roles: Option<ProcessRoles>,
    },
    /// Bring the database schema up to date (serve does this too).
    Migrate {
        /// Only show which migrations are applied and which are pending.
        #[arg(long)]
        status: bool,
    },
    /// Check a configuration file and print the settings in effect.
    CheckConfig,
    /// Manage users and their API tokens.
    #[command(subcommand)]
    User(UserCommand),
    /// Show plugins: what each asks for and what it is granted.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Manage projects kept in files.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Check the local Nix as `serve` does before building, and print the
    /// checks with the Nix settings in effect; exits non-zero when builds
    /// cannot run.
    Doctor,
    /// Show (--dry-run) or make (--apply) a full update of the GC roots of
    /// what the server keeps, as the server does every gc.interval_secs.
    GcRoots {
        #[arg(long, conflicts_with = "apply", required_unless_present = "apply")]
        dry_run: bool,
        #[arg(long)]
        apply: bool,
    },
    /// Write a consistent copy of the SQLite database to FILE while the
    /// server runs (restore: put it in a data directory as orthrus.sqlite).
    /// PostgreSQL is backed up with pg_dump.
    Backup { file: PathBuf },
    /// Publish store paths with their closures to a binary cache, as the
    /// server publishes builds (signed with binary_cache.secret_key_file):
    /// for outputs built before the cache was configured, say.
    Publish {
        /// A cache URI as in [[binary_cache.publish]] (s3://, file://, ssh://).
        uri: String,
        /// An AWS credentials file, for s3://.
        #[arg(long)]
        credentials_file: Option<PathBuf>,
        /// How many paths are written at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(required = true)]
        paths: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Make the projects of a file (TOML, or JSON) as it describes them:
    /// creates what is missing, changes what differs, disables the jobsets
    /// it no longer lists. Prints each change; a second run prints none.
    /// An invalid file is refused as a whole.
    Apply { file: PathBuf },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// The loaded plugins (built in, and those of plugins.dir).
    List,
    /// Load a component and show what it is, asks for and would be granted.
    Inspect { file: PathBuf },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user, or change an existing one.
    Add {
        username: String,
        #[arg(long)]
        full_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// A role (admin, create-projects, restart-jobs, bump-to-front,
        /// cancel-build, eval-jobset); repeat for several. Replaces the
        /// user's roles when given.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users and their roles.
    List,
    /// Delete a user (with their sessions and tokens).
    Delete { username: String },
    /// Create an API token for a user and print it (it is shown only once).
    Token {
        username: String,
        /// What the token may do: all, read, eval, builds, projects, admin; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// A note saying what the token is for.
        #[arg(long, default_value = "")]
        name: String,
        /// Days until the token stops working (default: never).
        #[arg(long)]
        expires_days: Option<u32>,
    },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.make_paths_absolute().context("cannot resolve the data directory")?;
    // From here on, no log line shows a secret of this configuration.
    orthrus::redact::install(orthrus::redact::Redactor::for_config(&config));
    Ok(config)
}

fn parse_roles(list: &str) -> Result<ProcessRoles, String> {
    ProcessRoles::parse_list(list).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn".into()),
        )
        .with_writer(orthrus::redact::RedactingStderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orthrus: {}", orthrus::redact::current().redact(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(cli.config.as_ref())?;
    match cli.command {
        Command::Serve { demo, roles } => orthrus::server::serve(config, demo, roles).await,
        Command::Migrate { status } => {
            let url = config.database_url();
            let db = Db::connect(&url)
                .await
                .with_context(|| format!("cannot open the database {}", orthrus::server::redact(&url)))?;
            if !status {
                db.migrate().await.context("migration failed")?;
            }
            let (applied, pending) = db.migration_status().await?;
            for name in applied {
                println!("applied  {name}");
            }
            for name in pending {
                println!("pending  {name}");
            }
            Ok(())
        }
        Command::CheckConfig => {
            println!("{}", orthrus::redact::current().redact(&format!("{config:#?}")));
            Ok(())
        }
        Command::Plugin(command) => plugin_command(&config, command).await,
        Command::Project(ProjectCommand::Apply { file }) => {
            let Parts { db, inputs, .. } = Parts::open(&config).await?;
            let report = orthrus::projects::file::apply_file(&db, &inputs, &file).await?;
            if report.is_empty() {
                println!("nothing to change: {} is applied", file.display());
            }
            for line in report {
                println!("{line}");
            }
            Ok(())
        }
        Command::User(command) => user_command(&orthrus::server::open_db(&config).await?, command).await,
        Command::Doctor => doctor(&config).await,
        Command::GcRoots { apply, .. } => gc_roots_command(&config, apply).await,
        Command::Backup { file } => backup_command(&config, &file).await,
        Command::Publish { uri, credentials_file, concurrency, paths } => {
            let credentials_file = credentials_file.unwrap_or_default();
            let entry = orthrus::config::PublishConfig { uri, credentials_file, concurrency, ..Default::default() };
            publish_command(&config, &entry, &paths).await
        }
    }
}

async fn plugin_command(config: &Config, command: PluginCommand) -> anyhow::Result<()> {
    use orthrus::plugins::PluginInfo;
    let runtime = Parts::open(config).await?.plugins;
    let show = |info: &PluginInfo| {
        let list = |caps: Vec<String>| if caps.is_empty() { "nothing".to_owned() } else { caps.join(", ") };
        println!("{} {} ({}, orthrus:plugin@{}, {})", info.id, info.metadata.version, info.kind, info.wit, info.source);
        println!("  {}", info.metadata.description);
        if info.metadata.name != info.id.name() {
            println!(
                "  calls itself: {} (as a file of plugins.dir it must be {}.wasm)",
                info.metadata.name, info.metadata.name
            );
        }
        if !info.metadata.handles.is_empty() {
            println!("  handles: {}", info.metadata.handles.join(", "));
        }
        println!("  asks for: {}", list(info.metadata.capabilities.iter().map(ToString::to_string).collect()));
        let mut granted: Vec<String> = info.grants.capabilities().iter().map(ToString::to_string).collect();
        if info.grants.network() {
            granted.push("network (for its programs)".into());
        }
        println!("  granted: {}", list(granted));
        println!("  sha256: {}", info.sha256);
    };
    match runtime.sandbox_unavailable() {
        None => println!("programs run for plugins: in a bubblewrap sandbox"),
        Some(reason) => println!("programs run for plugins: refused, {reason}"),
    }
    match command {
        PluginCommand::List => {
            runtime.plugins().iter().for_each(show);
            for error in runtime.load_errors() {
                println!("not loaded: {error}");
            }
        }
        PluginCommand::Inspect { file } => show(&runtime.inspect(&file, &config.plugins).await?),
    }
    Ok(())
}

async fn user_command(db: &Db, command: UserCommand) -> anyhow::Result<()> {
    use orthrus::db::UserChanges;
    use orthrus::users;
    match command {
        UserCommand::Add { username, full_name, email, roles, password_stdin } => {
            users::check_username(&username)?;
            let roles: std::collections::BTreeSet<String> = roles.into_iter().collect();
            users::check_roles(&roles)?;
            let password_hash = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).context("cannot read the password from standard input")?;
                let password = line.trim_end_matches(['\n', '\r']);
                anyhow::ensure!(
                    password.len() >= users::MIN_PASSWORD_LEN,
                    "the password needs at least {} characters",
                    users::MIN_PASSWORD_LEN
                );
                Some(users::hash_password(password))
            } else {
                None
            };
            let changes = UserChanges { full_name, email, password_hash, roles: (!roles.is_empty()).then_some(roles) };
            let (user, created) = db.save_user(&username, &changes).await?;
            let roles: Vec<&str> = user.roles.iter().map(String::as_str).collect();
            println!(
                "{} user {} (roles: {})",
                if created { "created" } else { "updated" },
                user.username,
                roles.join(", ")
            );
            Ok(())
        }
        UserCommand::List => {
            for user in db.users().await? {
                let roles: Vec<&str> = user.roles.iter().map(String::as_str).collect();
                println!("{}\t{}\t{}\t{}", user.username, user.full_name, user.email, roles.join(","));
            }
            Ok(())
        }
        UserCommand::Delete { username } => {
            anyhow::ensure!(db.delete_user(&username).await?, "there is no user {username}");
            println!("deleted user {username}");
            Ok(())
        }
        UserCommand::Token { username, scopes, name, expires_days } => {
            let user = db.user(&username).await?.with_context(|| format!("there is no user {username}"))?;
            let scopes = users::parse_scopes(scopes.iter().map(String::as_str))?;
            let (secret, _) = users::issue_token(db, user.id, &name, &scopes, expires_days, None).await?;
            println!("{secret}");
            Ok(())
        }
    }
}

/// `orthrus doctor`: the checks `serve` makes, printed.
async fn doctor(config: &orthrus::config::Config) -> anyhow::Result<()> {
    let nix = orthrus::nix::Nix::new(&config.nix);
    let local = orthrus::nix::local::check(&nix).await;
    let mut lines = match &local {
        Ok(local) => local.report(),
        Err(_) => Vec::new(),
    };
    if local.is_ok() {
        let dir = orthrus::gc::roots_dir(config);
        let state = match roots_writable(&dir) {
            Ok(()) => String::new(),
            Err(e) => format!(" (cannot be written: {e}; builds run, but nix-collect-garbage may take them)"),
        };
        lines.push(("GC roots".into(), format!("{}{state}", dir.display())));
    }
    let verdict = match &local {
        Ok(_) => "builds can run".to_owned(),
        Err(unavailable) => format!("nothing can be evaluated or built: {unavailable}"),
    };
    lines.push(("verdict".into(), verdict));
    let width = lines.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, value) in &lines {
        println!("{name:<width$}  {value}");
    }
    if local.is_err() {
        std::process::exit(1);
    }
    Ok(())
}

/// `orthrus gc-roots --dry-run | --apply`: what a full update of the GC
/// roots would do, or doing it (with a sweep of every build for collected
/// outputs).
async fn backup_command(config: &Config, file: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Connected, not migrated: a backup taken with a newer binary before
    // an upgrade must be of the database as it is.
    let db = Db::connect(&config.database_url()).await.context("cannot open the database")?;
    // It holds password hashes and token digests: readable by its owner
    // only, made empty first (VACUUM INTO writes into an empty file), and
    // never over an existing file.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    let started = std::time::Instant::now();
    if let Err(e) = db.backup_to(file).await {
        let _ = std::fs::remove_file(file);
        anyhow::bail!("cannot back up the database to {}: {e}", file.display());
    }
    // VACUUM INTO does not sync what it wrote.
    std::fs::File::open(file).and_then(|f| f.sync_all()).with_context(|| format!("cannot sync {}", file.display()))?;
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    println!("{}: {size} bytes, a consistent copy taken in {:.1} s", file.display(), started.elapsed().as_secs_f64());
    Ok(())
}

async fn publish_command(
    config: &Config,
    entry: &orthrus::config::PublishConfig,
    paths: &[String],
) -> anyhow::Result<()> {
    let nix = orthrus::nix::Nix::new(&config.nix);
    let paths = paths.iter().map(|p| orthrus::nix::StorePath::parse(p)).collect::<Result<Vec<_>, _>>()?;
    let key = orthrus::server::load_cache_key(config)?;
    let key_file = Some(config.binary_cache.secret_key_file.as_path()).filter(|f| !f.as_os_str().is_empty());
    let cache = orthrus::publish::Cache::open(entry, config).map_err(anyhow::Error::msg)?;
    let started = std::time::Instant::now();
    let closure = nix.requisites(&paths).await?;
    let written =
        cache.publish(&nix, &closure, key.as_deref(), key_file, &[], None).await.map_err(anyhow::Error::msg)?;
    println!(
        "{} paths in the closure, {written} written, {} there already, in {:.2} s",
        closure.len(),
        closure.len() - written,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn gc_roots_command(config: &Config, apply: bool) -> anyhow::Result<()> {
    // The default directory depends on who runs this: say so when it is
    // not who owns the server's data.
    if let Ok(metadata) = std::fs::metadata(&config.data_dir) {
        use std::os::unix::fs::MetadataExt;
        let me = orthrus::nix::Account::current();
        if metadata.uid() != me.uid && config.gc.roots_dir.as_os_str().is_empty() {
            eprintln!(
                "warning: {} belongs to uid {}, not to {}: the server's roots may be elsewhere (set gc.roots_dir)",
                config.data_dir.display(),
                metadata.uid(),
                me.name
            );
        }
    }
    let Parts { db, nix, plugins, .. } = Parts::open(config).await?;
    let roots = orthrus::gc::GcRoots::new(config, db, nix, plugins);
    let plan = roots.plan().await.map_err(anyhow::Error::msg)?;
    let verb = if apply { "" } else { "would " };
    for path in &plan.add {
        println!("{verb}add {path}");
    }
    for link in &plan.remove {
        println!("{verb}remove {}", link.display());
    }
    for problem in &plan.problems {
        println!("{problem}: the roots of its project's builds stay");
    }
    let (added, removed) = if apply { ("added", "removed") } else { ("to add", "to remove") };
    let mut removed_count = plan.remove.len();
    if apply {
        removed_count = roots.apply(&plan).await.map_err(anyhow::Error::msg)?;
    }
    println!(
        "{}: {} roots kept, {} {added}, {removed_count} {removed}, {} too young to remove, {} held back, {} not made by Orthrus",
        roots.dir().display(),
        plan.kept,
        plan.add.len(),
        plan.young,
        plan.held,
        plan.foreign
    );
    if apply {
        let (_, collected) =
            roots.sweep_collected(None, &plan.wanted, std::time::Duration::MAX).await.map_err(anyhow::Error::msg)?;
        println!("{collected} builds found with their outputs collected");
    }
    Ok(())
}

/// Whether the roots directory (or, while it is missing, the nearest
/// directory above it) may be written by this user.
fn roots_writable(dir: &std::path::Path) -> std::io::Result<()> {
    let existing = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
    let path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::access(path.as_ptr(), libc::W_OK) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}
