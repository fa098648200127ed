//! Terminal colour codes in what Nix prints.

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
    fn removes_colour_codes() {
        assert_eq!(
            strip_ansi("\u{1b}[31;1merror:\u{1b}[0m builder for '\u{1b}[35;1m/nix/store/x.drv\u{1b}[0m' failed"),
            "error: builder for '/nix/store/x.drv' failed"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
