//! An SVG bar chart of a comparison: one group per workload, one bar per system, commits/s on a
//! logarithmic axis (the peers span four orders of magnitude), each bar labelled with its value.
//! Written by hand: a few dozen elements do not need a plotting library.

use crate::run::Report;
use std::fmt::Write;

const BAR_H: f64 = 18.0;
const GAP: f64 = 14.0;
const LEFT: f64 = 300.0;
const WIDTH: f64 = 980.0;

fn color(system: &str) -> &'static str {
    match system.split_whitespace().next().unwrap_or("") {
        "shardlog" => "#2f6fde",
        "Redis" => "#d6453d",
        "NATS" => "#27a36a",
        _ => "#8a63c9",
    }
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k/s", v / 1e3)
    } else {
        format!("{v:.0} /s")
    }
}

/// The chart of `reports` (in the order given, grouped by workload).
pub fn svg(title: &str, reports: &[Report]) -> String {
    let mut workloads: Vec<&str> = Vec::new();
    for r in reports {
        if !workloads.contains(&r.workload.as_str()) {
            workloads.push(&r.workload);
        }
    }
    let max = reports.iter().map(|r| r.commits_per_s).fold(10.0, f64::max);
    let decades = max.log10().ceil().max(1.0);
    let plot_w = WIDTH - LEFT - 110.0;
    let x = |v: f64| LEFT + plot_w * (v.max(1.0).log10() / decades).clamp(0.0, 1.0);
    let height =
        70.0 + workloads.len() as f64 * (GAP + 22.0) + reports.len() as f64 * (BAR_H + 4.0) + 30.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        12,
        esc(title)
    );
    for d in 0..=decades as u32 {
        let xv = x(10f64.powi(d as i32));
        let _ = writeln!(
            s,
            r##"<line x1="{xv:.1}" y1="40" x2="{xv:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xv:.1}" y="{:.1}" text-anchor="middle" fill="#666">{}</text>"##,
            height - 24.0,
            height - 8.0,
            human(10f64.powi(d as i32)).replace(" /s", "").replace("/s", "")
        );
    }
    let mut y = 50.0;
    for w in &workloads {
        let _ =
            writeln!(s, r#"<text x="12" y="{:.1}" font-weight="bold">{}</text>"#, y + 12.0, esc(w));
        y += 22.0;
        for r in reports.iter().filter(|r| r.workload == *w) {
            let x1 = x(r.commits_per_s);
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{LEFT}" y="{y:.1}" width="{:.1}" height="{BAR_H}" fill="{}"/><text x="{:.1}" y="{:.1}" fill="#222">{}</text>"##,
                LEFT - 8.0,
                y + 13.0,
                esc(&r.system),
                (x1 - LEFT).max(1.0),
                color(&r.system),
                x1 + 6.0,
                y + 13.0,
                human(r.commits_per_s)
            );
            y += BAR_H + 4.0;
        }
        y += GAP;
    }
    s.push_str("</svg>\n");
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
