//! The image probe and hook tests run in pods: `probe-server` (this crate's binary, stripped,
//! with the shared libraries it links) at `/probe-server`, and busybox with the applets the tests
//! use (`sh`, `touch`, `rm`, `sleep`, `cat`, `wget`).

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::registry::build::{Compression, Image, Layer, LayerBuilder};
use crate::registry::Registry;

/// Where tests name it: pushed as `library/probe-server:latest` on the test registry.
pub const PROBE_SERVER: &str = "registry.skiff.test/library/probe-server:latest";

/// The absolute paths of the shared libraries `bin` loads, the dynamic loader included.
fn shared_libraries(bin: &Path) -> Vec<String> {
    let out = crate::registry::run(Command::new("ldd").arg(bin)).expect("ldd probe-server");
    out.lines()
        .filter_map(|l| {
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

fn with_parents(l: &mut LayerBuilder, path: &str, seen: &mut Vec<String>) {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for i in 1..parts.len() {
        let dir = parts[..i].join("/");
        if !seen.contains(&dir) {
            l.dir(&dir, 0o755);
            seen.push(dir);
        }
    }
}

/// The image, from the `probe-server` binary at `bin`.
pub fn probe_server_image(bin: &Path, work: &Path) -> Image {
    let stripped = work.join("probe-server");
    crate::registry::run(Command::new("strip").arg("-o").arg(&stripped).arg(bin))
        .expect("strip probe-server");
    let mut l = LayerBuilder::new();
    let mut dirs = Vec::new();
    l.file(
        "probe-server",
        0o755,
        &std::fs::read(&stripped).expect("read probe-server"),
    );
    for lib in shared_libraries(bin) {
        with_parents(&mut l, &lib, &mut dirs);
        let data = std::fs::read(&lib).unwrap_or_else(|e| panic!("read {lib}: {e}"));
        l.file(lib.trim_start_matches('/'), 0o755, &data);
    }
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox");
    with_parents(&mut l, "bin/busybox", &mut dirs);
    l.file("bin/busybox", 0o755, &busybox);
    for applet in ["sh", "touch", "rm", "sleep", "cat", "wget"] {
        l.symlink(&format!("bin/{applet}"), "busybox");
    }
    l.dir("tmp", 0o1777);
    let config = json!({"Env": ["PATH=/bin"], "Cmd": ["/probe-server"]});
    Image::new(
        vec![Layer::new(l.finish(), Compression::Gzip)],
        "amd64",
        config,
    )
}

/// Builds the image from `bin` and pushes it to `reg` as [`PROBE_SERVER`] names it.
pub fn push_probe_server(reg: &Registry, bin: &Path, work: &Path) {
    let img = probe_server_image(bin, work);
    crate::security::push_images(reg, work, "library/probe-server", &[("latest", &img)]);
}
