//! Tables (Markdown) and plots (SVG, written by hand) of benchmark rows.

use serde::Serialize;
use std::fmt::Write;

/// One compared figure: MonoFS beside its peer, with the ratio oriented so that higher is
/// better for MonoFS (for latencies: peer / MonoFS).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub workload: String,
    pub metric: String,
    pub unit: String,
    pub monofs: f64,
    pub peer_name: String,
    pub peer: f64,
    /// MonoFS relative to the peer, higher is better.
    pub ratio: f64,
    /// The target for `ratio` (ratio ≥ target), if there is one.
    pub target: Option<f64>,
    pub met: Option<bool>,
}

impl Row {
    pub fn new(workload: &str, metric: &str, unit: &str, monofs: f64, peer_name: &str, peer: f64, lower_is_better: bool, target: Option<f64>) -> Row {
        let ratio = if lower_is_better {
            if monofs > 0.0 { peer / monofs } else { 0.0 }
        } else if peer > 0.0 {
            monofs / peer
        } else {
            0.0
        };
        Row {
            workload: workload.into(),
            metric: metric.into(),
            unit: unit.into(),
            monofs,
            peer_name: peer_name.into(),
            peer,
            ratio,
            target,
            met: target.map(|t| ratio >= t),
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{:.0}", v)
    } else if v >= 10.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    }
}

pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| workload | metric | MonoFS | peer | peer value | ratio (higher is better) | target | met |\n");
    s.push_str("|---|---|---:|---|---:|---:|---:|---|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} ({}) | {} | {} | {} | {:.2}× | {} | {} |",
            r.workload,
            r.metric,
            r.unit,
            fmt_num(r.monofs),
            r.peer_name,
            fmt_num(r.peer),
            r.ratio,
            r.target.map(|t| format!("≥ {t:.2}×")).unwrap_or_else(|| "–".into()),
            match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        );
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Horizontal bars of each row's ratio on a log2 axis, with its target marked.
pub fn svg(title: &str, subtitle: &str, rows: &[Row]) -> String {
    let left = 330.0;
    let width = 900.0;
    let plot_w = width - left - 40.0;
    let row_h = 34.0;
    let top = 70.0;
    let height = top + row_h * rows.len() as f64 + 60.0;
    // axis from 1/8 to 8 (log2), widened to fit the data
    let mut lo: f64 = -3.0;
    let mut hi: f64 = 3.0;
    for r in rows {
        if r.ratio > 0.0 {
            lo = lo.min(r.ratio.log2().floor());
            hi = hi.max(r.ratio.log2().ceil());
        }
    }
    let x = |ratio: f64| -> f64 {
        let l = if ratio > 0.0 { ratio.log2().clamp(lo, hi) } else { lo };
        left + (l - lo) / (hi - lo) * plot_w
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(s, r##"<text x="20" y="28" font-size="18" font-weight="bold">{}</text>"##, esc(title));
    let _ = writeln!(s, r##"<text x="20" y="50" fill="#555">{}</text>"##, esc(subtitle));
    let axis_y = top + row_h * rows.len() as f64 + 6.0;
    let mut e = lo as i64;
    while e <= hi as i64 {
        let v = 2f64.powi(e as i32);
        let xx = x(v);
        let stroke = if e == 0 { "#000" } else { "#ddd" };
        let _ = writeln!(s, r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{axis_y}" stroke="{stroke}"/>"##);
        let label = if e >= 0 { format!("{}×", v) } else { format!("1/{}×", 1u64 << (-e)) };
        let _ = writeln!(s, r##"<text x="{xx:.1}" y="{:.1}" text-anchor="middle" fill="#333">{label}</text>"##, axis_y + 16.0);
        e += 1;
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">MonoFS relative to the peer (log scale, right of 1× = MonoFS better)</text>"##,
        left + plot_w / 2.0,
        axis_y + 36.0
    );
    let one = x(1.0);
    for (i, r) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let xr = x(r.ratio);
        let (x0, w) = if xr >= one { (one, xr - one) } else { (xr, one - xr) };
        let color = match r.met {
            Some(true) => "#2e7d32",
            Some(false) => "#c62828",
            None => "#1565c0",
        };
        let label = format!("{} — {} vs {}", r.workload, r.metric, r.peer_name);
        let _ = writeln!(s, r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##, left - 8.0, y + row_h / 2.0 + 4.0, esc(&label));
        let _ = writeln!(s, r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}" opacity="0.85"/>"##, y + 6.0, w.max(1.0), row_h - 12.0);
        let tx = if xr >= one { xr + 4.0 } else { xr - 4.0 };
        let anchor = if xr >= one { "start" } else { "end" };
        let _ = writeln!(s, r##"<text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}" font-size="12">{:.2}×</text>"##, y + row_h / 2.0 + 4.0, r.ratio);
        if let Some(t) = r.target {
            let xt = x(t);
            let _ = writeln!(s, r##"<line x1="{xt:.1}" y1="{:.1}" x2="{xt:.1}" y2="{:.1}" stroke="#000" stroke-width="2" stroke-dasharray="3,2"/>"##, y + 2.0, y + row_h - 2.0);
        }
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#555">green: target met, red: missed, blue: no target; dashed line: target</text>"##,
        20.0,
        height - 6.0
    );
    s.push_str("</svg>\n");
    s
}
