//! Logging for the CLI: text or runc-shaped JSON lines (`{"level","msg","time"}`, which callers such as
//! containerd parse for the last error), to `--log` or stderr.
//!
//! A command logs a few lines at most and never enters a span, so a small subscriber that formats
//! each event and writes it in one call does all that is needed; setting up a full registry of spans
//! cost more than any other part of a short command's own start.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use super::LogFormat;

pub struct Guard;

pub fn init(log: Option<&Path>, format: LogFormat, debug: bool) -> Option<Guard> {
    let file = log.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| eprintln!("skiff: --log {}: {e}", p.display()))
            .ok()
    });
    let logger = Logger {
        max: if debug { Level::DEBUG } else { Level::WARN },
        json: format == LogFormat::Json,
        file,
    };
    tracing::subscriber::set_global_default(logger)
        .ok()
        .map(|_| Guard)
}

struct Logger {
    max: Level,
    json: bool,
    /// `None` for stderr.
    file: Option<File>,
}

impl Logger {
    fn line(&self, event: &Event<'_>) -> String {
        let mut msg = Message::default();
        event.record(&mut msg);
        let level = *event.metadata().level();
        let time = crate::state::now_rfc3339();
        if !self.json {
            return format!("{time} {level:>5} {}\n", msg.0);
        }
        let level = match level {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        let line = serde_json::json!({ "level": level, "msg": msg.0, "time": time });
        format!("{line}\n")
    }
}

impl Subscriber for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::from_level(self.max))
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let line = self.line(event);
        // One write per line: appends from concurrent commands sharing a log file do not interleave.
        let _ = match &self.file {
            Some(f) => (&mut &*f).write_all(line.as_bytes()),
            None => std::io::stderr().write_all(line.as_bytes()),
        };
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(json: bool, debug: bool, emit: impl FnOnce()) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let logger = Logger {
            max: if debug { Level::DEBUG } else { Level::WARN },
            json,
            file: Some(File::create(&path).unwrap()),
        };
        tracing::subscriber::with_default(logger, emit);
        std::fs::read_to_string(&path).unwrap()
    }

    #[test]
    fn json_lines_have_runc_fields() {
        let text = capture(true, true, || {
            tracing::debug!(pid = 7, "started");
            tracing::warn!("careful");
        });
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "debug");
        assert_eq!(lines[0]["msg"], "started pid=7");
        assert_eq!(lines[1]["level"], "warning");
        assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn text_lines_and_level_filter() {
        let text = capture(false, false, || {
            tracing::debug!("hidden");
            tracing::error!(id = "c1", "failed");
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with(" ERROR failed id=c1\n"), "{text}");
    }
}
