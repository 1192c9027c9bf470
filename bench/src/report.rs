//! Results as a readable table or as JSON.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::bench::Note;
use crate::stats::{Series, Summary};

/// What the run was measured on.
pub struct Environment {
    pub kernel: String,
    pub cpus: usize,
    pub cgroups: String,
    pub bundle: String,
    pub state_dir: String,
    pub floor: String,
    pub warmup: usize,
    /// (runtime, binary, version)
    pub runtimes: Vec<(String, String, String)>,
}

pub struct Report<'a> {
    pub env: &'a Environment,
    pub series: &'a [Series],
    pub notes: &'a [Note],
}

/// Ratios of medians that the report shows, as (numerator, denominator).
const RATIOS: [(&str, &str); 2] = [("skiff", "crun"), ("skiff", "runc")];

impl Report<'_> {
    fn median(&self, op: &str, subject: &str) -> Option<f64> {
        self.series
            .iter()
            .find(|s| s.op == op && s.subject == subject)
            .and_then(Series::summary)
            .map(|s| s.median_ms)
    }

    fn ops(&self) -> Vec<&'static str> {
        let mut ops: Vec<&'static str> = Vec::new();
        for s in self.series {
            if !ops.contains(&s.op) {
                ops.push(s.op);
            }
        }
        ops
    }

    fn ratio(&self, op: &str, (num, den): (&str, &str)) -> Option<f64> {
        Some(self.median(op, num)? / self.median(op, den)?)
    }

    pub fn table(&self) -> String {
        let env = self.env;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "kernel {} on {} CPUs; {}",
            env.kernel, env.cpus, env.cgroups
        );
        let _ = writeln!(
            out,
            "bundle {}; runtime state on tmpfs at {}",
            env.bundle, env.state_dir
        );
        let _ = writeln!(out, "floor: fork+exec+wait of {}", env.floor);
        for (name, binary, version) in &env.runtimes {
            let _ = writeln!(out, "{name}: {binary} ({version})");
        }
        let _ = writeln!(
            out,
            "\n{:<20} {:<6} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "who", "n", "median", "p90", "mean", "min", "peak RSS"
        );
        let _ = writeln!(
            out,
            "{:<20} {:<6} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "", "", "ms", "ms", "ms", "ms", "MiB"
        );
        for s in self.series {
            let _ = writeln!(out, "{}", row(s));
        }
        let _ = writeln!(out, "\nratios of medians:");
        for op in self.ops() {
            let cells: Vec<String> = RATIOS
                .iter()
                .map(|&pair| match self.ratio(op, pair) {
                    Some(r) => format!("{}/{} {r:.2}x", pair.0, pair.1),
                    None => format!("{}/{} -", pair.0, pair.1),
                })
                .collect();
            let _ = writeln!(out, "  {op:<20} {}", cells.join("   "));
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\nnotes:");
            for n in self.notes {
                let _ = writeln!(out, "  {}: {}", n.subject, n.reason);
            }
        }
        out
    }

    pub fn json(&self) -> Value {
        let env = self.env;
        let results: Vec<Value> = self
            .series
            .iter()
            .filter_map(|s| s.summary().map(|sum| summary_json(s, &sum)))
            .collect();
        let ratios: Vec<Value> = self
            .ops()
            .into_iter()
            .map(|op| {
                let mut obj = serde_json::Map::new();
                obj.insert("op".into(), json!(op));
                for pair in RATIOS {
                    obj.insert(
                        format!("{}_over_{}", pair.0, pair.1),
                        json!(self.ratio(op, pair)),
                    );
                }
                Value::Object(obj)
            })
            .collect();
        json!({
            "environment": {
                "kernel": env.kernel,
                "cpus": env.cpus,
                "cgroups": env.cgroups,
                "bundle": env.bundle,
                "state_dir": env.state_dir,
                "floor": env.floor,
                "warmup_rounds": env.warmup,
                "runtimes": env.runtimes.iter().map(|(n, b, v)| json!({"name": n, "binary": b, "version": v})).collect::<Vec<_>>(),
            },
            "results": results,
            "ratios_of_medians": ratios,
            "notes": self.notes.iter().map(|n| json!({"runtime": n.subject, "reason": n.reason})).collect::<Vec<_>>(),
        })
    }
}

fn row(s: &Series) -> String {
    match s.summary() {
        Some(m) => format!(
            "{:<20} {:<6} {:>5} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.1}",
            s.op,
            s.subject,
            m.n,
            m.median_ms,
            m.p90_ms,
            m.mean_ms,
            m.min_ms,
            m.peak_rss_kib as f64 / 1024.0
        ),
        None => format!(
            "{:<20} {:<6} {:>5} {:>9}",
            s.op, s.subject, 0, "(no samples)"
        ),
    }
}

fn summary_json(s: &Series, m: &Summary) -> Value {
    json!({
        "op": s.op,
        "runtime": s.subject,
        "samples": m.n,
        "median_ms": m.median_ms,
        "p90_ms": m.p90_ms,
        "mean_ms": m.mean_ms,
        "min_ms": m.min_ms,
        "max_ms": m.max_ms,
        "peak_rss_kib": m.peak_rss_kib,
        "samples_ms": s.samples.iter().map(|t| t.elapsed.as_secs_f64() * 1000.0).collect::<Vec<_>>(),
    })
}
