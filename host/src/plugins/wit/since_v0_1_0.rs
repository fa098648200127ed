//! Host bindings of `wit/since_v0.1.0` (package `orthrus:plugin@0.1.0`),
//! adapted to the latest version: a 0.1.0 plugin's calls of the host go
//! to the latest implementation, and its exports answer in the latest's
//! types. The records are the same in both versions (only where they live
//! differs); what changed is the errors, which 0.1.0 says in strings: the
//! host words its typed errors for it, and a 0.1.0 plugin's string error
//! is a `failed`.

/// The version of the WIT package these bindings are of.
pub const VERSION: &str = "0.1.0";

super::bindings_of_version!("../wit/since_v0.1.0");

use wasmtime::Store;

use super::latest::host_api::orthrus::plugin as now;
use super::latest::{Error, fetcher as now_fetcher, notifier as now_notifier};
use super::latest::{release_set as now_release_set, renderer as now_renderer};
use host_api::orthrus::plugin::{builds, http, key_value, log, mail, nix_store, process, types};

/// A value of one version as the same value of the other.
pub trait Convert<T> {
    fn convert(self) -> T;
}

macro_rules! unchanged {
    ($($t:ty),*) => {
        $(impl Convert<$t> for $t {
            fn convert(self) -> $t {
                self
            }
        })*
    };
}
unchanged!((), String, bool, u8, u16, u32, u64, i32, i64);

impl<A: Convert<B>, B> Convert<Vec<B>> for Vec<A> {
    fn convert(self) -> Vec<B> {
        self.into_iter().map(Convert::convert).collect()
    }
}

impl<A: Convert<B>, B> Convert<Option<B>> for Option<A> {
    fn convert(self) -> Option<B> {
        self.map(Convert::convert)
    }
}

/// A record that is the same in both versions, converted field by field.
macro_rules! same_record {
    ($from:ty => $to:ident { $($field:ident),* $(,)? }) => {
        impl Convert<$to> for $from {
            fn convert(self) -> $to {
                $to { $($field: self.$field.convert()),* }
            }
        }
    };
}

// What the host gives a 0.1.0 plugin (the latest's records, in 0.1.0's).
use {builds::BuildSummary, builds::EvalInput, builds::EvalSummary, builds::Output as BuildOutput};
use {http::Header, http::Request, http::Response, mail::Message, process::Output as ProgramOutput};
same_record!(now::process::Output => ProgramOutput { status, stdout, stderr });
same_record!(now::http::Header => Header { name, value });
same_record!(now::http::Response => Response { status, headers, body });
same_record!(now::builds::Output => BuildOutput { name, path });
same_record!(now::builds::BuildSummary => BuildSummary {
    id, jobset, job, nix_name, finished, status, timestamp, stop_time, release_name, outputs, evals,
});
same_record!(now::builds::EvalInput => EvalInput { name, type_, value, uri, revision, dependency });
same_record!(now::builds::EvalSummary => EvalSummary { id, jobset, timestamp, inputs });

// What a 0.1.0 plugin gives the host.
type NowHeader = now::http::Header;
type NowRequest = now::http::Request;
type NowMessage = now::mail::Message;
same_record!(Header => NowHeader { name, value });
same_record!(Request => NowRequest { method, url, headers, body });
same_record!(Message => NowMessage { to, subject, body });

impl Convert<now::log::Level> for log::Level {
    fn convert(self) -> now::log::Level {
        match self {
            log::Level::Trace => now::log::Level::Trace,
            log::Level::Debug => now::log::Level::Debug,
            log::Level::Info => now::log::Level::Info,
            log::Level::Warn => now::log::Level::Warn,
            log::Level::Error => now::log::Level::Error,
        }
    }
}

/// A host function's answer to a 0.1.0 plugin: its error in words.
fn worded<T: Convert<U>, U>(state: &HostState, answer: Result<T, Error>) -> Result<U, String> {
    answer.map(Convert::convert).map_err(|error| match error {
        Error::InvalidInput(message) | Error::Failed(message) | Error::TryLater(message) => message,
        Error::NotGranted(capability) => state.not_granted(capability.into()).to_string(),
    })
}

impl types::Host for HostState {}

impl log::Host for HostState {
    async fn write(&mut self, level: log::Level, message: String) -> Result<(), String> {
        let answer = now::log::Host::write(self, level.convert(), message).await;
        worded(self, answer)
    }
}

impl process::Host for HostState {
    async fn run(&mut self, program: String, args: Vec<String>, directory: String) -> Result<ProgramOutput, String> {
        let answer = now::process::Host::run(self, program, args, directory).await;
        worded(self, answer)
    }
}

