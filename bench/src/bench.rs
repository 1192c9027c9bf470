//! The benchmark phases: interleaved rounds over all runtimes in rotating order.
//!
//! Rounds run back to back with no pause: a write to cgroup.procs that follows the
//! previous one after a pause waits for an RCU grace period (~9 ms here), and a pause
//! would charge that to whichever runtime happens to come first.

use std::time::Instant;

use crate::error::Error;
use crate::proc::{self, StderrLog, Timed};
use crate::runtime::{Floor, Runtime};
use crate::stats::Series;

pub const FLOOR: &str = "floor";

/// A runtime left out of (part of) the benchmark, and why.
#[derive(Debug, Clone)]
pub struct Note {
    pub subject: String,
    pub reason: String,
}

pub struct Bench {
    pub runtimes: Vec<Runtime>,
    pub floor: Floor,
    pub log: StderrLog,
    pub warmup: usize,
    pub notes: Vec<Note>,
    seq: u64,
}

impl Bench {
    pub fn new(runtimes: Vec<Runtime>, floor: Floor, log: StderrLog, warmup: usize) -> Bench {
        Bench {
            runtimes,
            floor,
            log,
            warmup,
            notes: Vec::new(),
            seq: 0,
        }
    }

    fn next_id(&mut self, name: &str) -> String {
        self.seq += 1;
        format!("sb{}-{name}-{}", std::process::id(), self.seq)
    }

    /// Drops every runtime that fails a checked lifecycle or a first `run`.
    pub fn probe(&mut self) {
        let runtimes = std::mem::take(&mut self.runtimes);
        for rt in runtimes {
            let id = self.next_id(&rt.name);
            let checked = rt
                .probe(&id, &self.log)
                .map_err(|e| (id, e))
                .and_then(|()| {
                    let id = self.next_id(&rt.name);
                    rt.run(&id, &self.log).map(|_| ()).map_err(|e| (id, e))
                });
            match checked {
                Ok(()) => self.runtimes.push(rt),
                Err((id, e)) => {
                    rt.force_delete(&id, &self.log);
                    self.note(&rt.name, format!("skipped: probe failed: {e}"));
                }
            }
            proc::reap_strays();
        }
        proc::reap_strays();
    }

    fn note(&mut self, subject: &str, reason: String) {
        eprintln!("skiff-bench: {subject}: {reason}");
        self.notes.push(Note {
            subject: subject.to_string(),
            reason,
        });
    }

    /// `run` of /bin/true for every runtime, plus the floor (slot 0).
    pub fn run_phase(&mut self, iterations: usize) -> Vec<Series> {
        let mut series = vec![Series::new("run", FLOOR)];
        series.extend(self.runtimes.iter().map(|rt| Series::new("run", &rt.name)));
        let mut failed = vec![false; series.len()];
        let started = self.phase_banner("run", iterations, series.len());
        for round in 0..self.warmup + iterations {
            for slot in rotation(&failed, round) {
                match self.run_once(slot) {
                    Ok(t) if round >= self.warmup => series[slot].samples.push(t),
                    Ok(_) => {}
                    Err(e) => {
                        failed[slot] = true;
                        let name = series[slot].subject.clone();
                        self.note(&name, format!("dropped from the run phase: {e}"));
                    }
                }
            }
        }
        proc::reap_strays();
        eprintln!("skiff-bench: run phase took {:.1?}", started.elapsed());
        series
    }

    fn run_once(&mut self, slot: usize) -> Result<Timed, Error> {
        if slot == 0 {
            return self.floor.run(&self.log);
        }
        let name = self.runtimes[slot - 1].name.clone();
        let id = self.next_id(&name);
        let rt = &self.runtimes[slot - 1];
        rt.run(&id, &self.log)
            .inspect_err(|_| rt.force_delete(&id, &self.log))
    }

    /// create, start and delete timed separately; the container's exit is awaited
    /// untimed between start and delete.
    pub fn split_phase(&mut self, iterations: usize) -> Vec<Series> {
        const OPS: [&str; 4] = ["create", "start", "delete", "create+start+delete"];
        let mut series: Vec<Series> = OPS
            .iter()
            .flat_map(|op| {
                self.runtimes
                    .iter()
                    .map(move |rt| Series::new(op, &rt.name))
            })
            .collect();
        let count = self.runtimes.len();
        let mut failed = vec![false; count];
        let started = self.phase_banner("split", iterations, count);
        for round in 0..self.warmup + iterations {
            for slot in rotation(&failed, round) {
                let name = self.runtimes[slot].name.clone();
                let id = self.next_id(&name);
                let rt = &self.runtimes[slot];
                match rt.lifecycle(&id, &self.log) {
                    Ok(l) if round >= self.warmup => {
                        let total = Timed {
                            elapsed: l.create.elapsed + l.start.elapsed + l.delete.elapsed,
                            maxrss_kib: l
                                .create
                                .maxrss_kib
                                .max(l.start.maxrss_kib)
                                .max(l.delete.maxrss_kib),
                        };
                        for (k, t) in [l.create, l.start, l.delete, total].into_iter().enumerate() {
                            series[k * count + slot].samples.push(t);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        rt.force_delete(&id, &self.log);
                        failed[slot] = true;
                        self.note(&name, format!("dropped from the split phase: {e}"));
                    }
                }
                proc::reap_strays();
            }
        }
        eprintln!("skiff-bench: split phase took {:.1?}", started.elapsed());
        series
    }

    fn phase_banner(&self, phase: &str, iterations: usize, subjects: usize) -> Instant {
        eprintln!(
            "skiff-bench: {phase} phase: {} warm-up + {iterations} timed rounds over {subjects} subjects",
            self.warmup
        );
        Instant::now()
    }
}

/// The slots still in the benchmark, in the order of `round`: rounds cycle through
/// every permutation, so each runtime is first, last and after each other one equally
/// often over a full cycle.
fn rotation(failed: &[bool], round: usize) -> Vec<usize> {
    let mut active: Vec<usize> = (0..failed.len()).filter(|&i| !failed[i]).collect();
    let orders: usize = (1..=active.len()).product();
    let mut k = round % orders.max(1);
    let mut order = Vec::with_capacity(active.len());
    // The k-th permutation in lexicographic order, read off k's factorial-base digits.
    while !active.is_empty() {
        let rest: usize = (1..active.len()).product();
        order.push(active.remove(k / rest));
        k %= rest;
    }
    order
}

#[cfg(test)]
mod tests {
    use super::rotation;

    #[test]
    fn rotation_cycles_through_every_order() {
        let none = [false; 3];
        let orders: Vec<Vec<usize>> = (0..6).map(|r| rotation(&none, r)).collect();
        assert_eq!(
            orders,
            [
                [0, 1, 2],
                [0, 2, 1],
                [1, 0, 2],
                [1, 2, 0],
                [2, 0, 1],
                [2, 1, 0]
            ]
        );
        assert_eq!(rotation(&none, 6), [0, 1, 2]);
        assert_eq!(rotation(&[false, true, false], 1), [2, 0]);
        assert!(rotation(&[true], 0).is_empty());
    }
}
