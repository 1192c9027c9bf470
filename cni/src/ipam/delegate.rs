//! Delegation to an external IPAM plugin named in `ipam.type`: the plugin is
//! executed with the same stdin and CNI_* environment, as the spec requires.

use crate::libcni::exec::{find_plugin, run_plugin, Invocation};
use crate::spec::{CniError, CniResult, Command, Env};

pub fn run(
    ipam_type: &str,
    cmd: Command,
    env: &Env,
    stdin: &[u8],
) -> Result<Option<CniResult>, CniError> {
    let path = find_plugin(ipam_type, &env.path)?;
    let inv = Invocation {
        command: Some(cmd),
        container_id: env.container_id.clone(),
        netns: env.netns.clone(),
        ifname: env.ifname.clone(),
        args: env.args.clone(),
        path: env.path.clone(),
    };
    let out = run_plugin(&path, &inv, stdin)?;
    if cmd != Command::Add {
        return Ok(None);
    }
    let v = serde_json::from_slice(&out).map_err(|e| {
        CniError::new(
            crate::spec::ErrorCode::Decode,
            format!("IPAM plugin {ipam_type} returned invalid JSON"),
        )
        .with_details(e.to_string())
    })?;
    CniResult::from_value(v).map(Some)
}
