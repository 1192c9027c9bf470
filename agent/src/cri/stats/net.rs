//! A pod's network counters, read from `/proc/net/dev` inside its network namespace.

use std::path::Path;

use skiff_cni::netns::Netns;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of the namespace pinned at `netns`, loopback left out.
pub fn interfaces(netns: &Path) -> Option<Vec<Interface>> {
    let ns = Netns::open(&netns.to_string_lossy()).ok()?;
    // /proc/net follows the thread group leader's namespace; thread-self follows this thread's.
    let text = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))
        .ok()?
        .ok()?;
    Some(parse_net_dev(&text))
}

/// `/proc/net/dev`: two header lines, then `name: rx_bytes packets errs drop fifo frame compressed
/// multicast tx_bytes packets errs ...`.
pub fn parse_net_dev(text: &str) -> Vec<Interface> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            if name == "lo" || f.len() < 12 {
                return None;
            }
            Some(Interface {
                name: name.to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

/// kubelet's "default interface": `eth0` as CNI names it, else the first one.
pub fn default_interface(ifs: &[Interface]) -> Option<&Interface> {
    ifs.iter().find(|i| i.name == "eth0").or(ifs.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0
  eth0:    5000      40    1    0    0     0          0         0     3000      30    2    3    0     0       0          0
  net1:       7       1    0    0    0     0          0         0        9       1    0    0    0     0       0          0
";

    #[test]
    fn parses_counters_without_loopback() {
        let ifs = parse_net_dev(DEV);
        assert_eq!(ifs.len(), 2);
        assert_eq!(
            ifs[0],
            Interface {
                name: "eth0".into(),
                rx_bytes: 5000,
                rx_packets: 40,
                rx_errors: 1,
                rx_dropped: 0,
                tx_bytes: 3000,
                tx_packets: 30,
                tx_errors: 2,
                tx_dropped: 3,
            }
        );
        assert_eq!(default_interface(&ifs).unwrap().name, "eth0");
        assert_eq!(default_interface(&ifs[1..]).unwrap().name, "net1");
        assert!(parse_net_dev("junk").is_empty());
    }

    #[test]
    fn reads_the_hosts_namespace() {
        // Our own namespace through its /proc file: at least the parse runs on real data.
        let ifs = interfaces(Path::new("/proc/self/ns/net"));
        assert!(ifs.is_some());
    }
}
