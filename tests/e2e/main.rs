//! End-to-end tests: the real `orthrus` binary, real Nix builds, SQLite and
//! a real PostgreSQL server, driven over HTTP like a user or a deploy tool.
//! Every scenario runs on both databases.

mod harness;

mod api;
mod cache;
mod cluster;
mod comparison;
mod daemon;
mod declarative;
mod deploy;
mod evaluation;
mod events;
mod failures;
mod first_run;
mod gc;
mod hooks;
mod hostile;
mod inputs;
mod machines;
mod notify;
mod paper;
mod plugins;
mod publish;
mod receiver;
mod renderers;
mod restart;
mod retention;
mod rights;
mod sandbox;
mod scheduling;
mod scopes;
mod sdk_readme;
mod sshd;
mod strangers;
mod ui;
mod vcs;
mod wit_versions;
