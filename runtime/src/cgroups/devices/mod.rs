//! The device cgroup: which device nodes a container may create, read and write.
//!
//! Rules are OCI's `linux.resources.devices` list, where a later rule overrides an earlier one. cgroup
//! v1 takes them as `devices.allow`/`devices.deny` lines ([`v1`]); cgroup v2 has no interface file
//! and needs an eBPF program attached to the cgroup ([`ebpf`]).

pub mod ebpf;
pub mod v1;

use crate::spec::{DeviceRule, Spec};

use super::CgroupError;

/// One rule, checked: `kind` is `a`, `b` or `c`; `access` is a non-empty subset of `rwm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub kind: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: String,
}

impl Rule {
    pub fn parse(r: &DeviceRule) -> Result<Rule, CgroupError> {
        let bad = |reason: String| CgroupError::BadValue {
            field: "linux.resources.devices".into(),
            reason,
        };
        let kind = match r.kind.as_deref().unwrap_or("a") {
            "a" => 'a',
            "b" => 'b',
            "c" | "u" => 'c',
            k => return Err(bad(format!("type {k:?} is not a, b, c or u"))),
        };
        let num = |v: Option<i64>, what: &str| -> Result<Option<u32>, CgroupError> {
            match v {
                None => Ok(None),
                Some(n) if n < 0 => Ok(None),
                Some(n) if n <= i64::from(i32::MAX) => Ok(Some(n as u32)),
                Some(n) => Err(bad(format!("{what} {n} is out of range"))),
            }
        };
        let access = r.access.clone().unwrap_or_else(|| "rwm".into());
        if access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(bad(format!("access {access:?} is not made of r, w, m")));
        }
        Ok(Rule {
            allow: r.allow,
            kind,
            major: num(r.major, "major")?,
            minor: num(r.minor, "minor")?,
            access,
        })
    }

    fn new(kind: char, major: Option<u32>, minor: Option<u32>, access: &str) -> Rule {
        Rule {
            allow: true,
            kind,
            major,
            minor,
            access: access.into(),
        }
    }

    /// `c 1:3 rwm`, `a *:* rwm`: the v1 interface syntax.
    pub fn v1_line(&self) -> String {
        let n = |v: Option<u32>| v.map_or_else(|| "*".to_string(), |v| v.to_string());
        format!(
            "{} {}:{} {}",
            self.kind,
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

/// Devices every container may use, appended after the configured rules as runc does.
fn defaults() -> Vec<Rule> {
    let c = |maj, min: Option<u32>| Rule::new('c', Some(maj), min, "rwm");
    vec![
        Rule::new('c', None, None, "m"),
        Rule::new('b', None, None, "m"),
        c(1, Some(3)),
        c(1, Some(5)),
        c(1, Some(7)),
        c(1, Some(8)),
        c(1, Some(9)),
        c(5, Some(0)),
        c(5, Some(1)),
        c(5, Some(2)),
        c(136, None),
        c(10, Some(200)),
    ]
}

/// The full rule list for a container: `linux.resources.devices`, then the default devices, then
/// each device in `linux.devices`.
pub fn rules_for(spec: &Spec, configured: &[DeviceRule]) -> Result<Vec<Rule>, CgroupError> {
    if configured.is_empty() {
        return Ok(Vec::new());
    }
    let mut rules = configured
        .iter()
        .map(Rule::parse)
        .collect::<Result<Vec<_>, _>>()?;
    rules.extend(defaults());
    for d in spec
        .linux()
        .map(|l| l.devices.as_slice())
        .unwrap_or_default()
    {
        let kind = if d.kind == "b" { 'b' } else { 'c' };
        let n = |v: i64| u32::try_from(v).ok();
        rules.push(Rule::new(kind, n(d.major), n(d.minor), "rwm"));
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        let r = Rule::parse(&DeviceRule {
            allow: false,
            access: Some("rwm".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.v1_line(), "a *:* rwm");
        let bad = DeviceRule {
            allow: true,
            kind: Some("x".into()),
            ..Default::default()
        };
        assert!(Rule::parse(&bad).is_err());
        let bad = DeviceRule {
            allow: true,
            access: Some("rx".into()),
            ..Default::default()
        };
        assert!(Rule::parse(&bad).is_err());
    }
}
