//! skiffd's runtime information over the real socket: Version, Status, RuntimeConfig,
//! UpdateRuntimeConfig, and the socket itself.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use skiff_tests::cri::{v1 as cri, Options, Skiffd};

#[tokio::test]
async fn version_names_skiff_and_the_v1_api() {
    let mut d = Skiffd::start().await;
    let v =
        d.rt.version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "skiff");
    assert_eq!(v.runtime_api_version, "v1");
    assert!(!v.runtime_version.is_empty());
}

#[tokio::test]
async fn socket_is_a_0660_unix_socket() {
    let d = Skiffd::start().await;
    let m = std::fs::metadata(&d.socket).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
}

#[tokio::test]
async fn network_is_not_ready_until_a_cni_config_appears() {
    let mut d = Skiffd::start().await;
    let conds = |s: cri::StatusResponse| s.status.unwrap().conditions;
    let c = conds(
        d.rt.status(cri::StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner(),
    );
    let runtime = c.iter().find(|c| c.r#type == "RuntimeReady").unwrap();
    let network = c.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    assert!(runtime.status);
    assert!(!network.status);
    assert_eq!(network.reason, "NetworkPluginNotReady");
    std::fs::write(
        d.dir.join("net.d/10-pods.conflist"),
        r#"{"cniVersion":"1.1.0","name":"pods","plugins":[{"type":"skiff-bridge","bridge":"skt0","ipam":{"type":"host-local","subnet":"10.99.0.0/24"}}]}"#,
    )
    .unwrap();
    let c = conds(
        d.rt.status(cri::StatusRequest::default())
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(
        c.iter().any(|c| c.r#type == "NetworkReady" && c.status),
        "{c:?}"
    );
}

#[tokio::test]
async fn runtime_config_reports_the_cgroup_driver_in_use() {
    let mut d = Skiffd::start_with(Options {
        extra_config: "cgroup_driver = \"cgroupfs\"".into(),
        ..Default::default()
    })
    .await;
    let r =
        d.rt.runtime_config(cri::RuntimeConfigRequest {})
            .await
            .unwrap()
            .into_inner();
    assert_eq!(
        r.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
}

#[tokio::test]
async fn update_runtime_config_takes_a_cidr_and_refuses_junk() {
    let mut d = Skiffd::start().await;
    let req = |cidr: &str| cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig {
                pod_cidr: cidr.into(),
            }),
        }),
    };
    d.rt.update_runtime_config(req("10.244.1.0/24"))
        .await
        .unwrap();
    let e =
        d.rt.update_runtime_config(req("not-a-cidr"))
            .await
            .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("not-a-cidr"), "{e}");
    let s =
        d.rt.status(cri::StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
    assert!(s.info["config"].contains("10.244.1.0/24"));
}

#[tokio::test]
async fn sigterm_stops_gracefully_and_removes_the_socket() {
    let mut d = Skiffd::start().await;
    let st = d.terminate().await;
    assert!(st.success(), "{st:?}\n{}", d.daemon_log());
    assert!(!d.socket.exists());
}
