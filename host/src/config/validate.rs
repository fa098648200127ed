//! Values that parse but cannot work are refused here, each with the key
//! at fault and why.

use super::{Config, HostGrant};
use crate::domain::ProcessRoles;

impl Config {
    /// Whether this database lets a process run only `roles`: SQLite has
    /// one writer and no way to tell another process to wake, so one
    /// process runs them all there.
    pub fn check_roles(&self, roles: ProcessRoles) -> Result<(), String> {
        if roles.is_empty() {
            return Err("name at least one role".into());
        }
        if self.is_sqlite() && !roles.is_all() {
            return Err(format!(
                "{roles} is not every role, and on SQLite one process runs every role: SQLite takes one writer at a \
                 time and cannot wake another process; use a postgres:// database_url to split the roles"
            ));
        }
        Ok(())
    }

    /// The first setting that cannot work, with its key and the reason.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        self.listen_addr().map_err(|m| ("web.listen", m))?;
        let base_url = &self.web.base_url;
        if !(base_url.is_empty() || base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(("web.base_url", "must start with http:// or https://".into()));
        }
        let url = &self.database_url;
        if !(url.is_empty()
            || url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(("database_url", "must be empty (SQLite in data_dir), sqlite:… or postgres://…".into()));
        }
        if self.cluster.lease_secs < 2 {
            return Err(("cluster.lease_secs", "must be at least 2".into()));
        }
        let url = &self.cluster.url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(("cluster.url", "must start with http:// or https://".into()));
        }
        self.check_roles(self.process_roles()).map_err(|m| ("roles", m))?;
        if self.evaluator.workers == 0 {
            return Err(("evaluator.workers", "must be at least 1".into()));
        }
        if self.evaluator.max_concurrent_evals == 0 {
            return Err(("evaluator.max_concurrent_evals", "must be at least 1".into()));
        }
        if self.evaluator.poll_interval_secs == 0 {
            return Err(("evaluator.poll_interval_secs", "must be at least 1".into()));
        }
        if self.evaluator.timeout_secs == 0 {
            return Err(("evaluator.timeout_secs", "must be at least 1".into()));
        }
        if let Some(root) = self.evaluator.allowed_path_roots.iter().find(|r| !r.is_absolute()) {
            return Err(("evaluator.allowed_path_roots", format!("{} is not an absolute path", root.display())));
        }
        if self.plugins.memory_mb == 0 || self.plugins.memory_mb > 4096 {
            return Err(("plugins.memory_mb", "must be between 1 and 4096".into()));
        }
        if self.plugins.timeout_secs == 0 {
            return Err(("plugins.timeout_secs", "must be at least 1".into()));
        }
        for (name, grant) in &self.plugins.grants {
            if let Some(program) = grant.programs.iter().find(|p| p.is_empty() || p.contains('/')) {
                return Err(("plugins.grants", format!("{name}: {program:?} is not a program name (no paths)")));
            }
        }
        for (name, grant) in &self.plugins.grants {
            if let Some(host) = grant.http.iter().find(|h| HostGrant::parse(h).is_err()) {
                return Err(("plugins.grants", format!("{name}: {host:?} is not a host (`name` or `name:port`)")));
            }
            if let Some(file) = grant.credential_files().find(|f| !f.is_absolute()) {
                return Err(("plugins.grants", format!("{name}: {} is not an absolute path", file.display())));
            }
        }
        if self.plugins.bwrap.is_empty() {
            return Err(("plugins.bwrap", "must name the bubblewrap program (default `bwrap`)".into()));
        }
        if self.plugins.fuel_millions == 0
            || self.plugins.render_timeout_ms == 0
            || self.plugins.release_set_timeout_ms == 0
        {
            return Err((
                "plugins",
                "fuel_millions, render_timeout_ms and release_set_timeout_ms must be at least 1".into(),
            ));
        }
        if !self.mail.relay.is_empty() && self.mail.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err((
                "mail.from",
                format!("{:?} is not a mail address (`Name <address>` or `address`)", self.mail.from),
            ));
        }
        let mut notifier_names = std::collections::BTreeSet::new();
        for notifier in &self.notifiers {
            if !notifier_names.insert(notifier.name()) {
                return Err(("notifiers", format!("two notifiers are named {:?}: give one a `name`", notifier.name())));
            }
            // Publishers keep their delivery state under these names.
            if notifier.name().starts_with("publish:") {
                return Err((
                    "notifiers",
                    format!("{:?}: names starting with publish: are the caches'", notifier.name()),
                ));
            }
        }
        let mut publish_names = std::collections::BTreeSet::new();
        for publish in &self.binary_cache.publish {
            if !publish_names.insert(publish.name()) {
                return Err((
                    "binary_cache.publish",
                    format!("two caches are named {:?}: give one a `name`", publish.name()),
                ));
            }
        }
        if self.web.login_failures_per_user == 0 || self.web.login_failures_per_address == 0 {
            return Err(("web", "login_failures_per_user and login_failures_per_address must be at least 1".into()));
        }
        if self.web.login_window_secs == 0 || self.web.header_timeout_secs == 0 {
            return Err(("web", "login_window_secs and header_timeout_secs must be at least 1".into()));
        }
        let retention = &self.retention;
        if retention.interval_secs == 0 {
            return Err(("retention.interval_secs", "must be at least 1".into()));
        }
        for (key, days) in [
            ("retention.events_max_age_days", retention.events_max_age_days),
            ("retention.logs_max_age_days", retention.logs_max_age_days),
            ("retention.evals_min_age_days", retention.evals_min_age_days),
        ] {
            // Past a million days, an age is "never" and still fits in seconds.
            if !(0.0..=1e6).contains(&days) {
                return Err((key, format!("{days} is not a number of days between 0 and 1000000")));
            }
        }
        if self.gc.interval_secs == 0 {
            return Err(("gc.interval_secs", "must be at least 1".into()));
        }
        if !self.gc.roots_dir.as_os_str().is_empty() && !self.gc.roots_dir.is_absolute() {
            return Err(("gc.roots_dir", format!("{} is not an absolute path", self.gc.roots_dir.display())));
        }
        if self.web.session_days == 0 {
            return Err(("web.session_days", "must be at least 1".into()));
        }
        for (index, publish) in self.binary_cache.publish.iter().enumerate() {
            if let Err(message) = publish.target() {
                return Err(("binary_cache.publish", format!("entry {} ({}): {message}", index + 1, publish.uri)));
            }
            if publish.concurrency == 0 {
                return Err(("binary_cache.publish", format!("entry {}: concurrency must be at least 1", index + 1)));
            }
        }
        if self.queue.max_jobs == 0 {
            return Err(("queue.max_jobs", "must be at least 1".into()));
        }
        // The machines part parses an entry (`MachineFields::into_spec`); a
        // build without the server (the plugin runtime alone) has no
        // machines to check.
        #[cfg(feature = "server")]
        for (index, fields) in self.machines.machine.iter().enumerate() {
            if let Err(message) =
                fields.clone().into_spec(format!("machines.machine[{index}]")).map_err(|e| e.to_string())
            {
                return Err(("machines.machine", format!("entry {} ({}): {message}", index + 1, fields.uri)));
            }
        }
        if let Some(file) = self.machines.files.iter().find(|f| !f.is_absolute()) {
            return Err(("machines.files", format!("{} is not an absolute path", file.display())));
        }
        if self.machines.max_tries == 0 {
            return Err(("machines.max_tries", "must be at least 1".into()));
        }
        if self.machines.connect_timeout_secs == 0 {
            return Err(("machines.connect_timeout_secs", "must be at least 1".into()));
        }
        const MONTH: u64 = 30 * 24 * 3600;
        for (key, value) in [
            ("machines.unsupported_timeout_secs", self.machines.unsupported_timeout_secs),
            ("machines.connect_timeout_secs", self.machines.connect_timeout_secs),
            ("machines.backoff_secs", self.machines.backoff_secs),
            ("machines.backoff_max_secs", self.machines.backoff_max_secs),
            ("machines.retry_delay_secs", self.machines.retry_delay_secs),
        ] {
            if value > MONTH {
                return Err((key, format!("must be at most {MONTH} (30 days)")));
            }
        }
        if self.machines.backoff_max_secs < self.machines.backoff_secs {
            return Err(("machines.backoff_max_secs", "must be at least machines.backoff_secs".into()));
        }
        for key in self.nix.settings.keys() {
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(("nix.settings", format!("{key:?} is not a Nix setting name")));
            }
        }
        Ok(())
    }
}
