//! Logging for the CLI: text or runc-shaped JSON lines (`{"level","msg","time"}`, which callers such as
//! containerd parse for the last error), to `--log` or stderr.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::LogFormat;

pub struct Guard;

pub fn init(log: Option<&Path>, format: LogFormat, debug: bool) -> Option<Guard> {
    let level = if debug { Level::DEBUG } else { Level::WARN };
    let file = log.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| eprintln!("skiff: --log {}: {e}", p.display()))
            .ok()
    });
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false);
    let result = match (file, format) {
        (Some(f), LogFormat::Json) => builder
            .event_format(RuncJson)
            .with_writer(Mutex::new(f))
            .try_init(),
        (Some(f), LogFormat::Text) => builder.with_writer(Mutex::new(f)).try_init(),
        (None, LogFormat::Json) => builder
            .event_format(RuncJson)
            .with_writer(std::io::stderr)
            .try_init(),
        // Errors reach stderr through main's own message; logs there would say it twice.
        (None, LogFormat::Text) => builder
            .with_writer(std::io::stderr)
            .with_max_level(if debug { Level::DEBUG } else { Level::WARN })
            .try_init(),
    };
    result.ok().map(|_| Guard)
}

struct RuncJson;

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

impl<S, N> FormatEvent<S, N> for RuncJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut msg = Message::default();
        event.record(&mut msg);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        let line = serde_json::json!({
            "level": level,
            "msg": msg.0,
            "time": crate::state::now_rfc3339(),
        });
        writeln!(writer, "{line}")
    }
}
