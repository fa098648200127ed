//! Sets commit statuses (pending, success, failure) on the revisions a
//! build was evaluated from, on GitHub or Gitea: the logic shared by the
//! `github-status` and `gitea-status` plugins, which differ only in the
//! API's path and how the token is sent.
//!
//! Settings:
//! - `token` (required): an API token allowed to set statuses;
//! - `base_url`: the API's root (GitHub: `https://api.github.com`; for
//!   Gitea, the server's URL);
//! - `repo`: `owner/name`; by default taken from each git input's URL;
//! - `inputs`: the inputs whose revisions get statuses (default: every
//!   git input);
//! - `jobs`: only these jobs (default: all);
//! - `context`: the status's name (default `orthrus/PROJECT:JOBSET:JOB`).

use orthrus_plugin_notifier::host::http;
use orthrus_plugin_notifier::{BuildStatus, Error, Event, Settings};

/// Which forge's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    Gitea,
}

/// A status to set on one commit.
#[derive(Debug, PartialEq, Eq)]
pub struct StatusUpdate {
    pub url: String,
    pub body: String,
}

/// `owner/name` from a repository URL: `https://host/owner/name(.git)`,
/// `ssh://git@host/owner/name`, `git@host:owner/name.git`.
pub fn repo_of(uri: &str) -> Option<String> {
    let url = uri.split_whitespace().next()?;
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/')?.1,
        None => url.split_once(':')?.1,
    };
    let mut parts = path.trim_end_matches('/').trim_end_matches(".git").rsplit('/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let owner = parts.next().filter(|o| !o.is_empty())?;
    Some(format!("{owner}/{name}"))
}

fn state_of(event: &Event) -> Option<(&'static str, String)> {
    let build = event.build.as_ref()?;
    match event.kind.as_str() {
        "build-queued" => Some(("pending", "Queued".into())),
        "build-started" => Some(("pending", format!("Building on {}", build.machine))),
        "build-finished" => {
            let words = BuildStatus::describe_code(build.status);
            let state = match build.build_status() {
                Some(BuildStatus::Succeeded) => "success",
                Some(BuildStatus::Aborted | BuildStatus::Cancelled) => "error",
                _ => "failure",
            };
            Some((state, format!("Build {words}")))
        }
        _ => None,
    }
}

fn escape_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The status updates an event calls for.
pub fn updates(forge: Forge, settings: &Settings, event: &Event) -> Result<Vec<StatusUpdate>, Error> {
    let Some((state, description)) = state_of(event) else { return Ok(Vec::new()) };
    let build = event.build.as_ref().expect("state_of saw a build");
    let jobs = settings.list("jobs");
    if !jobs.is_empty() && !jobs.contains(&build.job.as_str()) {
        return Ok(Vec::new());
    }
    let base = match (forge, settings.get("base_url").filter(|b| !b.is_empty())) {
        (_, Some(base)) => base.trim_end_matches('/').to_owned(),
        (Forge::GitHub, None) => "https://api.github.com".to_owned(),
        (Forge::Gitea, None) => {
            return Err(Error::InvalidInput("the setting ‘base_url’ is missing (the Gitea server's URL)".into()));
        }
    };
    let prefix = match forge {
        Forge::GitHub => "",
        Forge::Gitea => "/api/v1",
    };
    let context = match settings.get("context").filter(|c| !c.is_empty()) {
        Some(context) => context.to_owned(),
        None => format!("orthrus/{}:{}:{}", event.jobset.project, event.jobset.name, build.job),
    };
    let wanted_inputs = settings.list("inputs");
    let mut list = Vec::new();
    for input in &event.inputs {
        let chosen =
            if wanted_inputs.is_empty() { input.type_ == "git" } else { wanted_inputs.contains(&input.name.as_str()) };
        let is_commit = input.revision.len() == 40 && input.revision.chars().all(|c| c.is_ascii_hexdigit());
        if !chosen || !is_commit {
            continue;
        }
        let repo = match settings.get("repo").filter(|r| !r.is_empty()) {
            Some(repo) => repo.to_owned(),
            None => repo_of(&input.uri).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "cannot tell the repository of input ‘{}’ ({}): set ‘repo’",
                    input.name, input.uri
                ))
            })?,
        };
        let body = format!(
            "{{\"state\":{},\"target_url\":{},\"description\":{},\"context\":{}}}",
            escape_json(state),
            escape_json(&build.url),
            escape_json(&description),
            escape_json(&context)
        );
        list.push(StatusUpdate { url: format!("{base}{prefix}/repos/{repo}/statuses/{}", input.revision), body });
    }
    Ok(list)
}

/// Sends the updates an event calls for.
pub fn notify(forge: Forge, settings: &Settings, event: &Event) -> Result<(), Error> {
    let token = settings.required("token")?;
    let authorization = match forge {
        Forge::GitHub => format!("Bearer {token}"),
        Forge::Gitea => format!("token {token}"),
    };
    for update in updates(forge, settings, event)? {
        let headers = [("Authorization", authorization.as_str()), ("Accept", "application/json")];
        http::send_ok(&http::json_request("POST", &update.url, &update.body, &headers))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_from_urls() {
        assert_eq!(repo_of("https://github.com/NixOS/nix.git").as_deref(), Some("NixOS/nix"));
        assert_eq!(repo_of("https://gitea.example.org/team/app main").as_deref(), Some("team/app"));
        assert_eq!(repo_of("git@github.com:owner/repo.git").as_deref(), Some("owner/repo"));
        assert_eq!(repo_of("ssh://git@host:2222/a/b/").as_deref(), Some("a/b"));
        assert_eq!(repo_of("file:///srv/repo"), Some("srv/repo".into()));
        assert_eq!(repo_of("nothing"), None);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(escape_json("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
