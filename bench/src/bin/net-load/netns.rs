//! Network namespaces made by hand for the reference paths, and the `ip` calls that build them.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Runs `ip ARGS`, failing with what it printed.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Namespaces named `NAME`, each with its loopback up; deleted (and their links with them) when
/// dropped.
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    pub fn create(names: &[String]) -> Result<Namespaces> {
        let mut made = Namespaces { names: Vec::new() };
        for n in names {
            ip(&["netns", "add", n])?;
            made.names.push(n.clone());
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(made)
    }

    pub fn path(&self, i: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.names[i])
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}
