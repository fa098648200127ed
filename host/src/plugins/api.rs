//! What the rest of the server hands plugins and gets back from them, in
//! plain Rust: the WIT types stay inside this part.

use serde::Serialize;

/// An event with what a notifier needs to know around it.
#[derive(Debug, Clone, Serialize)]
pub struct NotifyEvent {
    pub id: i64,
    pub kind: String,
    pub time: i64,
    pub jobset: NotifyJobset,
    pub eval_id: Option<i64>,
    pub inputs: Vec<InputRevision>,
    pub build: Option<NotifyBuild>,
    pub step_nr: Option<i32>,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotifyJobset {
    pub project: String,
    pub name: String,
    pub email_enabled: bool,
    pub email_override: Vec<String>,
    pub url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputRevision {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    pub uri: String,
    pub revision: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotifyBuild {
    pub id: i64,
    pub job: String,
    pub nix_name: String,
    pub system: String,
    pub drv_path: String,
    pub status: Option<i32>,
    pub previous_id: Option<i64>,
    pub previous_status: Option<i32>,
    pub queued: i64,
    pub started: i64,
    pub stopped: i64,
    pub machine: String,
    pub maintainers: Vec<String>,
    pub outputs: Vec<(String, String)>,
    pub release_name: Option<String>,
    pub log_tail: Vec<String>,
    pub url: String,
    pub log_url: String,
}

/// A build product to render, and its build.
#[derive(Debug, Clone)]
pub struct ProductToRender {
    pub nr: u32,
    pub kind: String,
    pub subtype: String,
    pub name: String,
    pub path: String,
    pub default_path: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BuildRef {
    pub id: i64,
    pub project: String,
    pub jobset: String,
    pub job: String,
    pub nix_name: String,
    pub release_name: Option<String>,
    pub url: String,
    pub download_url: String,
}

/// What a renderer made of a product, before the host sanitised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    Html(String),
    Link { href: String, text: String },
}

/// One release of a release set, as its plugin computed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub name: String,
    pub timestamp: i64,
    /// (build id, label)
    pub members: Vec<(i64, String)>,
}
