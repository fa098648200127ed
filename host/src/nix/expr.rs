//! Nix values rendered as Nix source text, for the arguments handed to an
//! evaluation. Rendering is the one place that knows Nix's quoting rules.

use std::fmt::Write;

use super::StorePath;

/// A value to pass to a Nix expression.
#[derive(Debug, Clone, PartialEq)]
pub enum NixValue {
    Null,
    Bool(bool),
    Int(i64),
    String(String),
    /// A store path as a string carrying its context, so that a derivation
    /// using it depends on it. `builtins.appendContext` needs no read access
    /// to the path, which restricted evaluation would refuse.
    StorePath(StorePath),
    /// Nix source text given by the user (the `nix` input type), in parentheses.
    Raw(String),
    Attrs(Vec<(String, NixValue)>),
}

impl NixValue {
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) {
        match self {
            NixValue::Null => out.push_str("null"),
            NixValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            NixValue::Int(i) => write!(out, "{i}").expect("writing to a String"),
            NixValue::String(s) => out.push_str(&string_literal(s)),
            NixValue::StorePath(p) => {
                let quoted = string_literal(p.as_str());
                write!(out, "(builtins.appendContext {quoted} {{ {quoted} = {{ path = true; }}; }})")
                    .expect("writing to a String");
            }
            NixValue::Raw(text) => {
                // The newline keeps a trailing `#` comment from eating the `)`.
                out.push('(');
                out.push_str(text);
                out.push_str("\n)");
            }
            NixValue::Attrs(attrs) => {
                out.push_str("{ ");
                for (name, value) in attrs {
                    out.push_str(&string_literal(name));
                    out.push_str(" = ");
                    value.render_into(out);
                    out.push_str("; ");
                }
                out.push('}');
            }
        }
    }
}

/// A Nix double-quoted string literal with `"`, `\` and `${` escaped.
pub fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_values() {
        let value = NixValue::Attrs(vec![
            ("a.b".into(), NixValue::String("x\"${y}\\".into())),
            ("n".into(), NixValue::Int(-3)),
            ("t".into(), NixValue::Bool(true)),
            ("r".into(), NixValue::Raw("1 + 1 # comment".into())),
        ]);
        assert_eq!(
            value.render(),
            r#"{ "a.b" = "x\"\${y}\\"; "n" = -3; "t" = true; "r" = (1 + 1 # comment
); }"#
        );
    }

    /// What we render, Nix reads back as the same value.
    #[tokio::test]
    async fn nix_reads_back_rendered_strings() {
        let tricky = "quote \" backslash \\ dollar ${x} $y tab\t newline\n unicode ‘é’";
        let out = tokio::process::Command::new("nix-instantiate")
            .args(["--eval", "--json", "--expr", &string_literal(tricky)])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let back: String = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(back, tricky);
    }
}
