//! A small hand-written parser for the hot lifecycle commands (`create`, `start`, `run` of a bundle,
//! `state`, `kill`, `delete`) and runc's global flags.
//!
//! Engines run these commands once per container, so their start cost matters; clap's parsing code
//! alone faults in about a megabyte of pages. This parser accepts only command lines it understands
//! completely and that clap would accept with the same meaning: `--flag value`, `--flag=value`,
//! `-f value` for the short flags these commands have, and flags before or after the positionals.
//! Anything else (`--help`, `--version`, unknown or repeated flags, `--`, combined short flags,
//! empty or non-UTF-8 arguments, missing or extra positionals, values that look like flags) returns
//! `None`, and the caller hands the command line to clap, which then gives its usual help or error.

use std::ffi::OsString;
use std::path::PathBuf;

use super::{CreateArgs, DeleteArgs, Globals, IdArgs, KillArgs, LaunchArgs, LogFormat};

/// A lifecycle command with its global flags.
#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    pub globals: Globals,
    pub command: Lifecycle,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lifecycle {
    Create(CreateArgs),
    Start(IdArgs),
    /// `run` of a bundle (never `--image`, which goes through clap).
    Run(BundleRun),
    State(IdArgs),
    Kill(KillArgs),
    Delete(DeleteArgs),
}

#[derive(Debug, PartialEq, Eq)]
pub struct BundleRun {
    pub bundle: Option<PathBuf>,
    pub launch: LaunchArgs,
    pub detach: bool,
    pub keep: bool,
    pub id: String,
}

/// One flag a command takes: its long name, its short letter, whether it takes a value.
struct Flag {
    long: &'static str,
    short: Option<char>,
    value: bool,
}

const fn flag(long: &'static str, short: Option<char>, value: bool) -> Flag {
    Flag { long, short, value }
}

const GLOBALS: &[Flag] = &[
    flag("root", None, true),
    flag("log", None, true),
    flag("log-format", None, true),
    flag("debug", None, false),
    flag("systemd-cgroup", None, false),
    flag("rootless", None, true),
    flag("criu", None, true),
];

/// `create`'s flags. `run` takes the same ones at the same positions, then its own: [`launch`]
/// reads them by position.
const CREATE: &[Flag] = &[
    flag("bundle", Some('b'), true),
    flag("pid-file", None, true),
    flag("console-socket", None, true),
    flag("no-new-keyring", None, false),
    flag("preserve-fds", None, true),
    flag("no-pivot", None, false),
];

const RUN: &[Flag] = &[
    flag("bundle", Some('b'), true),
    flag("pid-file", None, true),
    flag("console-socket", None, true),
    flag("no-new-keyring", None, false),
    flag("preserve-fds", None, true),
    flag("no-pivot", None, false),
    flag("detach", Some('d'), false),
    flag("keep", None, false),
];

const KILL: &[Flag] = &[flag("all", Some('a'), false)];
const DELETE: &[Flag] = &[flag("force", Some('f'), false)];

/// What a command line gave: per flag (by its index in the table), its value if it was given (`""`
/// for a flag without one), and the positionals in order.
struct Parsed<'a> {
    flags: Vec<Option<&'a str>>,
    positionals: Vec<&'a str>,
}

impl<'a> Parsed<'a> {
    fn value(&self, i: usize) -> Option<&'a str> {
        self.flags[i]
    }

    fn path(&self, i: usize) -> Option<PathBuf> {
        self.flags[i].map(PathBuf::from)
    }

    fn set(&self, i: usize) -> bool {
        self.flags[i].is_some()
    }
}

