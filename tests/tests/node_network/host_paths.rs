//! hostPath volumes of every type on a skiff node.

use std::collections::HashMap;
use std::time::Duration;

use skiff_tests::cri::BUSYBOX;
use skiff_tests::k8s::skiff_node::{get_json, wait_for};

use super::{apply, Cluster, NS};

/// hostPath volumes of every type: what is there is checked against the type, the …OrCreate types
/// create what is missing with kubelet's modes, a mismatch keeps the pod from starting with the
/// reason in skiffd's log.
pub fn host_paths(c: &Cluster) {
    let a = &c.a;
    let node = a.joined.name.as_str();
    let base = a.joined.node.dir.join("host-paths");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("dir")).unwrap();
    std::fs::write(base.join("file"), "host file\n").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(base.join("sock")).unwrap();
    let block = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            use std::os::unix::fs::FileTypeExt;
            std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
        })
        .expect("a block device in /dev");
    let b = base.display();
    let vols: Vec<(&str, String, &str)> = vec![
        ("none", format!("{b}/untyped"), ""),
        ("dir", format!("{b}/dir"), "Directory"),
        ("mkdir", format!("{b}/made/dir"), "DirectoryOrCreate"),
        ("file", format!("{b}/file"), "File"),
        ("mkfile", format!("{b}/dir/made"), "FileOrCreate"),
        ("sock", format!("{b}/sock"), "Socket"),
        ("chr", "/dev/null".into(), "CharDevice"),
        ("blk", block.display().to_string(), "BlockDevice"),
    ];
    let mounts: String = vols
        .iter()
        .map(|(n, _, _)| {
            format!(
                "    - {{name: {n}, mountPath: /m/{n}, readOnly: {}}}\n",
                *n == "blk"
            )
        })
        .collect();
    let volumes: String = vols
        .iter()
        .map(|(n, p, t)| format!("  - {{name: {n}, hostPath: {{path: \"{p}\", type: \"{t}\"}}}}\n"))
        .collect();
    apply(
        &c.cp,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: hostpaths, namespace: {NS}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sleep, "3600"]
    volumeMounts:
{mounts}  volumes:
{volumes}"#
        ),
    );
    wait_for("pod hostpaths running", Duration::from_secs(120), || {
        (pod_json(c, "hostpaths")?["status"]["phase"] == "Running").then_some(())
    });
    let out = a.exec(
        "hostpaths",
        &[
            "sh",
            "-c",
            "test -d /m/none && test -d /m/dir && test -d /m/mkdir && test -f /m/file && \
             test -f /m/mkfile && test -S /m/sock && test -c /m/chr && test -b /m/blk && \
             cat /m/file && echo from-pod > /m/mkdir/x && echo from-pod > /m/mkfile",
        ],
    );
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, "host file\n");
    // The pod wrote into the node's paths.
    assert_eq!(
        std::fs::read_to_string(base.join("made/dir/x")).unwrap(),
        "from-pod\n"
    );
    assert_eq!(
        std::fs::read_to_string(base.join("dir/made")).unwrap(),
        "from-pod\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(base.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("made/dir") & !0o755, 0);
    assert_eq!(mode("dir/made") & !0o644, 0);
    assert!(base.join("untyped").is_dir());

    // A type that does not match: the pod does not start, and skiffd says why.
    let cases: HashMap<&str, (String, &str, &str)> = [
        (
            "not-dir",
            (format!("{b}/file"), "Directory", "is not a directory"),
        ),
        ("not-file", (format!("{b}/dir"), "File", "is not a file")),
        (
            "not-sock",
            (format!("{b}/file"), "Socket", "is not a socket file"),
        ),
        (
            "not-chr",
            (
                format!("{b}/file"),
                "CharDevice",
                "is not a character device",
            ),
        ),
        (
            "not-blk",
            ("/dev/null".into(), "BlockDevice", "is not a block device"),
        ),
        (
            "missing",
            (format!("{b}/nothing"), "Directory", "does not exist"),
        ),
    ]
    .into_iter()
    .collect();
    for (name, (path, t, _)) in &cases {
        apply(
            &c.cp,
            &format!(
                r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {NS}}}
spec:
  nodeName: {node}
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sleep, "3600"]
    volumeMounts: [{{name: v, mountPath: /v}}]
  volumes: [{{name: v, hostPath: {{path: "{path}", type: {t}}}}}]
"#
            ),
        );
    }
    for (name, (_, _, why)) in &cases {
        wait_for(
            &format!("{name}: {why} in skiffd's log"),
            Duration::from_secs(60),
            || {
                let log = a.joined.node.log();
                log.lines()
                    .any(|l| {
                        l.contains(name)
                            && l.contains("hostPath type check failed")
                            && l.contains(why)
                    })
                    .then_some(())
            },
        );
        let p = pod_json(c, name).unwrap();
        assert!(!ready(&p), "{name} started: {p}");
        assert!(
            p["status"]["containerStatuses"][0]["state"]["running"].is_null(),
            "{p}"
        );
    }
    assert!(!base.join("nothing").exists());
    // Checked once, when first mounted: the running pod keeps its volumes when a path goes away.
    std::fs::remove_file(base.join("file")).unwrap();
    std::thread::sleep(Duration::from_secs(12));
    let p = pod_json(c, "hostpaths").unwrap();
    assert!(ready(&p), "{p}");
    for name in cases.keys().copied().chain(["hostpaths"]) {
        c.cp.kubectl_ok(&["-n", NS, "delete", "pod", name, "--wait=false"]);
    }
}

fn pod_json(c: &Cluster, name: &str) -> Option<serde_json::Value> {
    get_json(&c.cp, &["-n", NS, "pod", name])
}

fn ready(p: &serde_json::Value) -> bool {
    skiff_tests::k8s::pod_json::condition(p, "Ready") == "True"
}
