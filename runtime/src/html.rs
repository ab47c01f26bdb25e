//! The HTML run report: totals, a per-op table, a roofline plot and a per-unit timeline, in one
//! self-contained file (inline SVG and CSS, no scripts, nothing fetched).
//!
//! An "op" is a debug-map location — the ONNX node(s) the compiler attributed the instructions to.
//! Its row and point are [`crate::report::OpPoint`]s, the same figures as the text and JSON
//! reports: a short label (`h.0/mlp: matmul+bias+gelu`; the full fused node list is the cell's
//! and the point's tooltip), its time (the busy cycles of its bottleneck unit), FLOPs,
//! intensity, bottleneck unit and bound class, and its fraction of the roofline. The roofline has
//! one point per op (`class="op"`) coloured by bound class, a legend, and the busiest places
//! named (identical layers share a place, so the label counts them). Ops with no HBM traffic
//! sit at the right edge, ops with no FLOPs on the bottom edge. The per-op table fits a 1400 px
//! window for a GPT-2-small-sized model (`tests/report_browser.rs`).

use crate::report::{Bound, Report};
pub use crate::report::{OpPoint, compute_roof};
use crate::timeline::{BINS, Timeline};
use llmpu_isa::{Target, Unit};
use std::fmt::Write;

/// The roofline figures of every op of a report against `target`'s roofs.
pub fn op_points(report: &Report, target: &Target) -> Vec<OpPoint> {
    crate::report::op_points(
        report,
        target.hbm.bandwidth_gb_s * 1e9,
        compute_roof(target),
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn color(i: usize) -> String {
    let hue = (i * 137) % 360;
    format!("hsl({hue},65%,50%)")
}

fn roofline_svg(points: &[OpPoint], target: &Target) -> String {
    let (w, h, pad) = (640.0, 400.0, 50.0);
    // The legend's column right of the plot.
    let full_w = w + 330.0;
    let peak = compute_roof(target);
    let bw = target.hbm.bandwidth_gb_s * 1e9;
    let (x0, x1) = (-2.0f64, 4.0f64);
    let y1 = peak.log10().ceil() + 0.3;
    let y0 = y1 - 7.0;
    let px = |lx: f64| pad + (lx.clamp(x0, x1) - x0) / (x1 - x0) * (w - 2.0 * pad);
    let py = |ly: f64| h - pad - (ly.clamp(y0, y1) - y0) / (y1 - y0) * (h - 2.0 * pad);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="roofline" width="{full_w}" height="{h}" viewBox="0 0 {full_w} {h}">"#
    );
    let _ = write!(
        s,
        r##"<rect x="{pad}" y="{pad}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        w - 2.0 * pad,
        h - 2.0 * pad
    );
    for d in (x0 as i64)..=(x1 as i64) {
        let x = px(d as f64);
        let _ = write!(
            s,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" font-size="11" text-anchor="middle">1e{d}</text>"##,
            pad,
            h - pad,
            h - pad + 15.0
        );
    }
    for d in (y0.ceil() as i64)..=(y1.floor() as i64) {
        let y = py(d as f64);
        let _ = write!(
            s,
            r##"<line x1="{pad}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" font-size="11" text-anchor="end">1e{d}</text>"##,
            w - pad,
            pad - 4.0,
            y + 4.0
        );
    }
    let ridge = (peak / bw).log10();
    let _ = write!(
        s,
        r##"<polyline class="roof" fill="none" stroke="#c00" stroke-width="2" points="{},{} {},{} {},{}"/>"##,
        px(x0),
        py(x0 + bw.log10()),
        px(ridge),
        py(peak.log10()),
        px(x1),
        py(peak.log10())
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" font-size="12">FLOP per HBM byte</text><text x="12" y="{}" font-size="12" transform="rotate(-90 12 {})">FLOP/s</text>"#,
        w / 2.0 - 50.0,
        h - 12.0,
        h / 2.0,
        h / 2.0
    );
    // Points coloured by what bounds the op; the legend explains colours and the roof. The ops
    // with the most cycles are named beside their points, once per place: identical layers
    // share one point's place, so its label counts them (every point has a tooltip).
    let place = |p: &OpPoint| {
        let lx = p.intensity.map(f64::log10).unwrap_or(x1);
        let ly = if p.flops == 0 {
            y0
        } else {
            p.flops_per_second.log10()
        };
        (px(lx), py(ly))
    };
    let places: Vec<(f64, f64)> = points.iter().map(place).collect();
    let near = |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 6.0 && (a.1 - b.1).abs() < 6.0;
    let mut by_cycles: Vec<usize> = (0..points.len()).collect();
    by_cycles.sort_by_key(|&i| std::cmp::Reverse(points[i].cycles));
    let mut named: Vec<usize> = Vec::new();
    for i in by_cycles {
        if named.len() == LABELLED_POINTS {
            break;
        }
        if !named.iter().any(|&j| near(places[i], places[j])) {
            named.push(i);
        }
    }
    for (i, p) in points.iter().enumerate() {
        let (cx, cy) = places[i];
        let _ = write!(
            s,
            r#"<circle class="op" cx="{cx:.1}" cy="{cy:.1}" r="5" fill="{}" fill-opacity="0.7" stroke="{}"><title>{}: {:.3e} FLOP/s, {} of roof, {}-bound ({})&#10;{}</title></circle>"#,
            bound_color(p.bound),
            bound_color(p.bound),
            esc(&p.label),
            p.flops_per_second,
            pct(p.roofline_fraction),
            p.bound.name(),
            p.bottleneck.name(),
            esc(&p.loc)
        );
    }
    for (k, &i) in named.iter().enumerate() {
        let (cx, cy) = places[i];
        let same = places.iter().filter(|&&q| near(q, places[i])).count();
        let more = if same > 1 {
            format!(" (+{} at this point)", same - 1)
        } else {
            String::new()
        };
        // Alternate above and below the point so that neighbours' labels do not collide.
        let dy = if k % 2 == 0 { -7.0 } else { 14.0 };
        let _ = write!(
            s,
            r#"<text class="op-label" x="{:.1}" y="{:.1}" font-size="10" fill="{}">{}{more}</text>"#,
            cx + 7.0,
            cy + dy,
            bound_color(points[i].bound),
            esc(&points[i].label)
        );
    }
    // Legend, right of the plot.
    let lx = w + 20.0;
    let _ = write!(
        s,
        r##"<g class="legend"><text x="{lx}" y="{}" font-size="12" font-weight="bold">legend</text><line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="#c00" stroke-width="2"/><text x="{}" y="{}" font-size="11">roof: HBM bandwidth, then compute</text>"##,
        pad,
        pad + 14.0,
        lx + 18.0,
        pad + 14.0,
        lx + 24.0,
        pad + 18.0
    );
    for (k, b) in [Bound::Memory, Bound::Compute, Bound::Control]
        .into_iter()
        .enumerate()
    {
        let y = pad + 34.0 + 18.0 * k as f64;
        let n = points.iter().filter(|p| p.bound == b).count();
        let _ = write!(
            s,
            r#"<circle cx="{}" cy="{y}" r="5" fill="{c}" fill-opacity="0.7" stroke="{c}"/><text x="{}" y="{}" font-size="11">{}-bound ({} busiest): {n} ops</text>"#,
            lx + 9.0,
            lx + 24.0,
            y + 4.0,
            b.name(),
            match b {
                Bound::Memory => "DMA",
                Bound::Compute => "MXU/VPU",
                Bound::Control => "scalar",
            },
            c = bound_color(b)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{lx}" y="{}" font-size="11">ops without HBM traffic: right edge</text><text x="{lx}" y="{}" font-size="11">ops without FLOPs: bottom edge</text><text x="{lx}" y="{}" font-size="11">named: the {} busiest places</text></g>"#,
        pad + 100.0,
        pad + 116.0,
        pad + 132.0,
        named.len()
    );
    s.push_str("</svg>");
    s
}

/// How many roofline points carry their op's label (the rest have tooltips only).
const LABELLED_POINTS: usize = 6;

fn bound_color(b: Bound) -> &'static str {
    match b {
        Bound::Memory => "#1f77b4",
        Bound::Compute => "#d62728",
        Bound::Control => "#7f7f7f",
    }
}

fn pct(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

fn timeline_svg(report: &Report, timeline: Option<&Timeline>) -> String {
    const PX: f64 = BINS as f64;
    let lanes: Vec<(usize, Unit)> = (0..report.cores.len())
        .flat_map(|c| Unit::ALL.iter().map(move |&u| (c, u)))
        .collect();
    let (label_w, lane_h) = (110.0, 16.0);
    let w = label_w + PX + 10.0;
    let h = lanes.len() as f64 * lane_h + 30.0;
    // Pixels per cycle.
    let scale = if report.cycles > 0 {
        PX / report.cycles as f64
    } else {
        0.0
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{w}" height="{h}" viewBox="0 0 {w} {h}">"#
    );
    for (li, &(c, u)) in lanes.iter().enumerate() {
        let y = li as f64 * lane_h;
        let frac = report.busy_fraction(c, u);
        let _ = write!(
            s,
            r#"<text x="0" y="{}" font-size="11">core {c} {u} {}</text>"#,
            y + 12.0,
            pct(frac)
        );
        let Some(tl) = timeline else {
            let _ = write!(
                s,
                r##"<rect x="{label_w}" y="{}" width="{:.1}" height="{}" fill="#4a7"/>"##,
                y + 2.0,
                frac * PX,
                lane_h - 4.0
            );
            continue;
        };
        let Some(Some(row)) = tl.lanes.get(4 * c + u.index()) else {
            continue;
        };
        let bw = tl.bin_cycles;
        for (b, bin) in row.iter().enumerate() {
            let t0 = b as u64 * bw;
            if bin.busy == 0 || t0 >= report.cycles {
                continue;
            }
            let x0 = t0 as f64 * scale;
            let x1 = ((t0 + bw).min(report.cycles) as f64 * scale).max(x0 + 1.0);
            let fill = match bin.dominant() {
                None | Some(0) => "#999".to_string(),
                Some(l) => color(l as usize - 1),
            };
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{}" width="{:.1}" height="{}" fill="{}" fill-opacity="{:.2}"/>"#,
                label_w + x0,
                y + 2.0,
                x1 - x0,
                lane_h - 4.0,
                fill,
                (bin.busy as f64 / bw as f64).clamp(0.15, 1.0)
            );
        }
    }
    let _ = write!(
        s,
        r#"<text x="{label_w}" y="{}" font-size="11">0</text><text x="{}" y="{}" font-size="11" text-anchor="end">{} cycles</text></svg>"#,
        h - 8.0,
        label_w + PX,
        h - 8.0,
        report.cycles
    );
    s
}

/// The whole report as a standalone HTML page.
/// `timeline` (from a run with `RunOptions::timeline`) draws each unit's busy time per time bin,
/// coloured by the bin's dominant op; without it each lane shows its overall busy fraction.
pub fn render(
    report: &Report,
    target: &Target,
    timeline: Option<&Timeline>,
    title: &str,
) -> String {
    let points = op_points(report, target);
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
         table.ops{{font-size:13px}}td.op{{max-width:26em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}}\
         td.bottleneck,td.bound{{text-align:left}}p.note{{font-size:13px;color:#555}}\
         h2{{margin-top:1.5em}}</style></head><body><h1>{t}</h1>",
        t = esc(title)
    );
    let _ = write!(
        o,
        "<h2>Totals</h2><table>\
         <tr><td>target</td><td>{}</td></tr><tr><td>cycles</td><td>{}</td></tr>\
         <tr><td>time</td><td>{:.3} µs</td></tr><tr><td>HBM read</td><td>{} B</td></tr>\
         <tr><td>HBM written</td><td>{} B</td></tr><tr><td>MACs</td><td>{}</td></tr>\
         <tr><td>achieved</td><td>{:.3e} FLOP/s ({} of peak)</td></tr>\
         <tr><td>energy</td><td>{:.3} µJ (dynamic {:.3}, static {:.3})</td></tr></table>",
        esc(&report.target),
        report.cycles,
        report.seconds * 1e6,
        report.hbm_read_bytes,
        report.hbm_write_bytes,
        report.macs,
        report.flops_per_second,
        pct(report.peak_fraction),
        report.energy.total_pj / 1e6,
        report.energy.dynamic_pj / 1e6,
        report.energy.static_pj / 1e6
    );
    o.push_str("<h2>Roofline</h2>");
    o.push_str(&roofline_svg(&points, target));
    o.push_str("<h2>Timeline</h2>");
    o.push_str(&timeline_svg(report, timeline));
    o.push_str(
        "<h2>Ops</h2><p class=\"note\">op: the fused-op pattern after its first ONNX node's scope; \
         hover it for every fused node. cycles: busy cycles of the bottleneck unit.</p>\
         <table class=\"ops\"><tr><th>op</th><th>cycles</th><th>scalar</th><th>dma</th>\
         <th>mxu</th><th>vpu</th><th>HBM bytes</th><th>FLOPs</th><th>FLOP/B</th>\
         <th>bottleneck</th><th>bound</th><th>roofline</th></tr>",
    );
    for (p, l) in points.iter().zip(&report.locations) {
        let _ = write!(
            o,
            "<tr><td class=\"op\" title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"bottleneck\">{}</td><td class=\"bound\">{}</td><td>{}</td></tr>",
            esc(&p.loc),
            esc(&p.label),
            p.cycles,
            l.busy_cycles[0],
            l.busy_cycles[1],
            l.busy_cycles[2],
            l.busy_cycles[3],
            p.hbm_bytes,
            p.flops,
            p.intensity
                .map(|i| format!("{i:.2}"))
                .unwrap_or_else(|| "—".into()),
            p.bottleneck.name(),
            p.bound.name(),
            pct(p.roofline_fraction)
        );
    }
    o.push_str("</table></body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::LocReport;

    fn report() -> Report {
        let mut r = Report {
            target: "edge".into(),
            clock_ghz: 1.0,
            cycles: 1000,
            seconds: 1e-6,
            ..Report::default()
        };
        r.cores.push(Default::default());
        r.locations = vec![
            LocReport {
                loc: "matmul <a>".into(),
                busy_cycles: [10, 100, 900, 0],
                instructions: 5,
                hbm_bytes: 4096,
                macs: 900 * 1024,
                ..Default::default()
            },
            LocReport {
                loc: "copy".into(),
                busy_cycles: [1, 50, 0, 0],
                instructions: 2,
                hbm_bytes: 5000,
                ..Default::default()
            },
        ];
        r
    }

    #[test]
    fn the_roofline_has_one_point_per_op() {
        let t = Target::default_target();
        let html = render(&report(), &t, None, "x");
        assert_eq!(html.matches(r#"<circle class="op""#).count(), 2);
        assert!(html.contains("matmul &lt;a&gt;"));
    }

    #[test]
    fn a_dense_matmul_is_compute_bound_at_the_matrix_share_of_the_roof() {
        let t = Target::default_target();
        let p = &op_points(&report(), &t)[0];
        assert!(p.compute_bound);
        let expected = t.peak_flops() / compute_roof(&t);
        assert!(
            (p.roofline_fraction - expected).abs() < 1e-9,
            "{}",
            p.roofline_fraction
        );
        assert_eq!((p.bottleneck, p.bound), (Unit::Mxu, Bound::Compute));
        let copy = &op_points(&report(), &t)[1];
        assert!(!copy.compute_bound);
        assert_eq!((copy.bottleneck, copy.bound), (Unit::Dma, Bound::Memory));
        assert!((copy.roofline_fraction - 1.0).abs() < 1e-9);
    }

    /// A norm moves few bytes per element but its vector unit is the busiest: compute-bound by
    /// its bottleneck although its intensity is far below the ridge point (the old
    /// intensity-only rule called it memory-bound).
    #[test]
    fn the_bound_follows_the_busiest_unit_not_the_intensity() {
        let t = Target::default_target();
        let mut r = report();
        r.locations = vec![
            LocReport {
                loc: "norm".into(),
                busy_cycles: [5, 200, 0, 800],
                hbm_bytes: 20_000,
                vector_ops: 25_600,
                ..Default::default()
            },
            LocReport {
                loc: "loop-heavy".into(),
                busy_cycles: [300, 100, 0, 50],
                hbm_bytes: 1000,
                vector_ops: 100,
                ..Default::default()
            },
            LocReport {
                loc: "tie".into(),
                busy_cycles: [0, 70, 70, 70],
                hbm_bytes: 1000,
                macs: 1000,
                ..Default::default()
            },
        ];
        let ridge = compute_roof(&t) / (t.hbm.bandwidth_gb_s * 1e9);
        let pts = op_points(&r, &t);
        assert!(pts[0].intensity.unwrap() < ridge);
        assert_eq!(
            (pts[0].bottleneck, pts[0].bound),
            (Unit::Vpu, Bound::Compute)
        );
        assert_eq!(pts[0].cycles, 800);
        assert_eq!(
            (pts[1].bottleneck, pts[1].bound),
            (Unit::Scalar, Bound::Control)
        );
        assert!(!pts[1].compute_bound);
        assert_eq!(pts[2].bottleneck, Unit::Dma);
        let html = render(&r, &t, None, "x");
        assert!(html.contains(r#"<td class="bottleneck">vpu</td><td class="bound">compute</td>"#));
        assert!(
            html.contains(r#"<td class="bottleneck">scalar</td><td class="bound">control</td>"#)
        );
        let json = r.to_json();
        assert_eq!(json["locations"][0]["bottleneck"], "vpu");
        assert_eq!(json["locations"][1]["bound"], "control");
        assert!(
            r.render()
                .lines()
                .any(|l| l.starts_with("norm ") && l.contains(" vpu ") && l.contains(" compute ")),
            "{}",
            r.render()
        );
    }
}