/// Parses `args` (without the program name) if it is a lifecycle command this parser understands.
pub fn parse(args: &[OsString]) -> Option<Invocation> {
    let args: Vec<&str> = args
        .iter()
        .map(|a| a.to_str().filter(|s| !s.is_empty()))
        .collect::<Option<_>>()?;
    let (g, used) = scan(&args, GLOBALS, 0, true)?;
    let globals = globals(&g)?;
    let (&name, rest) = args[used..].split_first()?;
    let command = match name {
        "create" => {
            let p = flags(rest, CREATE, 1)?;
            Lifecycle::Create(CreateArgs {
                bundle: p.path(0).unwrap_or_else(|| PathBuf::from(".")),
                launch: launch(&p)?,
                id: p.positionals[0].to_owned(),
            })
        }
        "run" => {
            let p = flags(rest, RUN, 1)?;
            Lifecycle::Run(BundleRun {
                bundle: p.path(0),
                launch: launch(&p)?,
                detach: p.set(6),
                keep: p.set(7),
                id: p.positionals[0].to_owned(),
            })
        }
        "start" => Lifecycle::Start(id(rest)?),
        "state" => Lifecycle::State(id(rest)?),
        "kill" => {
            let p = flags(rest, KILL, 2)
                .or_else(|| flags(rest, KILL, 1))
                .filter(|p| !p.positionals.is_empty())?;
            Lifecycle::Kill(KillArgs {
                all: p.set(0),
                id: p.positionals[0].to_owned(),
                signal: p.positionals.get(1).unwrap_or(&"TERM").to_string(),
            })
        }
        "delete" => {
            let p = flags(rest, DELETE, 1)?;
            Lifecycle::Delete(DeleteArgs {
                force: p.set(0),
                id: p.positionals[0].to_owned(),
            })
        }
        _ => return None,
    };
    Some(Invocation { globals, command })
}

fn globals(p: &Parsed) -> Option<Globals> {
    let log_format = match p.value(2) {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(_) => return None,
    };
    Some(Globals {
        root: p.path(0).unwrap_or_else(|| PathBuf::from("/run/skiff")),
        log: p.path(1),
        log_format,
        debug: p.set(3),
        systemd_cgroup: p.set(4),
        rootless: p.value(5).map(str::to_owned),
        criu: p.value(6).map(str::to_owned),
    })
}

/// The flags `create` and `run` share, at the same positions in [`CREATE`] and [`RUN`].
fn launch(p: &Parsed) -> Option<LaunchArgs> {
    let preserve_fds = match p.value(4) {
        None => 0,
        // clap parses an integer and checks its range: the same values pass.
        Some(v) => v.parse::<u32>().ok()?,
    };
    Some(LaunchArgs {
        pid_file: p.path(1),
        console_socket: p.path(2),
        no_new_keyring: p.set(3),
        preserve_fds,
        no_pivot: p.set(5),
    })
}

fn id(args: &[&str]) -> Option<IdArgs> {
    let p = flags(args, &[], 1)?;
    Some(IdArgs {
        id: p.positionals[0].to_owned(),
    })
}

/// Splits `args` into the flags of `table` and exactly `positionals` positionals; `None` for
/// anything outside that.
fn flags<'a>(args: &[&'a str], table: &[Flag], positionals: usize) -> Option<Parsed<'a>> {
    let (p, _) = scan(args, table, positionals, false)?;
    (p.positionals.len() == positionals).then_some(p)
}

