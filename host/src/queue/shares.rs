//! Jobset shares: how much of the machines' time each jobset used in the
//! last day, divided by its `schedulingshares`. The scheduler serves the
//! jobset furthest below its share first, so a jobset with three times the
//! shares gets about three times the build time under contention.

use std::collections::{HashMap, VecDeque};

use super::scheduler::JobsetId;

/// Usage is counted over this window.
pub const WINDOW_SECS: i64 = 24 * 3600;
/// Finished steps are summed per bucket of this many seconds.
const BUCKET_SECS: i64 = 60;
/// What a step is assumed to cost before a jobset has any history.
const DEFAULT_STEP_SECS: f64 = 1.0;

#[derive(Debug, Default)]
struct JobsetTime {
    shares: u32,
    /// (bucket start, seconds, steps) of steps that finished in the window.
    buckets: VecDeque<(i64, f64, u64)>,
    seconds: f64,
    steps: u64,
}

impl JobsetTime {
    fn expire(&mut self, now: i64) {
        while let Some(&(start, seconds, steps)) = self.buckets.front() {
            if start + BUCKET_SECS > now - WINDOW_SECS {
                break;
            }
            self.buckets.pop_front();
            self.seconds -= seconds;
            self.steps -= steps;
        }
        if self.buckets.is_empty() {
            self.seconds = 0.0;
            self.steps = 0;
        }
    }

    fn mean_step(&self) -> f64 {
        if self.steps == 0 { DEFAULT_STEP_SECS } else { (self.seconds / self.steps as f64).max(0.001) }
    }
}

/// Build time per jobset over the last day.
#[derive(Debug, Default)]
pub struct Shares {
    jobsets: HashMap<JobsetId, JobsetTime>,
}

impl Shares {
    /// Sets each jobset's `schedulingshares` (at least 1).
    pub fn set_shares(&mut self, shares: impl IntoIterator<Item = (JobsetId, i32)>) {
        for (jobset, shares) in shares {
            self.jobsets.entry(jobset).or_default().shares = shares.max(1) as u32;
        }
    }

    /// Counts a finished step: `seconds` of machine time, ending at `finished_at` (unix time).
    pub fn record(&mut self, jobset: JobsetId, finished_at: i64, seconds: f64) {
        let time = self.jobsets.entry(jobset).or_default();
        let bucket = finished_at - finished_at.rem_euclid(BUCKET_SECS);
        // Usually the newest bucket; history read at start comes in any order.
        let position = time.buckets.iter().rposition(|(start, _, _)| *start <= bucket);
        match position {
            Some(i) if time.buckets[i].0 == bucket => {
                time.buckets[i].1 += seconds;
                time.buckets[i].2 += 1;
            }
            Some(i) => time.buckets.insert(i + 1, (bucket, seconds, 1)),
            None => time.buckets.push_front((bucket, seconds, 1)),
        }
        time.seconds += seconds;
        time.steps += 1;
    }

    /// A snapshot for one scheduling pass: each jobset's usage, counting
    /// the steps running now (`running`: jobset and seconds so far) as at
    /// least a typical step of theirs.
    pub fn usage(&mut self, now: i64, running: impl IntoIterator<Item = (JobsetId, f64)>) -> ShareUsage {
        let mut snapshot = ShareUsage::default();
        for time in self.jobsets.values_mut() {
            time.expire(now);
        }
        for (&jobset, time) in &self.jobsets {
            snapshot.set(jobset, time.seconds, time.shares.max(1), time.mean_step());
        }
        for (jobset, elapsed) in running {
            let mean = self.jobsets.get(&jobset).map_or(DEFAULT_STEP_SECS, JobsetTime::mean_step);
            let shares = self.jobsets.get(&jobset).map_or(1, |t| t.shares.max(1));
            let entry = snapshot.usage.entry(jobset).or_insert(0.0);
            *entry += elapsed.max(mean) / shares as f64;
        }
        snapshot
    }
}

/// Each jobset's used share, as one scheduling pass sees and updates it.
#[derive(Debug, Default, Clone)]
pub struct ShareUsage {
    usage: HashMap<JobsetId, f64>,
    /// What one more step adds to a jobset's usage.
    step_cost: HashMap<JobsetId, f64>,
}

impl ShareUsage {
    /// A jobset that used `seconds` with `shares`, whose steps take
    /// `mean_step` seconds.
    pub fn set(&mut self, jobset: JobsetId, seconds: f64, shares: u32, mean_step: f64) {
        let shares = shares.max(1) as f64;
        self.usage.insert(jobset, seconds / shares);
        self.step_cost.insert(jobset, mean_step / shares);
    }

    pub fn of(&self, jobset: JobsetId) -> f64 {
        self.usage.get(&jobset).copied().unwrap_or(0.0)
    }

    /// A step of the jobset was started.
    pub fn charge(&mut self, jobset: JobsetId) {
        let cost = self.step_cost.get(&jobset).copied().unwrap_or(DEFAULT_STEP_SECS);
        *self.usage.entry(jobset).or_insert(0.0) += cost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_time_over_shares_within_the_window() {
        let mut shares = Shares::default();
        shares.set_shares([(1, 1), (2, 3)]);
        let now = 1_000_000;
        shares.record(1, now - 10, 30.0);
        shares.record(2, now - 10, 30.0);
        shares.record(2, now - WINDOW_SECS - 120, 1000.0);
        let usage = shares.usage(now, []);
        assert_eq!(usage.of(1), 30.0);
        assert_eq!(usage.of(2), 10.0, "the old step fell out of the window");
        assert_eq!(usage.of(3), 0.0);
    }

    #[test]
    fn running_steps_count_as_at_least_a_typical_step() {
        let mut shares = Shares::default();
        shares.set_shares([(1, 2)]);
        shares.record(1, 100, 10.0);
        shares.record(1, 100, 30.0);
        let usage = shares.usage(200, [(1, 1.0), (1, 50.0)]);
        // 40 s done, one step counted as the mean (20 s), one as its 50 s so far.
        assert_eq!(usage.of(1), (40.0 + 20.0 + 50.0) / 2.0);
        let mut usage = usage;
        usage.charge(1);
        assert_eq!(usage.of(1), (40.0 + 20.0 + 50.0 + 20.0) / 2.0);
    }
}