impl nix_store::Host for HostState {
    async fn add(&mut self, path: String) -> Result<String, String> {
        let answer = now::nix_store::Host::add(self, path).await;
        worded(self, answer)
    }
}

impl key_value::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        let answer = now::key_value::Host::get(self, key).await;
        worded(self, answer)
    }
    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let answer = now::key_value::Host::set(self, key, value).await;
        worded(self, answer)
    }
    async fn delete(&mut self, key: String) -> Result<(), String> {
        let answer = now::key_value::Host::delete(self, key).await;
        worded(self, answer)
    }
}

impl http::Host for HostState {
    async fn send(&mut self, request: Request) -> Result<Response, String> {
        let answer = now::http::Host::send(self, request.convert()).await;
        worded(self, answer)
    }
}

impl mail::Host for HostState {
    async fn send(&mut self, message: Message) -> Result<(), String> {
        let answer = now::mail::Host::send(self, message.convert()).await;
        worded(self, answer)
    }
}

impl builds::Host for HostState {
    async fn jobsets(&mut self) -> Result<Vec<String>, String> {
        let answer = now::builds::Host::jobsets(self).await;
        worded(self, answer)
    }
    async fn job_builds(&mut self, jobset: String, job: String, limit: u32) -> Result<Vec<BuildSummary>, String> {
        let answer = now::builds::Host::job_builds(self, jobset, job, limit).await;
        worded(self, answer)
    }
    async fn eval(&mut self, id: u64) -> Result<EvalSummary, String> {
        let answer = now::builds::Host::eval(self, id).await;
        worded(self, answer)
    }
    async fn eval_builds(&mut self, id: u64) -> Result<Vec<BuildSummary>, String> {
        let answer = now::builds::Host::eval_builds(self, id).await;
        worded(self, answer)
    }
}

// What the host hands a 0.1.0 plugin's exports.
use fetcher::exports::orthrus::plugin::fetcher as old_fetcher;
use notifier::exports::orthrus::plugin::notify as old_notify;
use now_fetcher::exports::orthrus::plugin::fetcher as new_fetcher;
use now_notifier::exports::orthrus::plugin::notify as new_notify;
use now_release_set::exports::orthrus::plugin::releases as new_releases;
use now_renderer::exports::orthrus::plugin::render as new_render;
use release_set::exports::orthrus::plugin::releases as old_releases;
use renderer::exports::orthrus::plugin::render as old_render;

use {old_notify::BuildInfo, old_notify::Event, old_notify::InputRevision, old_notify::JobsetInfo};
use {old_render::BuildRef, old_render::Product, types::Setting};
same_record!(now::types::Setting => Setting { name, value });
type OldOutput = old_notify::Output;
same_record!(new_notify::Output => OldOutput { name, path });
same_record!(new_notify::JobsetInfo => JobsetInfo { project, name, email_enabled, email_override, url });
same_record!(new_notify::InputRevision => InputRevision { name, type_, value, uri, revision });
same_record!(new_notify::BuildInfo => BuildInfo {
    id, job, nix_name, system, drv_path, status, previous_id, previous_status, queued, started, stopped,
    machine, maintainers, outputs, release_name, log_tail, url, log_url,
});
same_record!(new_notify::Event => Event { id, kind, time, jobset, eval_id, inputs, build, step_nr, data, json });
same_record!(new_render::Product => Product { nr, type_, subtype, name, path, default_path, size, sha256 });
same_record!(new_render::BuildRef => BuildRef { id, project, jobset, job, nix_name, release_name, url, download_url });

// What a 0.1.0 plugin's exports answer.
type NowMetadata = now::types::PluginMetadata;
type NowFetched = new_fetcher::Fetched;
type NowAttr = new_fetcher::Attr;
type NowChange = new_fetcher::Change;
type NowLink = new_render::Link;
type NowRelease = new_releases::Release;
type NowMember = new_releases::Member;
same_record!(types::PluginMetadata => NowMetadata { name, version, description, handles, capabilities });
same_record!(old_fetcher::Fetched => NowFetched { store_path, revision, uri, attrs });
same_record!(old_fetcher::Attr => NowAttr { name, value });
same_record!(old_fetcher::Change => NowChange { revision, author, email, time, message });
same_record!(old_render::Link => NowLink { href, text });
same_record!(old_releases::Release => NowRelease { name, timestamp, members });
same_record!(old_releases::Member => NowMember { build, label });

