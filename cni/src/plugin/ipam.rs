//! Routes IPAM calls to the built-in host-local allocator or to the external
//! plugin named in `ipam.type`.

use super::config::BridgeConf;
use super::Request;
use crate::ipam::{delegate, hostlocal, IpamConfig};
use crate::spec::{CniError, CniResult, Command};
use serde_json::Value;

pub const BUILTIN: &str = "host-local";

pub fn ipam_type(req: &Request) -> Result<String, CniError> {
    let ty = req
        .conf
        .ipam
        .as_ref()
        .and_then(|v| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if ty.is_empty() {
        return Err(CniError::config("ipam.type is missing"));
    }
    Ok(ty.to_string())
}

fn builtin(req: &Request) -> Result<Option<IpamConfig>, CniError> {
    if ipam_type(req)? != BUILTIN {
        return Ok(None);
    }
    let v = req
        .conf
        .ipam
        .as_ref()
        .ok_or_else(|| CniError::config("ipam section is missing"))?;
    IpamConfig::parse(v).map(Some)
}

pub fn validate(req: &Request) -> Result<(), CniError> {
    builtin(req).map(|_| ())
}

pub fn add(req: &Request, conf: &BridgeConf) -> Result<CniResult, CniError> {
    match builtin(req)? {
        Some(ipam) => {
            let requested: Vec<_> = conf.runtime_config.ips.iter().map(|i| i.addr()).collect();
            hostlocal::allocate(
                &ipam,
                &req.conf.name,
                &req.env.container_id,
                &req.env.ifname,
                &requested,
            )
        }
        None => delegate::run(&ipam_type(req)?, Command::Add, &req.env, &req.stdin)?
            .ok_or_else(|| CniError::config("IPAM plugin returned no result")),
    }
}

pub fn del(req: &Request) -> Result<(), CniError> {
    match builtin(req)? {
        Some(ipam) => hostlocal::release(
            &ipam,
            &req.conf.name,
            &req.env.container_id,
            &req.env.ifname,
        ),
        None => delegate::run(&ipam_type(req)?, Command::Del, &req.env, &req.stdin).map(|_| ()),
    }
}

pub fn check(req: &Request) -> Result<(), CniError> {
    match builtin(req)? {
        Some(ipam) => hostlocal::check(
            &ipam,
            &req.conf.name,
            &req.env.container_id,
            &req.env.ifname,
        )
        .map(|_| ()),
        None => delegate::run(&ipam_type(req)?, Command::Check, &req.env, &req.stdin).map(|_| ()),
    }
}

pub fn status(req: &Request) -> Result<(), CniError> {
    match builtin(req)? {
        Some(ipam) => hostlocal::status(&ipam, &req.conf.name),
        None => delegate::run(&ipam_type(req)?, Command::Status, &req.env, &req.stdin).map(|_| ()),
    }
}

pub fn gc(req: &Request) -> Result<(), CniError> {
    let valid = req.conf.valid_attachments.clone().unwrap_or_default();
    match builtin(req)? {
        Some(ipam) => hostlocal::gc(&ipam, &req.conf.name, &valid).map(|_| ()),
        None => delegate::run(&ipam_type(req)?, Command::Gc, &req.env, &req.stdin).map(|_| ()),
    }
}
