//! Recording successful builds: their outputs' sizes, `nix-support`
//! results read inside each output, and the metrics, in batches.

use super::*;

/// Reads what successful builds left (products, metrics, release name,
/// sizes) and records them, with one transaction for the whole batch.
/// Sizes and closures come through the open connection to the local store
/// (two Nix processes only if it fails): the build's end, and its
/// notifications, wait for them.
pub(super) async fn record_successes(
    db: &Db,
    nix: &Nix,
    machines: &Machines,
    metrics: &Metrics,
    builds: Vec<TrackedBuild>,
    max_output_size: u64,
) {
    let time = now();
    let ids: Vec<i64> = builds.iter().map(|b| b.id).collect();
    let mut outputs = match db.outputs_of(&ids).await {
        Ok(outputs) => outputs,
        Err(e) => {
            warn!("cannot read the outputs of {} finished builds: {e}", ids.len());
            return;
        }
    };
    let outputs: Vec<Vec<(String, String)>> = ids.iter().map(|id| outputs.remove(id).unwrap_or_default()).collect();
    let reads = {
        let outputs = outputs.clone();
        tokio::task::spawn_blocking(move || outputs.iter().map(|o| read_build_results(o)).collect::<Vec<_>>())
            .await
            .unwrap_or_default()
    };
    let groups: Vec<Vec<StorePath>> =
        outputs.iter().map(|o| o.iter().filter_map(|(_, p)| StorePath::parse(p).ok()).collect()).collect();
    let roots: Vec<StorePath> = groups.iter().flatten().cloned().collect();
    let sizes = match machines.closure_infos(&roots).await {
        Ok(infos) => Ok(crate::nix::group_sizes_from(&groups, &infos)),
        Err(e) => {
            debug!("{e}; asking Nix");
            nix.group_sizes(&groups).await
        }
    };
    let sizes = match sizes {
        Ok((sizes, closure)) => {
            // What the binary cache serves from now on.
            if let Err(e) = db.record_cache_paths(&closure).await {
                warn!("cannot record the closures of {} builds for the binary cache: {e}", ids.len());
            }
            sizes.into_iter().map(Some).collect()
        }
        Err(e) => {
            warn!("cannot read the output sizes of {} builds: {e}", ids.len());
            vec![None; groups.len()]
        }
    };
    let results: Vec<FinishedBuild> = builds
        .iter()
        .zip(reads.into_iter().chain(std::iter::repeat_with(Default::default)))
        .zip(sizes)
        .map(|((build, read), sizes)| {
            let mut code = if read.failed { BuildStatus::FailedWithOutput } else { BuildStatus::Succeeded };
            if sizes.is_some_and(|(own, _)| own > max_output_size) {
                code = BuildStatus::OutputLimitExceeded;
            }
            FinishedBuild {
                id: build.id,
                status: code,
                is_cached: build.never_started,
                start_time: time,
                stop_time: time,
                size: sizes.map(|(own, _)| own as i64),
                closure_size: sizes.map(|(_, closure)| closure as i64),
                release_name: read.release_name,
                products: read.products,
                metrics: read.metrics,
                output_errors: read.errors,
            }
        })
        .collect();
    report_finished(db, metrics, &results).await;
}

/// Writes finished builds and logs each one this call finished.
pub(super) async fn report_finished(db: &Db, metrics: &Metrics, results: &[FinishedBuild]) {
    match db.finish_builds(results).await {
        Ok(finished) => {
            for (result, _) in results.iter().zip(finished).filter(|(_, done)| *done) {
                info!(build = result.id, status = result.status.describe(), "build finished");
                metrics.build_finished(result.status.describe());
            }
        }
        Err(e) => warn!("cannot record the end of {} builds: {e}", results.len()),
    }
}