impl Convert<now::types::Capability> for types::Capability {
    fn convert(self) -> now::types::Capability {
        use now::types::Capability as Now;
        match self {
            types::Capability::RunProgram(program) => Now::RunProgram(program),
            types::Capability::AddToStore => Now::AddToStore,
            types::Capability::KeyValue => Now::KeyValue,
            types::Capability::Log => Now::Log,
            types::Capability::Http(host) => Now::Http(host),
            types::Capability::Mail => Now::Mail,
            types::Capability::ReadBuilds => Now::ReadBuilds,
        }
    }
}

impl Convert<new_fetcher::AttrValue> for old_fetcher::AttrValue {
    fn convert(self) -> new_fetcher::AttrValue {
        match self {
            old_fetcher::AttrValue::Str(s) => new_fetcher::AttrValue::Str(s),
            old_fetcher::AttrValue::Int(i) => new_fetcher::AttrValue::Int(i),
            old_fetcher::AttrValue::Boolean(b) => new_fetcher::AttrValue::Boolean(b),
        }
    }
}

impl Convert<new_render::Rendered> for old_render::Rendered {
    fn convert(self) -> new_render::Rendered {
        match self {
            old_render::Rendered::Html(html) => new_render::Rendered::Html(html),
            old_render::Rendered::Link(link) => new_render::Rendered::Link(link.convert()),
        }
    }
}

/// A 0.1.0 export's answer in the latest's types: its string error is a
/// `failed` (0.1.0 could not say more).
fn answer<T: Convert<U>, U>(answer: Result<T, String>) -> Result<U, Error> {
    answer.map(Convert::convert).map_err(Error::Failed)
}

impl Pre {
    /// What the plugin says it is, in the latest's words.
    pub async fn latest_metadata(&self, store: &mut Store<HostState>) -> wasmtime::Result<NowMetadata> {
        Ok(self.metadata(store).await?.convert())
    }
}

/// The calls of each world's exports, answering in the latest's types.
pub mod call {
    use super::*;

    pub async fn check_value(
        pre: &fetcher::InputFetcherPre<HostState>,
        store: &mut Store<HostState>,
        value: &str,
    ) -> wasmtime::Result<Result<(), Error>> {
        let instance = pre.instantiate_async(&mut *store).await?;
        Ok(answer(instance.orthrus_plugin_fetcher().call_check_value(store, value).await?))
    }

    pub async fn fetch(
        pre: &fetcher::InputFetcherPre<HostState>,
        store: &mut Store<HostState>,
        name: &str,
        value: &str,
    ) -> wasmtime::Result<Result<NowFetched, Error>> {
        let instance = pre.instantiate_async(&mut *store).await?;
        Ok(answer(instance.orthrus_plugin_fetcher().call_fetch(store, name, value).await?))
    }

    pub async fn changes(
        pre: &fetcher::InputFetcherPre<HostState>,
        store: &mut Store<HostState>,
        [value, since, until]: [&str; 3],
    ) -> wasmtime::Result<Result<Vec<NowChange>, Error>> {
        let instance = pre.instantiate_async(&mut *store).await?;
        Ok(answer(instance.orthrus_plugin_fetcher().call_changes(store, value, since, until).await?))
    }

    pub async fn notify(
        pre: &notifier::NotifierPre<HostState>,
        store: &mut Store<HostState>,
        settings: Vec<now::types::Setting>,
        event: new_notify::Event,
    ) -> wasmtime::Result<Result<(), Error>> {
        let instance = pre.instantiate_async(&mut *store).await?;
        let (settings, event): (Vec<Setting>, Event) = (settings.convert(), event.convert());
        Ok(answer(instance.orthrus_plugin_notify().call_notify(store, &settings, &event).await?))
    }

    pub async fn render(
        pre: &renderer::RendererPre<HostState>,
        store: &mut Store<HostState>,
        product: new_render::Product,
        build: new_render::BuildRef,
    ) -> wasmtime::Result<Result<new_render::Rendered, Error>> {
        let instance = pre.instantiate_async(&mut *store).await?;
        let (product, build): (Product, BuildRef) = (product.convert(), build.convert());
        Ok(answer(instance.orthrus_plugin_render().call_render(store, &product, &build).await?))
    }

    pub async fn releases(
        pre: &release_set::ReleaseSetPre<HostState>,
        store: &mut Store<HostState>,
        settings: Vec<now::types::Setting>,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<NowRelease>, Error>> {
        let instance = pre.instantiate_async(&mut *store).await?;
        let settings: Vec<Setting> = settings.convert();
        Ok(answer(instance.orthrus_plugin_releases().call_releases(store, &settings, limit).await?))
    }
}
