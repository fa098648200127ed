//! Nix's `--log-format internal-json` lines on stderr: `@nix {json}`.
//!
//! Reading the structured form (rather than plain stderr) separates what the
//! builder printed, which goes into the build log, from Nix's own messages,
//! which become the step's error message. The format is stable from Nix 2.3
//! to current Nix.

use serde::Deserialize;

/// Result type of a build's log line (`resBuildLogLine` in Nix).
const RESULT_BUILD_LOG_LINE: u64 = 101;

/// One line of Nix's stderr, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NixLogEvent {
    /// A line the builder printed.
    BuildLine(String),
    /// A message from Nix itself; level 0 is an error, 1 a warning.
    Message { level: u64, text: String },
    /// Activity bookkeeping (progress bars); nothing a log reader wants.
    Other,
}

#[derive(Deserialize)]
struct Raw {
    action: String,
    #[serde(default)]
    level: u64,
    #[serde(default)]
    msg: Option<String>,
    #[serde(rename = "type", default)]
    kind: u64,
    #[serde(default)]
    fields: Vec<serde_json::Value>,
}

impl NixLogEvent {
    pub fn parse(line: &str) -> NixLogEvent {
        let Some(json) = line.strip_prefix("@nix ") else {
            // Nix prints some things before its logger is set up, and a
            // builder's stderr can leak through on old versions.
            return NixLogEvent::Message { level: 3, text: strip_ansi(line) };
        };
        let Ok(raw) = serde_json::from_str::<Raw>(json) else {
            return NixLogEvent::Message { level: 3, text: strip_ansi(line) };
        };
        match raw.action.as_str() {
            "msg" => NixLogEvent::Message { level: raw.level, text: strip_ansi(raw.msg.as_deref().unwrap_or("")) },
            "result" if raw.kind == RESULT_BUILD_LOG_LINE => {
                let text = raw.fields.first().and_then(|f| f.as_str()).unwrap_or("");
                NixLogEvent::BuildLine(text.to_owned())
            }
            _ => NixLogEvent::Other,
        }
    }
}

/// Removes terminal colour codes (`ESC [ … m`) that Nix puts in messages.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.clone().next() == Some('[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_lines() {
        assert_eq!(
            NixLogEvent::parse(r#"@nix {"action":"result","fields":["hello"],"id":1,"type":101}"#),
            NixLogEvent::BuildLine("hello".into())
        );
        assert_eq!(
            NixLogEvent::parse(
                r#"@nix {"action":"msg","level":0,"msg":"\u001b[31;1merror:\u001b[0m builder for '\u001b[35;1m/nix/store/x.drv\u001b[0m' failed with exit code 3"}"#
            ),
            NixLogEvent::Message {
                level: 0,
                text: "error: builder for '/nix/store/x.drv' failed with exit code 3".into()
            }
        );
        assert_eq!(NixLogEvent::parse(r#"@nix {"action":"stop","id":1}"#), NixLogEvent::Other);
        assert_eq!(
            NixLogEvent::parse("warning: plain"),
            NixLogEvent::Message { level: 3, text: "warning: plain".into() }
        );
    }
}
