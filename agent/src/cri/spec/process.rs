//! `process`: what runs (Kubernetes' command/args rules over the image's Entrypoint/Cmd), its
//! environment, working directory, user and limits.

use cri_api::v1 as cri;
use skiff_runtime::spec::{Process, Rlimit, User};
use tonic::Status;

use super::user::Accounts;
use super::{bad, SpecInput};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The open-files limit containers get, as with containerd.
pub const NOFILE: u64 = 1048576;

pub fn build(input: &SpecInput) -> Result<Process, Status> {
    let sc = input.security();
    Ok(Process {
        terminal: input.config.tty,
        user: user(input)?,
        args: args(input.config, input.image)?,
        env: env(input)?,
        cwd: cwd(input.config, input.image)?,
        rlimits: vec![nofile()],
        no_new_privileges: sc.is_some_and(|s| s.no_new_privs),
        oom_score_adj: input
            .resources()
            .map(|r| r.oom_score_adj)
            .filter(|v| *v != 0)
            .map(|v| v.clamp(-1000, 1000) as i32),
        apparmor_profile: apparmor(sc),
        ..Default::default()
    })
}

/// RLIMIT_NOFILE at [`NOFILE`], or at the daemon's own hard limit when that is lower: raising a
/// hard limit takes CAP_SYS_RESOURCE, which a node's root may not have.
fn nofile() -> Rlimit {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we own.
    let hard = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) } == 0 {
        cur.rlim_max
    } else {
        NOFILE
    };
    let n = NOFILE.min(hard);
    Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: n,
        hard: n,
    }
}

/// Kubernetes' rules: `command` replaces the Entrypoint and drops the Cmd; `args` replace the Cmd.
pub fn args(
    config: &cri::ContainerConfig,
    image: &skiff_runtime::image::rootfs::RunConfig,
) -> Result<Vec<String>, Status> {
    let mut out = if config.command.is_empty() {
        image.entrypoint.clone()
    } else {
        config.command.clone()
    };
    if !config.args.is_empty() {
        out.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        out.extend(image.cmd.iter().cloned());
    }
    if out.is_empty() || out[0].is_empty() {
        return Err(super::invalid(
            "command: neither the config nor the image gives a command to run",
        ));
    }
    Ok(out)
}

/// The image's environment, the config's on top (same key: the config wins), PATH when neither has
/// one, and HOSTNAME as the pod sees it. A key with `=` or NUL could not round-trip through
/// `KEY=VALUE` and is refused.
pub fn env(input: &SpecInput) -> Result<Vec<String>, Status> {
    let mut out: Vec<String> = Vec::new();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        if let Some(slot) = out
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            *slot = kv;
        } else {
            out.push(kv);
        }
    };
    if !input.image.env.iter().any(|e| e.starts_with("PATH=")) {
        set(DEFAULT_PATH.to_string());
    }
    let hostname = input.sandbox.config.hostname.clone();
    if !hostname.is_empty() {
        set(format!("HOSTNAME={hostname}"));
    }
    for e in &input.image.env {
        set(e.clone());
    }
    for kv in &input.config.envs {
        if kv.key.contains(['=', '\0']) {
            return Err(bad("envs key", &kv.key, "must not contain '=' or NUL"));
        }
        let value = String::from_utf8_lossy(&kv.value);
        if value.contains('\0') {
            return Err(bad("envs value", &kv.key, "must not contain NUL"));
        }
        if !kv.key.is_empty() {
            set(format!("{}={value}", kv.key));
        }
    }
    Ok(out)
}

pub fn cwd(
    config: &cri::ContainerConfig,
    image: &skiff_runtime::image::rootfs::RunConfig,
) -> Result<String, Status> {
    let (field, dir) = if !config.working_dir.is_empty() {
        ("working_dir", config.working_dir.clone())
    } else {
        match image.working_dir.as_deref().filter(|d| !d.is_empty()) {
            Some(d) => ("image WorkingDir", d.to_string()),
            None => return Ok("/".into()),
        }
    };
    if !dir.starts_with('/') {
        return Err(bad(field, &dir, "must be an absolute path"));
    }
    Ok(dir)
}

fn apparmor(sc: Option<&cri::LinuxContainerSecurityContext>) -> Option<String> {
    // Without AppArmor on the host there is nothing to confine with; profiles are ignored.
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y");
    if !enabled {
        return None;
    }
    let p = sc?.apparmor.as_ref()?;
    (p.profile_type == cri::security_profile::ProfileType::Localhost as i32
        && !p.localhost_ref.is_empty())
    .then(|| p.localhost_ref.clone())
}

/// The process user: runAsUser/runAsGroup/runAsUserName, else the image's `User`, resolved in the
/// container's own account files; supplementary groups by the SupplementalGroupsPolicy.
pub fn user(input: &SpecInput) -> Result<User, Status> {
    let accounts = Accounts::load(&input.rootfs);
    let sc = input.security().cloned().unwrap_or_default();
    let (uid, mut gid, name) = if let Some(u) = sc.run_as_user {
        let uid = id_from("run_as_user", u.value)?;
        let entry = accounts.user_by_uid(uid);
        (
            uid,
            entry.map_or(0, |e| e.gid),
            entry.map(|e| e.name.clone()),
        )
    } else if !sc.run_as_username.is_empty() {
        let e = accounts.user_by_name(&sc.run_as_username).ok_or_else(|| {
            bad(
                "run_as_username",
                &sc.run_as_username,
                "no such user in the container's /etc/passwd",
            )
        })?;
        (e.uid, e.gid, Some(e.name.clone()))
    } else {
        image_user(&accounts, input.image.user.as_deref().unwrap_or(""))?
    };
    if let Some(g) = sc.run_as_group {
        // A group alone would pair with whatever user the image names; CRI runtimes refuse it.
        if sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
            return Err(bad(
                "run_as_group",
                &g.value.to_string(),
                "set without run_as_user or run_as_username",
            ));
        }
        gid = id_from("run_as_group", g.value)?;
    }
    let strict = sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32;
    let mut gids = vec![gid];
    if !strict {
        if let Some(n) = &name {
            gids.extend(accounts.memberships(n));
        }
    }
    for g in &sc.supplemental_groups {
        gids.push(id_from("supplemental_groups", *g)?);
    }
    let mut additional = Vec::new();
    for g in gids {
        if !additional.contains(&g) {
            additional.push(g);
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids: additional,
        ..Default::default()
    })
}

fn id_from(field: &str, v: i64) -> Result<u32, Status> {
    u32::try_from(v)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or_else(|| bad(field, &v.to_string(), "not a valid id"))
}

/// The image's `User`: `name`, `uid`, `uid:gid`, `name:group` (either side by name or number).
pub fn image_user(accounts: &Accounts, spec: &str) -> Result<(u32, u32, Option<String>), Status> {
    if spec.is_empty() {
        return Ok((0, 0, accounts.user_by_uid(0).map(|e| e.name.clone())));
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let not_found = |what: &str| bad("image User", spec, what);
    let (uid, mut gid, name) = match u.parse::<u32>() {
        Ok(uid) => {
            let e = accounts.user_by_uid(uid);
            (uid, e.map_or(0, |e| e.gid), e.map(|e| e.name.clone()))
        }
        Err(_) => {
            let e = accounts
                .user_by_name(u)
                .ok_or_else(|| not_found("no such user in the container's /etc/passwd"))?;
            (e.uid, e.gid, Some(e.name.clone()))
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                accounts
                    .group_by_name(g)
                    .ok_or_else(|| not_found("no such group in the container's /etc/group"))?
                    .gid
            }
        };
    }
    Ok((uid, gid, name))
}
