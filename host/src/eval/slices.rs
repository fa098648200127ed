//! How one level's items are shared among the evaluation's workers.
//!
//! Each worker process evaluates the expression's root before its first
//! job, which for nixpkgs takes seconds, so the items are cut into one
//! contiguous slice per worker (not many small ones, each paying for the
//! root again). A worker that is done while others still have work takes
//! the far part of the slice that would end last (work stealing): that
//! slice's worker stops once it has reported the item before the cut, and
//! a fresh worker starts at the cut. A cut is made only where it ends the
//! slice sooner, counting the time a fresh worker takes to its first
//! result: a slice about to end is left alone, and slow jobs are shared.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The slices of one level: those waiting for a worker and those running.
pub struct Slices {
    state: Mutex<State>,
}

struct State {
    waiting: Vec<Range<usize>>,
    running: Vec<Arc<Slice>>,
    /// The shortest time a worker of this level took to report its first
    /// item: what starting another one costs.
    startup: Option<Duration>,
}

/// What a free worker is to do.
pub enum Next {
    Slice(Arc<Slice>),
    /// Nothing now, but a running slice may be worth cutting later.
    Later,
    /// The level is done, or will be by the workers running.
    Done,
}

/// A contiguous part of a level's items, evaluated in order by one worker
/// at a time (a replaced or failed worker's successor goes on from where it
/// stopped). Its end moves closer when another worker takes its far part.
pub struct Slice {
    start: usize,
    progress: Mutex<Progress>,
}

struct Progress {
    end: usize,
    /// Items of the slice with an outcome, from its start.
    reported: usize,
    /// When the current worker started, and when it reported its first item.
    worker_started: Instant,
    first_report: Option<Instant>,
    /// Items reported by the current worker.
    by_worker: usize,
}

impl Slices {
    /// `len` items cut into one slice per worker (fewer when there are
    /// fewer items).
    pub fn new(len: usize, workers: usize) -> Slices {
        let parts = workers.max(1).min(len.max(1));
        let waiting =
            (0..parts).rev().map(|p| len * p / parts..len * (p + 1) / parts).filter(|r| !r.is_empty()).collect();
        Slices { state: Mutex::new(State { waiting, running: Vec::new(), startup: None }) }
    }

    /// The next slice for a worker that is free: a waiting one, else the far
    /// part of a running slice, if cutting it ends that slice sooner.
    pub fn next(&self) -> Next {
        let mut state = self.state.lock().expect("slices lock");
        let range = match state.waiting.pop() {
            Some(range) => range,
            None if state.running.is_empty() => return Next::Done,
            None => {
                let now = Instant::now();
                let Some(startup) = state.startup else { return Next::Later };
                // The slice that would end last is the one to cut.
                let last = state
                    .running
                    .iter()
                    .filter_map(|slice| Some((slice.pace(now)?.time_left, slice)))
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                match last.and_then(|(_, slice)| slice.cut_if_sooner(now, startup)) {
                    Some(range) => {
                        tracing::info!(
                            first = range.start,
                            items = range.len(),
                            "evaluator slice cut: a free worker takes the far part of a slow one"
                        );
                        range
                    }
                    None => return Next::Later,
                }
            }
        };
        let slice = Arc::new(Slice {
            start: range.start,
            progress: Mutex::new(Progress {
                end: range.end,
                reported: 0,
                worker_started: Instant::now(),
                first_report: None,
                by_worker: 0,
            }),
        });
        state.running.push(slice.clone());
        Next::Slice(slice)
    }

    /// The slice's worker is done with it: it is no longer a candidate for
    /// a cut.
    pub fn finished(&self, slice: &Arc<Slice>) {
        let mut state = self.state.lock().expect("slices lock");
        state.running.retain(|s| !Arc::ptr_eq(s, slice));
    }

    /// Records how long a worker took to its first item.
    fn started_in(&self, took: Duration) {
        let mut state = self.state.lock().expect("slices lock");
        state.startup = Some(state.startup.map_or(took, |s| s.min(took)));
    }
}

impl Slice {
    /// The slice's first item, in the level.
    pub fn start(&self) -> usize {
        self.start
    }

    /// How many items the slice has now (fewer once cut).
    pub fn len(&self) -> usize {
        self.progress.lock().expect("slice lock").end - self.start
    }

    /// The items still wanted from the slice, from its first unreported one.
    pub fn wanted(&self) -> Range<usize> {
        let progress = self.progress.lock().expect("slice lock");
        self.start + progress.reported..progress.end
    }

    /// A fresh worker starts on the slice.
    pub fn worker_started(&self) {
        let mut progress = self.progress.lock().expect("slice lock");
        progress.worker_started = Instant::now();
        progress.first_report = None;
        progress.by_worker = 0;
    }

