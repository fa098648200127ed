//! Parser for `.drv` files, Nix's ATerm serialisation of a derivation:
//!
//! ```text
//! Derive([("out","/nix/store/…-x","","")],          outputs (name, path, hash algo, hash)
//!        [("/nix/store/…-dep.drv",["out"])],        input derivations and the outputs used
//!        ["/nix/store/…-src"],                      input sources
//!        "x86_64-linux","/bin/sh",["-c","…"],       system, builder, args
//!        [("name","x"),…])                          environment
//! ```
//!
//! The queue runner reads every derivation in a build's closure, so this is
//! a hand-written single pass over the bytes with no intermediate tree.

use std::collections::{BTreeMap, BTreeSet};

use super::store_path::{InvalidStorePath, StorePath};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivationOutput {
    /// Empty for content-addressed outputs whose path is only known after the build.
    pub path: Option<StorePath>,
    /// `r:sha256` style for fixed-output derivations, empty otherwise.
    pub hash_algo: String,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivation {
    pub outputs: BTreeMap<String, DerivationOutput>,
    pub input_drvs: BTreeMap<StorePath, BTreeSet<String>>,
    pub input_srcs: BTreeSet<StorePath>,
    pub system: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DerivationError {
    #[error("byte {offset}: expected {expected}")]
    Syntax { offset: usize, expected: &'static str },
    #[error("byte {offset}: {source}")]
    StorePath { offset: usize, source: InvalidStorePath },
    #[error("byte {offset}: string is not UTF-8")]
    Utf8 { offset: usize },
}

impl Derivation {
    pub fn parse(text: &[u8]) -> Result<Derivation, DerivationError> {
        let mut p = Parser { input: text, pos: 0 };
        p.expect(b"Derive(", "`Derive(` (only plain derivations are supported)")?;
        let outputs = p.list(|p| {
            p.expect(b"(", "`(` opening an output")?;
            let name = p.string()?;
            p.comma()?;
            let path = p.string()?;
            let path = if path.is_empty() { None } else { Some(p.store_path(path)?) };
            p.comma()?;
            let hash_algo = p.string()?;
            p.comma()?;
            let hash = p.string()?;
            p.expect(b")", "`)` closing an output")?;
            Ok((name, DerivationOutput { path, hash_algo, hash }))
        })?;
        p.comma()?;
        let input_drvs = p.list(|p| {
            p.expect(b"(", "`(` opening an input derivation")?;
            let path = p.string()?;
            let path = p.store_path(path)?;
            p.comma()?;
            let outputs = p.list(Parser::string)?;
            p.expect(b")", "`)` closing an input derivation")?;
            Ok((path, outputs.into_iter().collect()))
        })?;
        p.comma()?;
        let input_srcs = p.list(|p| {
            let path = p.string()?;
            p.store_path(path)
        })?;
        p.comma()?;
        let system = p.string()?;
        p.comma()?;
        let builder = p.string()?;
        p.comma()?;
        let args = p.list(Parser::string)?;
        p.comma()?;
        let env = p.list(|p| {
            p.expect(b"(", "`(` opening an environment variable")?;
            let name = p.string()?;
            p.comma()?;
            let value = p.string()?;
            p.expect(b")", "`)` closing an environment variable")?;
            Ok((name, value))
        })?;
        p.expect(b")", "`)` closing the derivation")?;
        if p.pos != p.input.len() {
            return Err(DerivationError::Syntax { offset: p.pos, expected: "end of file" });
        }
        Ok(Derivation {
            outputs: outputs.into_iter().collect(),
            input_drvs: input_drvs.into_iter().collect(),
            input_srcs: input_srcs.into_iter().collect(),
            system,
            builder,
            args,
            env: env.into_iter().collect(),
        })
    }

    /// Output paths known before building (all of them, except for
    /// content-addressed derivations).
    pub fn output_paths(&self) -> impl Iterator<Item = (&str, &StorePath)> {
        self.outputs.iter().filter_map(|(name, o)| o.path.as_ref().map(|p| (name.as_str(), p)))
    }

    /// The attributes of a derivation with `__structuredAttrs`, which keeps
    /// them in `__json` rather than in the environment.
    fn structured_attrs(&self) -> Option<serde_json::Value> {
        self.env.get("__json").and_then(|json| serde_json::from_str(json).ok())
    }

    /// `requiredSystemFeatures`, which a machine must offer to build this.
    pub fn required_features(&self) -> BTreeSet<String> {
        match self.structured_attrs() {
            Some(attrs) => attrs["requiredSystemFeatures"]
                .as_array()
                .map(|features| features.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            None => self
                .env
                .get("requiredSystemFeatures")
                .map(|f| f.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }

    /// `preferLocalBuild = true`: cheap enough that shipping it elsewhere is waste.
    pub fn prefers_local_build(&self) -> bool {
        match self.structured_attrs() {
            Some(attrs) => attrs["preferLocalBuild"].as_bool().unwrap_or(false),
            None => self.env.get("preferLocalBuild").is_some_and(|v| v == "1"),
        }
    }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn expect(&mut self, token: &[u8], expected: &'static str) -> Result<(), DerivationError> {
        if self.input[self.pos..].starts_with(token) {
            self.pos += token.len();
            Ok(())
        } else {
            Err(DerivationError::Syntax { offset: self.pos, expected })
        }
    }

    fn comma(&mut self) -> Result<(), DerivationError> {
        self.expect(b",", "`,`")
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn list<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, DerivationError>,
    ) -> Result<Vec<T>, DerivationError> {
        self.expect(b"[", "`[` opening a list")?;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => {
                    return Err(DerivationError::Syntax { offset: self.pos, expected: "`,` or `]`" });
                }
            }
        }
    }

    fn string(&mut self) -> Result<String, DerivationError> {
        let start = self.pos;
        self.expect(b"\"", "`\"` opening a string")?;
        let mut out = Vec::new();
        loop {
            // Copy the run up to the next quote or backslash in one go.
            let rest = &self.input[self.pos..];
            let run = rest
                .iter()
                .position(|&c| c == b'"' || c == b'\\')
                .ok_or(DerivationError::Syntax { offset: self.input.len(), expected: "`\"` closing a string" })?;
            out.extend_from_slice(&rest[..run]);
            self.pos += run;
            if self.input[self.pos] == b'"' {
                self.pos += 1;
                break;
            }
            let escaped = *self
                .input
                .get(self.pos + 1)
                .ok_or(DerivationError::Syntax { offset: self.pos, expected: "an escaped character" })?;
            out.push(match escaped {
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                other => other,
            });
            self.pos += 2;
        }
        String::from_utf8(out).map_err(|_| DerivationError::Utf8 { offset: start })
    }

    fn store_path(&self, path: String) -> Result<StorePath, DerivationError> {
        StorePath::parse(&path).map_err(|source| DerivationError::StorePath { offset: self.pos, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"Derive([("dev","/nix/store/0c2nkd2sfpsrmh8pmyqxl6z7kc4xj9l0-x-dev","",""),("out","/nix/store/q01gn69wzmw9fsb5dmg9zi8myfli6kdk-x","","")],[("/nix/store/ay5ga16l2538b12iaxvk3zbxaygb6hnl-bad.drv",["out"]),("/nix/store/i3m7y37jdyi708p9xfrkxr9wn91bv2gf-ok.drv",["dev","out"])],["/nix/store/ikgcwncx2cinpipyb5ig5ipkb4m4vf77-src"],"x86_64-linux","/bin/sh",["-c","echo \"hi\"\n\\done"],[("name","x"),("preferLocalBuild","1"),("requiredSystemFeatures","kvm big-parallel")])"#;

    #[test]
    fn parses_all_fields() {
        let drv = Derivation::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(drv.outputs.len(), 2);
        assert_eq!(drv.outputs["out"].path.as_ref().unwrap().name(), "x");
        assert_eq!(drv.input_drvs.len(), 2);
        let ok = StorePath::parse("/nix/store/i3m7y37jdyi708p9xfrkxr9wn91bv2gf-ok.drv").unwrap();
        assert_eq!(drv.input_drvs[&ok], ["dev".to_owned(), "out".to_owned()].into_iter().collect());
        assert_eq!(drv.input_srcs.len(), 1);
        assert_eq!(drv.system, "x86_64-linux");
        assert_eq!(drv.builder, "/bin/sh");
        assert_eq!(drv.args, vec!["-c".to_owned(), "echo \"hi\"\n\\done".to_owned()]);
        assert!(drv.prefers_local_build());
        assert_eq!(drv.required_features().len(), 2);
    }

    #[test]
    fn content_addressed_outputs_have_no_path() {
        let text = r#"Derive([("out","","r:sha256","")],[],[],"x86_64-linux","/bin/sh",[],[])"#;
        let drv = Derivation::parse(text.as_bytes()).unwrap();
        assert_eq!(drv.outputs["out"].path, None);
        assert_eq!(drv.output_paths().count(), 0);
    }

    #[test]
    fn errors_say_where() {
        let truncated = b"Derive([(\"out\",\"/nix/store/q01gn69wzmw9fsb5dmg9zi8myfli6kdk-x\",\"\",\"\")]";
        let err = Derivation::parse(truncated).unwrap_err();
        assert_eq!(err, DerivationError::Syntax { offset: truncated.len(), expected: "`,`" });
        let err = Derivation::parse(b"Derive([(\"out\",\"/tmp/x\",\"\",\"\")],[],[],\"\",\"\",[],[])").unwrap_err();
        assert!(err.to_string().contains("not inside the Nix store"), "{err}");
        assert!(Derivation::parse(b"Derive([],[],[],\"s\",\"b\",[],[])x").is_err());
        assert!(Derivation::parse(b"Derive([],[],[],\"unterminated").is_err());
    }
}
