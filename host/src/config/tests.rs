use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("orthrus.toml"))
}

#[test]
fn empty_file_is_all_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config.web.listen, "127.0.0.1:3000");
    assert_eq!(config.base_url(), "http://127.0.0.1:3000");
    assert!(config.database_url().starts_with("sqlite://orthrus-data/"));
    assert!(config.nix.restrict_eval);
}

#[test]
fn unknown_key_names_the_key() {
    let err = parse("[queue]\nmax_jobz = 3\n").unwrap_err().to_string();
    assert!(err.contains("orthrus.toml"), "{err}");
    assert!(err.contains("queue.max_jobz"), "{err}");
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn wrong_type_names_the_key_and_line() {
    let err = parse("[evaluator]\nworkers = \"many\"\n").unwrap_err().to_string();
    assert!(err.contains("evaluator.workers"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn invalid_values_are_rejected_with_reason() {
    let err = parse("[queue]\nmax_jobs = 0\n").unwrap_err().to_string();
    assert!(err.contains("queue.max_jobs") && err.contains("at least 1"), "{err}");
    let err = parse("[web]\nlisten = \"nowhere\"\n").unwrap_err().to_string();
    assert!(err.contains("web.listen"), "{err}");
    let err = parse("database_url = \"mysql://x\"\n").unwrap_err().to_string();
    assert!(err.contains("database_url"), "{err}");
    let err = parse("[evaluator]\nallowed_path_roots = [\"relative\"]\n").unwrap_err().to_string();
    assert!(err.contains("allowed_path_roots") && err.contains("absolute"), "{err}");
}

#[test]
fn machines_are_checked_with_their_key() {
    let config =
        parse("[[machines.machine]]\nuri = \"ssh://nix@builder:2222\"\nsystems = [\"aarch64-linux\"]\nmax_jobs = 4\n")
            .unwrap();
    assert_eq!(config.machines.machine[0].max_jobs, Some(4));
    let err = parse("[[machines.machine]]\nuri = \"ssh-ng://builder\"\n").unwrap_err().to_string();
    assert!(err.contains("machines.machine") && err.contains("ssh-ng"), "{err}");
    let err = parse("[[machines.machine]]\nuri = \"ssh://b\"\nspeed = 2\n").unwrap_err().to_string();
    assert!(err.contains("machines.machine[0].speed") && err.contains("unknown field"), "{err}");
    let err = parse("[machines]\nfiles = [\"machines\"]\n").unwrap_err().to_string();
    assert!(err.contains("machines.files") && err.contains("absolute"), "{err}");
}

#[test]
fn notifiers_mail_and_http_grants_are_checked() {
    let config = parse(
        "[mail]\nrelay = \"127.0.0.1\"\nport = 2525\n\n[plugins.grants.webhook]\nhttp = [\"hooks.example.org\", \"127.0.0.1:9000\"]\n\n\
         [[notifiers]]\nplugin = \"webhook\"\nevents = [\"build-finished\"]\nsettings = { url = \"http://127.0.0.1:9000/\" }\n",
    )
    .unwrap();
    assert_eq!(config.notifiers[0].name(), "webhook");
    assert_eq!(config.notifiers[0].retry_delay_secs, 10);
    assert_eq!(config.mail.port, 2525);
    let err = parse("[[notifiers]]\nplugin = \"webhook\"\nevents = [\"build-done\"]\n").unwrap_err().to_string();
    assert!(err.contains("notifiers") && err.contains("unknown event \"build-done\""), "{err}");
    let err = parse("[[notifiers]]\nplugin = \"email\"\n[[notifiers]]\nplugin = \"email\"\n").unwrap_err().to_string();
    assert!(err.contains("two notifiers are named \"email\""), "{err}");
    let err = parse("[plugins.grants.webhook]\nhttp = [\"http://x/\"]\n").unwrap_err().to_string();
    assert!(err.contains("webhook") && err.contains("is not a host"), "{err}");
    let err = parse("[mail]\nrelay = \"x\"\nfrom = \"not an address\"\n").unwrap_err().to_string();
    assert!(err.contains("mail.from"), "{err}");
}

#[test]
fn syntax_error_is_located() {
    let err = parse("[web\nlisten = 1").unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn nix_settings_are_a_table() {
    let config = parse("[nix.settings]\nsubstituters = \"\"\n\"build-users-group\" = \"\"\n").unwrap();
    assert_eq!(config.nix.settings.get("substituters").map(String::as_str), Some(""));
    assert_eq!(config.nix.settings.len(), 2);
}

#[test]
fn publish_entries_are_checked_with_their_key() {
    let ok = parse("[[binary_cache.publish]]\nuri = \"file:///srv/cache?compression=zstd\"\n").unwrap();
    assert_eq!(ok.binary_cache.publish[0].concurrency, 4, "defaults apply");
    let err = parse("[[binary_cache.publish]]\nuri = \"ftp://x\"\n").unwrap_err().to_string();
    assert!(err.contains("binary_cache.publish") && err.contains("ftp://x"), "{err}");
    let twice = "[[binary_cache.publish]]\nuri = \"file:///a\"\n[[binary_cache.publish]]\nuri = \"file:///a?compression=none\"\n";
    assert!(parse(twice).unwrap_err().to_string().contains("two caches"));
    let err = parse("[[notifiers]]\nplugin = \"webhook\"\nname = \"publish:x\"\n").unwrap_err().to_string();
    assert!(err.contains("publish:"), "{err}");
}
