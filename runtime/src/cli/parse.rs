//! Argument parsing that builds only the command being run.
//!
//! Building clap's whole command tree, with every subcommand and flag, is most of the memory a
//! `skiff create` touches. The lifecycle commands that callers run on every container get a tree with
//! just their own flags, from the same derive definitions; everything else, help included, takes the
//! full tree.

use std::ffi::OsString;

use clap::{Args, FromArgMatches, Parser};

use super::exec::ExecArgs;
use super::run::RunArgs;
use super::{Cli, Command, CreateArgs, DeleteArgs, Globals, IdArgs, KillArgs};

/// Global flags that take a value, as given before the command.
const VALUED: [&str; 5] = ["--root", "--log", "--log-format", "--rootless", "--criu"];

pub fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    subcommand(&args)
        .and_then(|name| parse_one(name, &args))
        .unwrap_or_else(Cli::parse)
}

/// The command name, if the arguments before it are only global flags.
fn subcommand(args: &[OsString]) -> Option<&str> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_str()?;
        if VALUED.contains(&a) {
            it.next()?;
        } else if a.starts_with("--") {
            let name = a.split('=').next()?;
            if !VALUED.contains(&name) && name != "--debug" && name != "--systemd-cgroup" {
                return None;
            }
        } else if a.starts_with('-') {
            return None;
        } else {
            return Some(a);
        }
    }
    None
}

fn parse_one(name: &str, args: &[OsString]) -> Option<Cli> {
    if args
        .iter()
        .any(|a| a == "--help" || a == "-h" || a == "--version" || a == "-V")
    {
        return None;
    }
    const HOT: [&str; 7] = ["create", "run", "start", "state", "kill", "delete", "exec"];
    let name: &'static str = HOT.iter().find(|h| **h == name)?;
    let sub = clap::Command::new(name);
    let sub = match name {
        "create" => CreateArgs::augment_args(sub),
        "run" => RunArgs::augment_args(sub),
        "start" | "state" => IdArgs::augment_args(sub),
        "kill" => KillArgs::augment_args(sub),
        "delete" => DeleteArgs::augment_args(sub),
        "exec" => ExecArgs::augment_args(sub),
        _ => return None,
    };
    let cmd = Globals::augment_args(clap::Command::new("skiff")).subcommand(sub);
    // Any mistake is reported by the full parser, with the usual help and suggestions.
    let matches = cmd.try_get_matches_from(args).ok()?;
    let globals = Globals::from_arg_matches(&matches).ok()?;
    let (_, m) = matches.subcommand()?;
    let command = match name {
        "create" => Command::Create(CreateArgs::from_arg_matches(m).ok()?),
        "run" => Command::Run(RunArgs::from_arg_matches(m).ok()?),
        "start" => Command::Start(IdArgs::from_arg_matches(m).ok()?),
        "state" => Command::State(IdArgs::from_arg_matches(m).ok()?),
        "kill" => Command::Kill(KillArgs::from_arg_matches(m).ok()?),
        "delete" => Command::Delete(DeleteArgs::from_arg_matches(m).ok()?),
        "exec" => Command::Exec(ExecArgs::from_arg_matches(m).ok()?),
        _ => return None,
    };
    Some(Cli { globals, command })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn finds_the_command_after_globals() {
        let a = os(&[
            "skiff",
            "--root",
            "/r",
            "--debug",
            "--log-format=json",
            "create",
            "x",
        ]);
        assert_eq!(subcommand(&a), Some("create"));
        assert_eq!(subcommand(&os(&["skiff", "--weird", "create"])), None);
        assert_eq!(subcommand(&os(&["skiff", "--root"])), None);
    }

    #[test]
    fn same_result_as_the_full_parser() {
        let cases: &[&[&str]] = &[
            &[
                "skiff",
                "--root",
                "/r",
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "p",
                "c1",
            ],
            &[
                "skiff", "run", "-d", "--image", "busybox", "x", "--", "echo", "hi",
            ],
            &["skiff", "kill", "--all", "c1", "KILL"],
            &["skiff", "delete", "-f", "c1"],
            &["skiff", "--log", "/l", "state", "c1"],
            &["skiff", "exec", "-e", "A=1", "-t", "c1", "sh", "-c", "x"],
        ];
        for c in cases {
            let args = os(c);
            let name = subcommand(&args).unwrap();
            let fast = parse_one(name, &args).unwrap();
            let full = Cli::try_parse_from(&args).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{full:?}"), "{c:?}");
        }
        assert!(parse_one("kill", &os(&["skiff", "kill"])).is_none());
        assert!(parse_one("create", &os(&["skiff", "create", "--help"])).is_none());
    }
}
