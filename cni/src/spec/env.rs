//! The CNI_* environment a runtime passes to a plugin.

use super::error::{CniError, ErrorCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// Plugin environment, validated per command as the spec requires.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    pub path: Vec<String>,
}

impl Env {
    /// Reads the CNI_* variables through `get` (the process environment in
    /// the plugin, a map in tests).
    pub fn from_lookup(
        cmd: Command,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Env, CniError> {
        let need = |name: &str| -> Result<String, CniError> {
            match get(name) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(CniError::new(
                    ErrorCode::InvalidEnv,
                    format!("required environment variable {name} is missing"),
                )),
            }
        };
        let opt = |name: &str| get(name).unwrap_or_default();
        let env = match cmd {
            Command::Add | Command::Check => Env {
                container_id: need("CNI_CONTAINERID")?,
                netns: need("CNI_NETNS")?,
                ifname: need("CNI_IFNAME")?,
                ..Env::default()
            },
            // DEL must succeed even when the runtime no longer has a netns.
            Command::Del => Env {
                container_id: need("CNI_CONTAINERID")?,
                netns: opt("CNI_NETNS"),
                ifname: need("CNI_IFNAME")?,
                ..Env::default()
            },
            Command::Version | Command::Status | Command::Gc => Env::default(),
        };
        validate_ifname(cmd, &env.ifname)?;
        Ok(Env {
            args: parse_args(&opt("CNI_ARGS"))?,
            path: split_path(&opt("CNI_PATH")),
            ..env
        })
    }

    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn validate_ifname(cmd: Command, name: &str) -> Result<(), CniError> {
    if !matches!(cmd, Command::Add | Command::Check | Command::Del) {
        return Ok(());
    }
    let bad = name.len() > 15 || name == "." || name == ".." || name.contains(['/', ':']);
    if bad || name.chars().any(char::is_whitespace) {
        return Err(CniError::new(
            ErrorCode::InvalidEnv,
            format!("CNI_IFNAME {name:?} is not a valid interface name"),
        ));
    }
    Ok(())
}

/// CNI_ARGS is "K1=V1;K2=V2".
pub fn parse_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    s.split(';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CniError::new(
                ErrorCode::InvalidEnv,
                format!("CNI_ARGS entry {kv:?} is not KEY=VALUE"),
            )),
        })
        .collect()
}

pub fn format_args(args: &[(String, String)]) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

pub fn split_path(s: &str) -> Vec<String> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}
