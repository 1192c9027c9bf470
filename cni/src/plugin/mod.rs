//! skiff-bridge: the plugin side. `run` takes the command, environment and
//! stdin and returns what goes to stdout (or the spec error object).

pub mod add;
pub mod check;
pub mod config;
pub mod del;
pub mod ipam;
pub mod links;
pub mod routed;

use crate::spec::version::{at_least, check_supported};
use crate::spec::{CniError, Command, Env, ErrorCode, NetConf};
use serde_json::{Map, Value};

/// Largest stdin accepted; real configs are a few KiB.
pub const MAX_STDIN: usize = 1 << 20;

/// Everything parsed from one invocation.
pub struct Request {
    pub cmd: Command,
    pub env: Env,
    pub conf: NetConf,
    pub raw: Map<String, Value>,
    pub stdin: Vec<u8>,
}

pub fn run(cmd: Command, env: Env, stdin: Vec<u8>) -> Result<Option<Value>, CniError> {
    if cmd == Command::Version {
        return serde_json::to_value(crate::spec::version::info())
            .map(Some)
            .map_err(|e| CniError::internal("encode version", e));
    }
    if stdin.len() > MAX_STDIN {
        return Err(CniError::new(
            ErrorCode::Decode,
            format!(
                "network configuration is {} bytes, limit is {MAX_STDIN}",
                stdin.len()
            ),
        ));
    }
    let (conf, raw) = NetConf::parse(&stdin)?;
    check_supported(&conf.cni_version)?;
    if matches!(cmd, Command::Status | Command::Gc) && !at_least(&conf.cni_version, (1, 1, 0)) {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "{} requires cniVersion 1.1.0 or later, config is {}",
                cmd.as_str(),
                conf.cni_version
            ),
        ));
    }
    if conf.name.is_empty() {
        return Err(CniError::config("network configuration lacks name"));
    }
    let req = Request {
        cmd,
        env,
        conf,
        raw,
        stdin,
    };
    match cmd {
        Command::Add => add::add(&req).map(Some),
        Command::Del => del::del(&req).map(|()| None),
        Command::Check => check::check(&req).map(|()| None),
        Command::Status => ipam::status(&req).map(|()| None),
        Command::Gc => del::gc(&req).map(|()| None),
        Command::Version => Ok(None),
    }
}
