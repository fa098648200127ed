//! Mails the people responsible when a job's status changes, as Hydra does:
//! after each finished build of a jobset with mail enabled whose status
//! differs from the previous build of the same job (or that is the job's
//! first), to the jobset's override addresses or else the build's
//! maintainers (`meta.maintainers`), with links to the build and its log
//! and the log's last lines.
//!
//! Settings: `subject_prefix` (default `[Orthrus]`). The sender and the
//! relay are the server's (`[mail]`).

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use orthrus_plugin_notifier::host::send_mail;
use orthrus_plugin_notifier::{
    BuildInfo, BuildStatus, Capability, Error, Event, JobsetInfo, Metadata, Notifier, Settings, export_notifier,
};

/// A mail to send: recipients, subject and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

/// Statuses Hydra does not mail about: the build did not really end.
fn interrupted(status: Option<BuildStatus>) -> bool {
    matches!(status, Some(BuildStatus::Aborted | BuildStatus::Cancelled))
}

/// The mail for a finished build, if one is due.
pub fn mail_for(settings: &Settings, jobset: &JobsetInfo, build: &BuildInfo) -> Option<Mail> {
    if !jobset.email_enabled || build.status.is_none() || interrupted(build.build_status()) {
        return None;
    }
    if build.previous_id.is_some() && build.previous_status == build.status {
        return None;
    }
    let to = if jobset.email_override.is_empty() { build.maintainers.clone() } else { jobset.email_override.clone() };
    if to.is_empty() {
        return None;
    }
    let prefix = settings.get("subject_prefix").unwrap_or("[Orthrus]");
    let job = format!("{}:{}:{}", jobset.project, jobset.name, build.job);
    let now = capitalised(BuildStatus::describe_code(build.status));
    let subject = format!("{prefix} {now}: {job} ({})", build.system);
    let change = match build.previous_id {
        Some(_) => format!(
            "The status of job ‘{job}’ on {} has changed from ‘{}’ to ‘{}’.",
            build.system,
            capitalised(BuildStatus::describe_code(build.previous_status)),
            now
        ),
        None => format!("The first build of job ‘{job}’ on {}: ‘{now}’.", build.system),
    };
    let mut body = format!("{change}\n\nBuild: {}\nLog:   {}\nName:  {}\n", build.url, build.log_url, build.nix_name);
    if !build.machine.is_empty() {
        body.push_str(&format!("Built on: {}\n", build.machine));
    }
    if !build.log_tail.is_empty() {
        body.push_str(&format!("\nThe last {} lines of the log:\n\n", build.log_tail.len()));
        for line in &build.log_tail {
            body.push_str("> ");
            body.push_str(line);
            body.push('\n');
        }
    }
    body.push_str("\n-- \nOrthrus, the Nix CI and release server\n");
    Some(Mail { to, subject, body })
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

struct Email;

impl Notifier for Email {
    fn metadata() -> Metadata {
        Metadata::new("email", env!("CARGO_PKG_VERSION"))
            .describe("Mails the maintainers (or the jobset's addresses) when a job's status changes")
            .needs(Capability::Mail)
    }

    fn notify(settings: &Settings, event: &Event) -> Result<(), Error> {
        if event.kind != "build-finished" {
            return Ok(());
        }
        let Some(build) = &event.build else { return Ok(()) };
        match mail_for(settings, &event.jobset, build) {
            Some(mail) => send_mail(&mail.to, &mail.subject, &mail.body),
            None => Ok(()),
        }
    }
}

export_notifier!(Email);

#[cfg(test)]
mod tests {
    use super::*;

    fn jobset(enabled: bool, over: &[&str]) -> JobsetInfo {
        JobsetInfo {
            project: "hello".into(),
            name: "trunk".into(),
            email_enabled: enabled,
            email_override: over.iter().map(|s| s.to_string()).collect(),
            url: "http://ci/jobset/hello/trunk".into(),
        }
    }

    fn build(status: Option<i32>, previous: Option<(u64, Option<i32>)>) -> BuildInfo {
        BuildInfo {
            id: 7,
            job: "build".into(),
            nix_name: "hello-1.0".into(),
            system: "x86_64-linux".into(),
            drv_path: "/nix/store/x.drv".into(),
            status,
            previous_id: previous.map(|p| p.0),
            previous_status: previous.and_then(|p| p.1),
            queued: 0,
            started: 0,
            stopped: 0,
            machine: "localhost".into(),
            maintainers: vec!["alice@example.org".into()],
            outputs: vec![],
            release_name: None,
            log_tail: vec!["error: it broke".into()],
            url: "http://ci/build/7".into(),
            log_url: "http://ci/build/7/log".into(),
        }
    }

    #[test]
    fn mails_on_a_change_of_status_only() {
        let settings = Settings::default();
        let mail = mail_for(&settings, &jobset(true, &[]), &build(Some(1), Some((6, Some(0))))).unwrap();
        assert_eq!(mail.to, ["alice@example.org"]);
        assert_eq!(mail.subject, "[Orthrus] Failed: hello:trunk:build (x86_64-linux)");
        assert!(mail.body.contains("from ‘Succeeded’ to ‘Failed’"), "{}", mail.body);
        assert!(mail.body.contains("http://ci/build/7/log"));
        assert!(mail.body.contains("> error: it broke"));
        assert!(mail_for(&settings, &jobset(true, &[]), &build(Some(1), Some((6, Some(1))))).is_none());
        assert!(mail_for(&settings, &jobset(true, &[]), &build(Some(0), None)).is_some(), "a job's first build");
        assert!(mail_for(&settings, &jobset(false, &[]), &build(Some(1), None)).is_none(), "mail is off");
        assert!(mail_for(&settings, &jobset(true, &[]), &build(Some(4), None)).is_none(), "cancelled");
        let over = mail_for(&settings, &jobset(true, &["team@example.org"]), &build(Some(0), None)).unwrap();
        assert_eq!(over.to, ["team@example.org"]);
    }
}
