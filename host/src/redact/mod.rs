//! Secrets kept out of what the server prints: every log line and
//! `orthrus check-config` go through a [`Redactor`], which replaces
//!
//! - every secret the configuration holds (webhook secrets, notifier
//!   settings that are secrets, the database password), wherever it shows;
//! - the password of any URL (`https://user:token@host` → `user:***@`);
//! - API tokens (`orthrus_` and 64 hex digits) and `Bearer`/`Basic`
//!   credentials;
//! - values of query parameters and settings named like secrets
//!   (`token=…`, `password: "…"`).
//!
//! Passwords and session secrets are never logged in the first place; this
//! catches what passes through error messages and program arguments.

use std::io::Write;
use std::sync::{Arc, OnceLock, RwLock};

use crate::config::Config;

const HIDDEN: &str = "***";

/// Names of settings and query parameters whose values are secrets.
const SECRET_NAMES: [&str; 8] =
    ["token", "secret", "password", "passwd", "access_token", "api_key", "apikey", "private_key"];

/// Replaces secrets in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Secrets known by value, longest first (so that one containing
    /// another is replaced whole).
    literals: Vec<String>,
}

impl Redactor {
    /// The secrets of a configuration.
    pub fn for_config(config: &Config) -> Redactor {
        let mut literals = vec![config.webhooks.github_secret.clone(), config.webhooks.gitea_secret.clone()];
        for notifier in &config.notifiers {
            literals.extend(
                notifier.settings.iter().filter(|(name, _)| is_secret_name(name)).map(|(_, value)| value.clone()),
            );
        }
        literals.extend(url_password(&config.database_url));
        Redactor::with_literals(literals)
    }

    pub fn with_literals(literals: impl IntoIterator<Item = String>) -> Redactor {
        // Short values would blank out ordinary words.
        let mut literals: Vec<String> = literals.into_iter().filter(|l| l.len() >= 6).collect();
        literals.sort_by_key(|l| std::cmp::Reverse(l.len()));
        literals.dedup();
        Redactor { literals }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for literal in &self.literals {
            if text.contains(literal.as_str()) {
                text = text.replace(literal.as_str(), HIDDEN);
            }
        }
        let text = url_passwords(&text);
        let text = tokens(&text);
        named_values(&text)
    }
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|secret| name.contains(secret))
}

/// The password of a URL, if it has one.
fn url_password(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, password)| password.to_owned()).filter(|p| !p.is_empty())
}

/// `scheme://user:password@host` → `scheme://user:***@host`, everywhere.
fn url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after.find(|c: char| c.is_whitespace() || "/?#\"'<>".contains(c)).unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@').and_then(|at| authority[..at].split_once(':').map(|(user, _)| (user, at))) {
            Some((user, at)) => {
                out.push_str(user);
                out.push(':');
                out.push_str(HIDDEN);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// API tokens and HTTP credentials.
fn tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = [("orthrus_", 0usize), ("Bearer ", 0), ("Basic ", 0)]
            .iter()
            .filter_map(|(marker, _)| rest.find(marker).map(|i| (i, *marker)))
            .min();
        let Some((i, marker)) = next else { break };
        out.push_str(&rest[..i + marker.len()]);
        let after = &rest[i + marker.len()..];
        let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || "+/=_-.".contains(c))).unwrap_or(after.len());
        if end >= 8 {
            out.push_str(HIDDEN);
        } else {
            out.push_str(&after[..end]);
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// `token=value`, `"password": "value"`, `secret = "value"`: the value hidden.
fn named_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((start, name_end)) = next_secret_name(rest) {
        let after_name = &rest[name_end..];
        // What separates a name from its value: `=`, `:`, quotes, spaces.
        let separator =
            after_name.find(|c: char| !(c == '=' || c == ':' || c == '"' || c == '\'' || c == ' ')).unwrap_or(0);
        let separator_text = &after_name[..separator];
        out.push_str(&rest[..name_end]);
        out.push_str(separator_text);
        if separator_text.contains(['=', ':']) {
            let value = &after_name[separator..];
            let end = value.find(|c: char| c.is_whitespace() || "&\"',;)}]".contains(c)).unwrap_or(value.len());
            if end > 0 {
                out.push_str(HIDDEN);
            }
            rest = &value[end..];
        } else {
            rest = &after_name[separator..];
        }
        let _ = start;
    }
    out.push_str(rest);
    out
}

/// The next word named like a secret: its start and end.
fn next_secret_name(text: &str) -> Option<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    SECRET_NAMES.iter().filter_map(|name| lower.find(name).map(|i| (i, i + name.len()))).min().map(|(start, end)| {
        // The whole word (`github_secret`, `tokens`).
        let end =
            end + lower[end..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(lower.len() - end);
        (start, end)
    })
}

/// The redactor of this process's log lines, once the configuration is read.
static INSTALLED: OnceLock<RwLock<Arc<Redactor>>> = OnceLock::new();

fn installed() -> &'static RwLock<Arc<Redactor>> {
    INSTALLED.get_or_init(|| RwLock::new(Arc::new(Redactor::default())))
}

/// Makes `redactor` the one every log line goes through.
pub fn install(redactor: Redactor) {
    *installed().write().unwrap_or_else(|e| e.into_inner()) = Arc::new(redactor);
}

/// The redactor installed for this process.
pub fn current() -> Arc<Redactor> {
    installed().read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Standard error, each write redacted: the writer of the log.
pub struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(current().redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingStderr;

    fn make_writer(&'a self) -> RedactingStderr {
        RedactingStderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_wherever_they_show() {
        let redactor = Redactor::with_literals(["hook-secret-123".to_owned(), "abc".to_owned()]);
        let cases = [
            ("cannot fetch https://ann:s3cret@example.org/r.git", "cannot fetch https://ann:***@example.org/r.git"),
            ("git clone git+https://x:y@h/r main", "git clone git+https://x:***@h/r main"),
            ("signed with hook-secret-123!", "signed with ***!"),
            ("Authorization: Bearer orthrus_0123456789abcdef", "Authorization: Bearer ***"),
            ("token orthrus_0123456789abcdef0123 used", "token orthrus_*** used"),
            ("GET /x?access_token=zzz&page=2", "GET /x?access_token=***&page=2"),
            (r#"settings: {"token": "ghp_deadbeef", "repo": "a/b"}"#, r#"settings: {"token": "***", "repo": "a/b"}"#),
            ("github_secret: \"xyz\",", "github_secret: \"***\","),
            ("no secrets here: abc is short", "no secrets here: abc is short"),
            ("https://example.org/no/credentials", "https://example.org/no/credentials"),
        ];
        for (text, expected) in cases {
            assert_eq!(redactor.redact(text), expected, "{text}");
        }
    }

    #[test]
    fn a_configuration_names_its_secrets() {
        let text = "database_url = \"postgres://orthrus:pg-password@db/orthrus\"\n[webhooks]\ngithub_secret = \"gh-hook-secret\"\n\
                    [[notifiers]]\nplugin = \"github-status\"\nsettings = { token = \"ghp_abcdef123\", repo = \"acme/widget\" }\n";
        let config = Config::parse(text, std::path::Path::new("orthrus.toml")).unwrap();
        let redactor = Redactor::for_config(&config);
        let shown = redactor.redact(&format!("{config:#?}"));
        for secret in ["pg-password", "gh-hook-secret", "ghp_abcdef123"] {
            assert!(!shown.contains(secret), "{secret} shows in:\n{shown}");
        }
        assert!(shown.contains("acme/widget"), "what is no secret stays");
    }
}
