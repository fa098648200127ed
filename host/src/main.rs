//! The `orthrus` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orthrus::config::Config;
use orthrus::db::Db;

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
    },
    /// Bring the database schema up to date (serve does this too).
    Migrate {
        /// Only show which migrations are applied and which are pending.
        #[arg(long)]
        status: bool,
    },
    /// Check a configuration file and print the settings in effect.
    CheckConfig,
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.make_paths_absolute().context("cannot resolve the data directory")?;
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orthrus: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(cli.config.as_ref())?;
    match cli.command {
        Command::Serve { demo } => orthrus::server::serve(config, demo).await,
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
            println!("{config:#?}");
            Ok(())
        }
    }
}
