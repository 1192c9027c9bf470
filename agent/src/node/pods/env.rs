//! A container's environment as kubelet builds it: the service variables (`KUBERNETES_SERVICE_HOST`
//! and, with `enableServiceLinks`, those of the namespace's services), then `envFrom`, then `env`
//! (plain values with `$(VAR)` expanded, `fieldRef`, `configMapKeyRef`, `secretKeyRef`); a later
//! entry replaces an earlier one of the same name.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, EnvVar, Service};
use kube::api::{Api, ListParams};

use super::target::Target;
use crate::node::volumes::downward::{self, bracketed};
use crate::node::volumes::objects;

type Env = Vec<(String, String)>;

fn set(out: &mut Env, k: String, v: String) {
    out.retain(|(n, _)| *n != k);
    out.push((k, v));
}

pub async fn resolve(t: &Target<'_>, c: &Container) -> Result<Env, String> {
    let mut out = match services(t).await {
        Ok(env) => env,
        // A static pod does not wait for the API server: it starts without service variables.
        Err(e) if super::static_pods::is_static(t.pod) => {
            tracing::warn!(pod = ?t.pod.metadata.name, error = %e, "static pod started without service variables");
            Env::default()
        }
        Err(e) => return Err(e),
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, optional, what) = if let Some(r) = &from.config_map_ref {
            let d = object(t, "configmap", &r.name).await?;
            (
                d,
                r.optional.unwrap_or(false),
                format!("configmap {:?}", r.name),
            )
        } else if let Some(r) = &from.secret_ref {
            let d = object(t, "secret", &r.name).await?;
            (
                d,
                r.optional.unwrap_or(false),
                format!("secret {:?}", r.name),
            )
        } else {
            continue;
        };
        match data {
            Some(d) => {
                for (k, v) in d {
                    set(
                        &mut out,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into(),
                    );
                }
            }
            None if optional => {}
            None => return Err(format!("envFrom: {what} not found")),
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(v) = value_of(t, c, e, &out).await? {
            set(&mut out, e.name.clone(), v);
        }
    }
    Ok(out)
}

async fn object(
    t: &Target<'_>,
    kind: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let r = match kind {
        "configmap" => objects::config_map_data(t.client, t.pod, "env", name).await,
        _ => objects::secret_data(t.client, t.pod, "env", name).await,
    };
    r.map_err(|e| format!("{kind} {name:?}: {e}"))
}

/// One `env` entry; `None` when an optional reference is missing (the variable is left out).
async fn value_of(
    t: &Target<'_>,
    c: &Container,
    e: &EnvVar,
    earlier: &Env,
) -> Result<Option<String>, String> {
    if let Some(v) = &e.value {
        let vars: HashMap<&str, &str> = earlier
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        return Ok(Some(expand(v, &vars)));
    }
    let Some(from) = &e.value_from else {
        return Ok(Some(String::new()));
    };
    let key_ref = match (&from.config_map_key_ref, &from.secret_key_ref) {
        (Some(r), _) => Some(("configmap", r.name.clone(), r.key.clone(), r.optional)),
        (_, Some(r)) => Some(("secret", r.name.clone(), r.key.clone(), r.optional)),
        _ => None,
    };
    if let Some((kind, name, key, optional)) = key_ref {
        let optional = optional.unwrap_or(false);
        let value = object(t, kind, &name)
            .await?
            .and_then(|d| d.get(&key).map(|v| String::from_utf8_lossy(v).into_owned()));
        return match value {
            Some(v) => Ok(Some(v)),
            None if optional => Ok(None),
            None => Err(format!(
                "env {:?}: key {key:?} of {kind} {name:?} not found",
                e.name
            )),
        };
    }
    if let Some(r) = &from.resource_field_ref {
        let name = r.container_name.as_deref().filter(|n| !n.is_empty());
        let spec = t.pod.spec.as_ref();
        let target = match name {
            None => Some(c),
            Some(n) => spec.and_then(|s| s.containers.iter().find(|x| x.name == n)),
        };
        let target = target
            .ok_or_else(|| format!("env {:?}: resourceFieldRef: no container {name:?}", e.name))?;
        return downward::resource(target, r, t.allocatable)
            .map(Some)
            .map_err(|m| format!("env {:?}: {m}", e.name));
    }
    let Some(f) = &from.field_ref else {
        return Err(format!("env {:?}: no value and no source", e.name));
    };
    let m = &t.pod.metadata;
    let label = |map: &Option<BTreeMap<String, String>>, k: &str| {
        map.as_ref()
            .and_then(|m| m.get(k))
            .cloned()
            .unwrap_or_default()
    };
    let path = f.field_path.as_str();
    Ok(Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => t.node_name.to_string(),
        "spec.serviceAccountName" => t
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => t.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => t.pod_ips.join(","),
        "status.hostIP" | "status.hostIPs" => t.host_ip.to_string(),
        _ => {
            if let Some(k) = bracketed(path, "metadata.labels") {
                label(&m.labels, k)
            } else if let Some(k) = bracketed(path, "metadata.annotations") {
                label(&m.annotations, k)
            } else {
                return Err(format!(
                    "env {:?}: fieldRef {path:?} is not supported",
                    e.name
                ));
            }
        }
    }))
}

