//! cgroup v1 device rules: `devices.allow` and `devices.deny` lines, applied in order.

use std::path::Path;

use super::Rule;
use crate::cgroups::util::write_file;
use crate::cgroups::CgroupError;

pub fn apply(dir: &Path, rules: &[Rule]) -> Result<(), CgroupError> {
    if rules.is_empty() {
        return Ok(());
    }
    // Start from nothing so that the list means the same as it does on v2, where the program
    // denies whatever no rule allows.
    write_file(dir, "devices.deny", "a")?;
    for r in rules {
        let file = if r.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        write_file(dir, file, &r.v1_line())?;
    }
    Ok(())
}