    /// `count` more items have an outcome; returns whether the slice wants
    /// more (false once its possibly moved end is reached).
    pub fn reported(&self, slices: &Slices, count: usize) -> bool {
        let mut progress = self.progress.lock().expect("slice lock");
        progress.reported += count;
        progress.by_worker += count;
        if progress.first_report.is_none() && count > 0 {
            let now = Instant::now();
            progress.first_report = Some(now);
            let took = now - progress.worker_started;
            drop(progress);
            slices.started_in(took);
            progress = self.progress.lock().expect("slice lock");
        }
        self.start + progress.reported < progress.end
    }

    /// How fast the slice's worker goes, once it has reported an item.
    fn pace(&self, now: Instant) -> Option<Pace> {
        Pace::of(&self.progress.lock().expect("slice lock"), self.start, now)
    }

    /// Cuts off the far part of the slice for a fresh worker that takes
    /// `startup` to its first item, when that ends the slice sooner: at the
    /// split where both would end at once, at the current worker's pace.
    /// The item being evaluated stays with the current worker.
    fn cut_if_sooner(&self, now: Instant, startup: Duration) -> Option<Range<usize>> {
        let mut progress = self.progress.lock().expect("slice lock");
        let pace = Pace::of(&progress, self.start, now)?;
        // The current worker does `after - k` items, the fresh one `k` once
        // started: equal when k = (after * per_item - startup) / (2 * per_item).
        let k = ((pace.time_left - startup.as_secs_f64()) / (2.0 * pace.per_item)).floor();
        if k < 1.0 {
            return None;
        }
        let k = (k as usize).min(pace.after - 1);
        let cut = progress.end - k;
        let range = cut..progress.end;
        progress.end = cut;
        Some(range)
    }
}

/// A slice's worker's pace, from its first item on (its start, when it
/// evaluates the root, is not per item).
struct Pace {
    per_item: f64,
    /// Items after the one being evaluated.
    after: usize,
    /// Seconds until those are done.
    time_left: f64,
}

impl Pace {
    fn of(progress: &Progress, start: usize, now: Instant) -> Option<Pace> {
        let first = progress.first_report?;
        let per_item = now.saturating_duration_since(first).as_secs_f64() / progress.by_worker.max(1) as f64;
        let after = progress.end.saturating_sub(start + progress.reported + 1);
        (per_item > 0.0 && after >= 2).then_some(Pace { per_item, after, time_left: after as f64 * per_item })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_contiguous_slice_per_worker() {
        let slices = Slices::new(1000, 3);
        let taken: Vec<Range<usize>> = std::iter::from_fn(|| {
            let state = &mut slices.state.lock().unwrap();
            state.waiting.pop()
        })
        .collect();
        assert_eq!(taken, [0..333, 333..666, 666..1000]);
        assert_eq!(Slices::new(2, 4).state.lock().unwrap().waiting.len(), 2);
        assert!(Slices::new(0, 2).state.lock().unwrap().waiting.is_empty());
    }

    #[test]
    fn a_slow_slice_is_cut_where_both_end_together() {
        let slices = Slices::new(100, 1);
        let Next::Slice(slow) = slices.next() else { panic!("one slice waits") };
        assert_eq!(slow.wanted(), 0..100);
        // Nothing to take before a worker has shown how long it takes to start.
        assert!(matches!(slices.next(), Next::Later));
        {
            let mut progress = slow.progress.lock().unwrap();
            let now = Instant::now();
            progress.worker_started = now - Duration::from_secs(11);
            progress.first_report = Some(now - Duration::from_secs(10));
            progress.reported = 10;
            progress.by_worker = 10;
        }
        slices.started_in(Duration::from_secs(1));
        // 1 s an item, 89 after the one in flight, a fresh worker starts in
        // 1 s: it takes 44, and both end about 45 s from now.
        let Next::Slice(taken) = slices.next() else { panic!("the slow slice is cut") };
        assert_eq!(taken.wanted(), 56..100);
        assert_eq!(slow.wanted(), 10..56);
        assert!(slow.reported(&slices, 45));
        assert!(!slow.reported(&slices, 1), "the slice ends at the cut");
    }

    #[test]
    fn quick_items_are_not_worth_a_fresh_worker() {
        let slices = Slices::new(100, 1);
        let Next::Slice(quick) = slices.next() else { panic!("one slice waits") };
        {
            let mut progress = quick.progress.lock().unwrap();
            let now = Instant::now();
            progress.first_report = Some(now - Duration::from_millis(90));
            progress.reported = 90;
            progress.by_worker = 90;
        }
        // 1 ms an item, 9 left: a worker that takes 1 s to start is no help.
        slices.started_in(Duration::from_secs(1));
        assert!(matches!(slices.next(), Next::Later));
        assert_eq!(quick.wanted(), 90..100);
        slices.finished(&quick);
        assert!(matches!(slices.next(), Next::Done));
    }
}
