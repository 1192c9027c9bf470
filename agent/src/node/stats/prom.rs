//! The Prometheus text exposition format (0.0.4), written the way Go's client writes it: one
//! `# HELP` and `# TYPE` per family, label values escaped, floats in Go's shortest form.

use std::fmt::Write;

/// One sample: label pairs, the value, and the time it was measured (ms since the epoch), if any.
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
    pub millis: Option<i64>,
}

pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: &'static str,
    pub samples: Vec<Sample>,
}

/// Families in name order, samples in label order, as Go's registry gathers them.
pub fn render(mut families: Vec<Family>) -> String {
    families.sort_by_key(|f| f.name);
    let mut out = String::new();
    for f in &mut families {
        if f.samples.is_empty() {
            continue;
        }
        f.samples.sort_by(|a, b| a.labels.cmp(&b.labels));
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for s in &f.samples {
            out.push_str(f.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape(v));
                }
                out.push('}');
            }
            let _ = write!(out, " {}", float(s.value));
            if let Some(ms) = s.millis {
                let _ = write!(out, " {ms}");
            }
            out.push('\n');
        }
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)`: the shortest digits, in exponent form when the
/// decimal exponent is below -4 or at least 6.
pub fn float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&exp) {
        let s = format!("{v:e}");
        let (mantissa, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", e.abs());
    }
    format!("{v}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_look_like_gos() {
        assert_eq!(float(0.0), "0");
        assert_eq!(float(1000.0), "1000");
        assert_eq!(float(0.5), "0.5");
        assert_eq!(float(1.5e-7), "1.5e-07");
        assert_eq!(float(123456.0), "123456");
        assert_eq!(float(1e6), "1e+06");
        assert_eq!(float(1.6243962483020916e9), "1.6243962483020916e+09");
        assert_eq!(float(3e21), "3e+21");
    }

    #[test]
    fn families_render_sorted_and_escaped() {
        let text = render(vec![
            Family {
                name: "zz",
                help: "Last.",
                kind: "gauge",
                samples: vec![Sample {
                    labels: vec![],
                    value: 1.0,
                    millis: None,
                }],
            },
            Family {
                name: "aa_total",
                help: "First.",
                kind: "counter",
                samples: vec![
                    Sample {
                        labels: vec![("pod", "b\"q".into())],
                        value: 2.5,
                        millis: Some(7),
                    },
                    Sample {
                        labels: vec![("pod", "a".into())],
                        value: 1.0,
                        millis: Some(7),
                    },
                ],
            },
        ]);
        assert_eq!(
            text,
            "# HELP aa_total First.\n# TYPE aa_total counter\naa_total{pod=\"a\"} 1 7\n\
             aa_total{pod=\"b\\\"q\"} 2.5 7\n# HELP zz Last.\n# TYPE zz gauge\nzz 1\n"
        );
    }
}
