//! Between the server's plain types (`api.rs`) and the WIT records.

use super::api::{BuildRef, NotifyEvent, ProductToRender, Release, Rendered};
use super::bindings::notifier::exports::orthrus::plugin::notify as wit_notify;
use super::bindings::release_set::exports::orthrus::plugin::releases as wit_releases;
use super::bindings::renderer::exports::orthrus::plugin::render as wit_render;

fn unsigned(id: i64) -> u64 {
    u64::try_from(id).unwrap_or(0)
}

pub fn notify_event(event: &NotifyEvent) -> wit_notify::Event {
    let outputs = |outputs: &[(String, String)]| {
        outputs.iter().map(|(name, path)| wit_notify::Output { name: name.clone(), path: path.clone() }).collect()
    };
    wit_notify::Event {
        id: unsigned(event.id),
        kind: event.kind.clone(),
        time: event.time,
        jobset: wit_notify::JobsetInfo {
            project: event.jobset.project.clone(),
            name: event.jobset.name.clone(),
            email_enabled: event.jobset.email_enabled,
            email_override: event.jobset.email_override.clone(),
            url: event.jobset.url.clone(),
        },
        eval_id: event.eval_id.map(unsigned),
        inputs: event
            .inputs
            .iter()
            .map(|i| wit_notify::InputRevision {
                name: i.name.clone(),
                type_: i.kind.clone(),
                value: i.value.clone(),
                uri: i.uri.clone(),
                revision: i.revision.clone(),
            })
            .collect(),
        build: event.build.as_ref().map(|b| wit_notify::BuildInfo {
            id: unsigned(b.id),
            job: b.job.clone(),
            nix_name: b.nix_name.clone(),
            system: b.system.clone(),
            drv_path: b.drv_path.clone(),
            status: b.status,
            previous_id: b.previous_id.map(unsigned),
            previous_status: b.previous_status,
            queued: b.queued,
            started: b.started,
            stopped: b.stopped,
            machine: b.machine.clone(),
            maintainers: b.maintainers.clone(),
            outputs: outputs(&b.outputs),
            release_name: b.release_name.clone(),
            log_tail: b.log_tail.clone(),
            url: b.url.clone(),
            log_url: b.log_url.clone(),
        }),
        step_nr: event.step_nr,
        data: event.data.to_string(),
        json: serde_json::to_string(event).unwrap_or_default(),
    }
}

pub fn product(product: &ProductToRender) -> wit_render::Product {
    wit_render::Product {
        nr: product.nr,
        type_: product.kind.clone(),
        subtype: product.subtype.clone(),
        name: product.name.clone(),
        path: product.path.clone(),
        default_path: product.default_path.clone(),
        size: product.size,
        sha256: product.sha256.clone(),
    }
}

pub fn build_ref(build: &BuildRef) -> wit_render::BuildRef {
    wit_render::BuildRef {
        id: unsigned(build.id),
        project: build.project.clone(),
        jobset: build.jobset.clone(),
        job: build.job.clone(),
        nix_name: build.nix_name.clone(),
        release_name: build.release_name.clone(),
        url: build.url.clone(),
        download_url: build.download_url.clone(),
    }
}

pub fn rendered(rendered: wit_render::Rendered) -> Rendered {
    match rendered {
        wit_render::Rendered::Html(html) => Rendered::Html(html),
        wit_render::Rendered::Link(link) => Rendered::Link { href: link.href, text: link.text },
    }
}

pub fn release(release: wit_releases::Release) -> Release {
    Release {
        name: release.name,
        timestamp: release.timestamp,
        members: release.members.into_iter().map(|m| (i64::try_from(m.build).unwrap_or(-1), m.label)).collect(),
    }
}
