//! A plugin that misbehaves on demand: the input's value says how.

use orthrus_plugin_fetcher::{Capability, Error, Fetched, InputFetcher, Metadata, export_fetcher, host};

struct Hostile;

impl InputFetcher for Hostile {
    fn metadata() -> Metadata {
        Metadata {
            name: "hostile".into(),
            version: "0.1.0".into(),
            description: "Misbehaves as its input value asks".into(),
            handles: vec!["hostile".into()],
            capabilities: vec![
                Capability::RunProgram("rm".into()),
                Capability::RunProgram("true".into()),
                Capability::AddToStore,
                Capability::KeyValue,
            ],
        }
    }

    fn fetch(_input: &str, value: &str) -> Result<Fetched, Error> {
        match value {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("this plugin panics on purpose"),
            "ungranted" => {
                host::run_ok("rm", &["-rf", "/tmp/nothing"], "")?;
                Err("rm ran although it was not granted".into())
            }
            "escape" => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => Err(Error::Failed(format!("read /etc/passwd: {text}"))),
                Err(e) => Err(Error::Failed(format!("cannot read /etc/passwd: {e}"))),
            },
            "escape-dir" => {
                host::run_ok("true", &[], "../..")?;
                Err("ran a program outside the scratch directory".into())
            }
            "escape-link" => {
                // The test puts a link to /etc in the scratch directory.
                let path = host::add_to_store("link")?;
                Err(Error::Failed(format!("added {path} through a link out of the scratch directory")))
            }
            "kv" => {
                host::kv::set("greeting", b"hello")?;
                let back = host::kv::get("greeting")?.unwrap_or_default();
                Err(Error::Failed(format!("key-value said {}", String::from_utf8_lossy(&back))))
            }
            other => Err(Error::Failed(format!("unknown misbehaviour {other:?}"))),
        }
    }
}

export_fetcher!(Hostile);
