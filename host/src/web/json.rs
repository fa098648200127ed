//! The JSON shapes of HYDRA-API.md, built from the database's values.
//! Field names and value types are Hydra's (`finished` is 0/1, empty
//! strings are `""`, times are Unix seconds or null); Orthrus only adds
//! fields.

use serde_json::{Map, Value, json};

use super::eval_stream::EvalObject;
use crate::db::{BuildView, EvaluationError, Jobset, JobsetEval, JobsetEvalInput, JobsetInput, Project};

fn int_bool(b: bool) -> i64 {
    i64::from(b)
}

pub fn project(project: &Project, jobsets: &[Jobset]) -> Value {
    let mut value = json!({
        "name": project.name,
        "displayname": project.display_name,
        "description": project.description,
        "homepage": project.homepage,
        "owner": project.owner,
        "enabled": project.enabled,
        "hidden": project.hidden,
        "enable_dynamic_run_command": project.enable_dynamic_run_command,
        "jobsets": jobsets.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
    });
    if let Some(declarative) = project.declarative() {
        // Orthrus adds what became of the spec: the error that kept it from
        // applying ("" when it applied), when it was read, and the build of
        // the generator job dealt with last.
        value["declarative"] = json!({
            "file": declarative.file,
            "type": declarative.kind,
            "value": declarative.value,
            "error": project.declarative_error.clone().unwrap_or_default(),
            "checkedtime": project.declarative_checked_time,
            "build": project.declarative_build,
        });
    }
    let release_sets = project.release_sets();
    if !release_sets.is_empty() {
        value["releasesets"] = json!(release_sets);
    }
    value
}

pub fn jobset(project: &Project, jobset: &Jobset, inputs: &[JobsetInput]) -> Value {
    let inputs: Map<String, Value> = inputs
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                json!({ "name": i.name, "type": i.kind, "value": i.value, "emailresponsible": i.email_responsible }),
            )
        })
        .collect();
    json!({
        "name": jobset.name,
        "project": project.name,
        "description": jobset.description,
        "nixexprinput": jobset.nixexpr_input,
        "nixexprpath": jobset.nixexpr_path,
        "errormsg": jobset.error_msg.clone().unwrap_or_default(),
        "errortime": jobset.error_time,
        "lastcheckedtime": jobset.last_checked_time,
        "lastcheckoutcome": jobset.last_check_outcome,
        "triggertime": jobset.trigger_time,
        "enabled": jobset.enabled,
        "enableemail": jobset.enable_email,
        "enable_dynamic_run_command": jobset.enable_dynamic_run_command,
        "visible": !jobset.hidden,
        "emailoverride": jobset.email_override,
        "keepnr": jobset.keep_nr,
        "checkinterval": jobset.check_interval,
        "schedulingshares": jobset.scheduling_shares,
        "fetcherrormsg": jobset.fetch_error_msg.clone().unwrap_or_default(),
        "starttime": jobset.start_time,
        // While it is evaluated: how far (null otherwise).
        "evaluation": eval_progress(jobset),
        "type": jobset.kind,
        "flake": jobset.flake.clone().unwrap_or_default(),
        "inputs": inputs,
    })
}

/// How far a running evaluation of the jobset is, if one runs.
pub fn eval_progress(jobset: &Jobset) -> Option<crate::domain::EvalProgressCount> {
    match (jobset.start_time, jobset.eval_evaluated) {
        (Some(_), Some(evaluated)) => Some(crate::domain::EvalProgressCount {
            evaluated: evaluated.max(0) as usize,
            total: jobset.eval_total.map(|total| total.max(0) as usize),
        }),
        _ => None,
    }
}

/// An evaluation as Hydra's JSON has it; its `builds` are written from
/// its members as the answer streams (see `eval_stream`).
pub fn eval(eval: &JobsetEval, inputs: &[JobsetEvalInput], errors: Option<&[EvaluationError]>) -> EvalObject {
    let inputs: Map<String, Value> = inputs
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                json!({
                    "type": i.kind,
                    "uri": i.uri,
                    "revision": i.revision,
                    "value": i.value,
                    "dependency": i.dependency,
                    "path": i.path,
                }),
            )
        })
        .collect();
    let mut value = json!({
        "id": eval.id,
        "timestamp": eval.timestamp,
        "checkouttime": eval.checkout_time,
        "evaltime": eval.eval_time,
        "hasnewbuilds": int_bool(eval.has_new_builds),
        "flake": eval.flake,
        "jobsetevalinputs": inputs,
        "nrbuilds": eval.nr_builds,
        "nrerrors": eval.nr_errors,
    });
    if let Some(errors) = errors {
        value["errors"] =
            errors.iter().map(|e| json!({ "job": e.job.clone().unwrap_or_default(), "message": e.message })).collect();
    }
    let fields = value.as_object_mut().map(std::mem::take).unwrap_or_default();
    EvalObject { eval_id: eval.id, fields }
}

pub fn build(view: &BuildView) -> Value {
    let b = &view.build;
    let outputs: Map<String, Value> =
        view.outputs.iter().map(|(name, path)| (name.clone(), json!({ "path": path }))).collect();
    let products: Map<String, Value> = view
        .products
        .iter()
        .map(|p| {
            (
                p.product_nr.to_string(),
                json!({
                    "type": p.kind,
                    "subtype": p.subtype,
                    "name": p.name,
                    "path": p.path,
                    "defaultpath": p.default_path,
                    "filesize": p.file_size,
                    "sha256hash": p.sha256_hash,
                    "error": p.error,
                }),
            )
        })
        .collect();
    let metrics: Map<String, Value> =
        view.metrics.iter().map(|m| (m.name.clone(), json!({ "value": m.value, "unit": m.unit }))).collect();
    json!({
        "id": b.id,
        "finished": int_bool(b.finished),
        "timestamp": b.timestamp,
        "starttime": b.start_time,
        "stoptime": b.stop_time,
        "project": view.project,
        "jobset": view.jobset,
        "job": b.job,
        "nixname": b.nix_name,
        "system": b.system,
        "priority": b.priority,
        "globalpriority": b.global_priority,
        "buildstatus": if b.finished { b.build_status } else { None },
        "releasename": b.release_name,
        "drvpath": b.drv_path,
        "jobsetevals": view.evals,
        "buildoutputs": outputs,
        "buildproducts": products,
        "buildmetrics": metrics,
        "iscachedbuild": b.is_cached_build.map(int_bool),
        "size": b.size,
        "closuresize": b.closure_size,
        "description": b.description,
        "license": b.license,
        "homepage": b.homepage,
        "maintainers": b.maintainers,
        "timeout": b.timeout,
        "maxsilent": b.max_silent,
        "ischannel": int_bool(b.is_channel),
        "keep": int_bool(b.keep),
        "outputerrors": b.output_errors.as_deref().map(|e| e.lines().collect::<Vec<_>>()).unwrap_or_default(),
        "outputs_collected": b.outputs_collected,
    })
}

pub fn builds(views: &[BuildView]) -> Value {
    Value::Array(views.iter().map(build).collect())
}

pub fn step(step: &crate::db::BuildStep) -> Value {
    json!({
        "stepnr": step.step_nr,
        "drvpath": step.drv_path,
        "busy": int_bool(step.busy),
        "status": step.status,
        "errormsg": step.error_msg,
        "starttime": step.start_time,
        "stoptime": step.stop_time,
        "machine": step.machine,
        "system": step.system,
        "propagatedfrom": step.propagated_from,
        "type": step.kind,
    })
}