/// Reads the flags of `table` and up to `positionals` positionals from the start of `args`; with
/// `stop`, only up to the first positional, which is left unread. Returns how many arguments it read.
fn scan<'a>(
    args: &[&'a str],
    table: &[Flag],
    positionals: usize,
    stop: bool,
) -> Option<(Parsed<'a>, usize)> {
    let mut p = Parsed {
        flags: table.iter().map(|_| None).collect(),
        positionals: Vec::with_capacity(positionals),
    };
    let mut it = args.iter().enumerate();
    while let Some((at, &arg)) = it.next() {
        let (i, inline) = if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            (table.iter().position(|f| f.long == name)?, inline)
        } else if let Some(short) = arg.strip_prefix('-') {
            let mut chars = short.chars();
            let (c, None) = (chars.next()?, chars.next()) else {
                return None;
            };
            (table.iter().position(|f| f.short == Some(c))?, None)
        } else if stop {
            return Some((p, at));
        } else {
            if p.positionals.len() == positionals {
                return None;
            }
            p.positionals.push(arg);
            continue;
        };
        if p.flags[i].is_some() {
            return None;
        }
        let value = match (table[i].value, inline) {
            (false, None) => "",
            (false, Some(_)) => return None,
            (true, Some(v)) => v,
            (true, None) => *it.next()?.1,
        };
        if table[i].value && (value.is_empty() || value.starts_with('-')) {
            return None;
        }
        p.flags[i] = Some(value);
    }
    Some((p, args.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    /// What clap makes of the same command line, in this parser's terms.
    fn clap(args: &[&str]) -> Option<Invocation> {
        let cli = Cli::try_parse_from(std::iter::once("skiff").chain(args.iter().copied())).ok()?;
        let command = match cli.command {
            Command::Create(a) => Lifecycle::Create(a),
            Command::Start(a) => Lifecycle::Start(a),
            Command::State(a) => Lifecycle::State(a),
            Command::Kill(a) => Lifecycle::Kill(a),
            Command::Delete(a) => Lifecycle::Delete(a),
            Command::Run(a) => Lifecycle::Run(BundleRun {
                bundle: a.bundle,
                launch: a.launch,
                detach: a.detach,
                keep: a.keep,
                id: a.id?,
            }),
            _ => return None,
        };
        Some(Invocation {
            globals: cli.globals,
            command,
        })
    }

    fn lean(args: &[&str]) -> Option<Invocation> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&args)
    }

    /// Whatever this parser accepts, clap accepts with the same meaning.
    fn agrees(line: &str) -> Option<Invocation> {
        let args: Vec<&str> = line.split(' ').collect();
        let ours = lean(&args);
        if let Some(ours) = &ours {
            assert_eq!(Some(ours), clap(&args).as_ref(), "{line:?}");
        }
        ours
    }

    #[test]
    fn accepts_what_engines_send() {
        for line in [
            "create --bundle /b c1",
            "create -b /b c1",
            "create --bundle=/b c1",
            "create c1 --bundle /b",
            "create c1",
            "--root /r --log /l --log-format json create --bundle /b --pid-file /p c1",
            "--root=/r --log=/l --log-format=text --debug --systemd-cgroup start c1",
            "--rootless false --criu x state c1",
            "create --console-socket /s --no-new-keyring --preserve-fds 2 --no-pivot -b . c1",
            "create --preserve-fds=+7 c1",
            "run --bundle /b c1",
            "run -d -b /b --keep c1",
            "run --detach=false c1",
            "run c1",
            "start c1",
            "state c1",
            "kill c1",
            "kill c1 KILL",
            "kill -a c1 9",
            "kill c1 --all SIGKILL",
            "delete c1",
            "delete -f c1",
            "delete --force c1",
            "--debug delete c1 --force",
        ] {
            let accepted = agrees(line).is_some();
            let must = !line.contains("--detach=");
            assert_eq!(accepted, must, "{line:?}");
        }
    }

    #[test]
    fn hands_everything_else_to_clap() {
        for line in [
            "",
            "--help",
            "create --help",
            "-h create c1",
            "--version",
            "-V",
            "create",
            "create c1 c2",
            "create --bundle c1",
            "create --bundle -x c1",
            "create --bundle= c1",
            "create -bfoo c1",
            "create -b=foo c1",
            "create --preserve-fds x c1",
            "create --preserve-fds -1 c1",
            "create --preserve-fds 4294967296 c1",
            "create -- c1",
            "create --bundle /a --bundle /b c1",
            "create --unknown c1",
            "create --no-new-keyring=true c1",
            "--root /a --root /b start c1",
            "--log-format yaml start c1",
            "--log-format JSON start c1",
            "--debug=1 start c1",
            "start --root /r c1",
            "start",
            "start c1 c2",
            "state -x c1",
            "kill",
            "kill c1 TERM extra",
            "kill -9 c1",
            "kill c1 -9",
            "kill -af c1",
            "delete -ff c1",
            "delete -f -f c1",
            "run --image busybox c1",
            "run -t c1",
            "run c1 -- sh",
            "run",
            "list",
            "ls",
            "exec c1 true",
            "pull busybox",
            "spec",
            "features",
            "-d start c1",
        ] {
            assert!(agrees(line).is_none(), "{line:?} should go to clap");
        }
    }

    #[test]
    fn empty_and_non_utf8_go_to_clap() {
        assert!(lean(&["start", ""]).is_none());
        assert!(lean(&["--root", "", "start", "c1"]).is_none());
        use std::os::unix::ffi::OsStringExt;
        let bad = vec![OsString::from("start"), OsString::from_vec(vec![0xff])];
        assert!(parse(&bad).is_none());
    }

    #[test]
    fn defaults_match_clap() {
        let inv = agrees("create c1").unwrap();
        assert_eq!(inv.globals.root, PathBuf::from("/run/skiff"));
        assert_eq!(inv.globals.log_format, LogFormat::Text);
        let Lifecycle::Create(c) = inv.command else {
            panic!("not create")
        };
        assert_eq!(c.bundle, PathBuf::from("."));
        assert_eq!(c.launch.preserve_fds, 0);
        let Lifecycle::Kill(k) = agrees("kill c1").unwrap().command else {
            panic!("not kill")
        };
        assert_eq!(k.signal, "TERM");
        assert!(!k.all);
    }
}
