//! `/spec/`: the machine as cAdvisor's `MachineInfo` describes it (what kubelet serves there),
//! from the facts skiffd read at start plus the CPU topology and interfaces, read per request.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::reply::{self, Reply};
use crate::node::machine::{meminfo, Machine};

/// Sockets and physical cores by `/proc/cpuinfo`'s `physical id` and `core id`, its vendor, and
/// its clock in kHz.
#[derive(Debug, Default, PartialEq)]
struct Cpus {
    sockets: usize,
    cores: usize,
    vendor: String,
    khz: u64,
}

fn cpuinfo(text: &str) -> Cpus {
    let (mut sockets, mut cores) = (BTreeSet::new(), BTreeSet::new());
    let (mut vendor, mut mhz, mut socket) = (String::new(), 0.0f64, String::new());
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "physical id" => {
                socket = v.to_string();
                sockets.insert(socket.clone());
            }
            "core id" => {
                cores.insert((socket.clone(), v.to_string()));
            }
            "vendor_id" if vendor.is_empty() => vendor = v.to_string(),
            "cpu MHz" if mhz == 0.0 => mhz = v.parse().unwrap_or(0.0),
            _ => {}
        }
    }
    Cpus {
        sockets: sockets.len().max(1),
        cores: cores.len(),
        vendor,
        khz: (mhz * 1000.0) as u64,
    }
}

/// The highest clock the kernel knows of, else the one `/proc/cpuinfo` shows now.
fn max_khz(fallback: u64) -> u64 {
    std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(fallback)
}

fn network_devices() -> Vec<Value> {
    let read = |dev: &str, f: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{dev}/{f}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| {
            json!({
                "name": n,
                "mac_address": read(n, "address"),
                "speed": read(n, "speed").parse::<i64>().unwrap_or(0),
                "mtu": read(n, "mtu").parse::<i64>().unwrap_or(0),
            })
        })
        .collect()
}

/// `hugepages-2Mi` → bytes, as [`Machine`] keeps them, in cAdvisor's page size (KiB) and count.
fn hugepages(m: &Machine) -> Vec<Value> {
    m.hugepages
        .iter()
        .filter_map(|(name, bytes)| {
            let size = name.strip_prefix("hugepages-")?;
            let (n, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
            let kib = n.parse::<u64>().ok()?
                * match unit {
                    "Ki" => 1,
                    "Mi" => 1024,
                    "Gi" => 1024 * 1024,
                    _ => return None,
                };
            Some(json!({"page_size": kib, "num_pages": bytes / (kib * 1024)}))
        })
        .collect()
}

/// The document, measured now.
pub fn document(m: &Machine) -> Value {
    let cpus = cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    let physical = if cpus.cores == 0 {
        m.cpus as usize
    } else {
        cpus.cores
    };
    json!({
        "timestamp": crate::node::stats::types::time(crate::now_ns()),
        "vendor_id": cpus.vendor,
        "num_cores": m.cpus,
        "num_physical_cores": physical,
        "num_sockets": cpus.sockets,
        "cpu_frequency_khz": max_khz(cpus.khz),
        "memory_capacity": m.memory_bytes,
        "swap_capacity": meminfo("SwapTotal").unwrap_or(0),
        "hugepages": hugepages(m),
        "machine_id": m.machine_id,
        "system_uuid": m.system_uuid,
        "boot_id": m.boot_id,
        "filesystems": [],
        "disk_map": {},
        "network_devices": network_devices(),
        "topology": [],
        "cloud_provider": "Unknown",
        "instance_type": "Unknown",
        "instance_id": "None",
    })
}

pub fn serve(m: &Machine) -> Reply {
    reply::json(&document(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_counts_sockets_and_cores() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu MHz\t\t: 2100.000\n\
                    physical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n\
                    physical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 2\nphysical id\t: 1\ncore id\t\t: 0\n";
        assert_eq!(
            cpuinfo(text),
            Cpus {
                sockets: 2,
                cores: 2,
                vendor: "GenuineIntel".into(),
                khz: 2_100_000
            }
        );
    }

    #[test]
    fn the_machine_is_described() {
        let m = Machine {
            cpus: 2,
            memory_bytes: 1 << 30,
            hugepages: [("hugepages-2Mi".to_string(), 4 << 20)].into(),
            machine_id: "m".into(),
            ..Default::default()
        };
        let d = document(&m);
        assert_eq!(d["num_cores"], 2);
        assert_eq!(d["memory_capacity"], 1u64 << 30);
        assert_eq!(d["hugepages"], json!([{"page_size": 2048, "num_pages": 2}]));
        assert_eq!(d["machine_id"], "m");
        assert!(d["num_sockets"].as_u64().unwrap() >= 1);
    }
}