/// The `kubernetes` service of the `default` namespace always; with `enableServiceLinks` (the
/// default) every service of the pod's namespace too.
async fn services(t: &Target<'_>) -> Result<Env, String> {
    let spec = t.pod.spec.clone().unwrap_or_default();
    let ns = t.pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut all: Vec<Service> = Vec::new();
    if spec.enable_service_links.unwrap_or(true) {
        all.extend(list_services(t.client, ns).await?);
    }
    if ns != "default" || !spec.enable_service_links.unwrap_or(true) {
        let master = list_services(t.client, "default").await?;
        all.extend(
            master
                .into_iter()
                .filter(|s| s.metadata.name.as_deref() == Some("kubernetes")),
        );
    }
    let mut out = Vec::new();
    for s in &all {
        for (k, v) in service_env(s) {
            set(&mut out, k, v);
        }
    }
    Ok(out)
}

async fn list_services(client: &kube::Client, ns: &str) -> Result<Vec<Service>, String> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| format!("list the services of {ns:?}: {e}"))
}

/// Docker-links style variables for one service with a cluster IP.
pub fn service_env(s: &Service) -> Env {
    let Some(spec) = &s.spec else {
        return Vec::new();
    };
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    if ip.is_empty() || ip == "None" {
        return Vec::new();
    }
    let name = s
        .metadata
        .name
        .clone()
        .unwrap_or_default()
        .to_uppercase()
        .replace('-', "_");
    let ports = spec.ports.clone().unwrap_or_default();
    let mut out = vec![(format!("{name}_SERVICE_HOST"), ip.clone())];
    let Some(first) = ports.first() else {
        return out;
    };
    out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
    for p in &ports {
        if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
            let pn = pn.to_uppercase().replace('-', "_");
            out.push((format!("{name}_SERVICE_PORT_{pn}"), p.port.to_string()));
        }
    }
    let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
        p.protocol.clone().unwrap_or_else(|| "TCP".into())
    };
    let host_port = |port: i32| match ip.contains(':') {
        true => format!("[{ip}]:{port}"),
        false => format!("{ip}:{port}"),
    };
    out.push((
        format!("{name}_PORT"),
        format!(
            "{}://{}",
            proto(first).to_lowercase(),
            host_port(first.port)
        ),
    ));
    for p in &ports {
        let pr = proto(p);
        let base = format!("{name}_PORT_{}_{}", p.port, pr.to_uppercase());
        out.push((
            base.clone(),
            format!("{}://{}", pr.to_lowercase(), host_port(p.port)),
        ));
        out.push((format!("{base}_PROTO"), pr.to_lowercase()));
        out.push((format!("{base}_PORT"), p.port.to_string()));
        out.push((format!("{base}_ADDR"), ip.clone()));
    }
    out
}

/// kubelet's `$(VAR)` expansion: known names are replaced, `$$` is a `$`, the rest stays.
pub fn expand(s: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) if vars.contains_key(&inner[..end]) => {
                    out.push_str(vars[&inner[..end]]);
                    rest = &inner[end + 1..];
                }
                Some(end) => {
                    out.push_str(&rest[i..i + 2 + end + 1]);
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubelet() {
        let vars: HashMap<&str, &str> = [("A", "x"), ("B", "y")].into();
        assert_eq!(expand("$(A)-$(B)", &vars), "x-y");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$(C) $(A", &vars), "$(C) $(A");
        assert_eq!(expand("a$b", &vars), "a$b");
    }

    #[test]
    fn services_become_variables_as_kubelet_writes_them() {
        let s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}
        }))
        .unwrap();
        let env: HashMap<String, String> = service_env(&s).into_iter().collect();
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(env["KUBERNETES_PORT"], "tcp://10.96.0.1:443");
        assert_eq!(env["KUBERNETES_PORT_443_TCP_ADDR"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_PORT_443_TCP_PROTO"], "tcp");
    }
}
