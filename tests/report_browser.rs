//! The HTML report opens in a real browser: headless Chromium renders the report of the bundled
//! model (`examples/models/tiny-gpt.onnx`) to a PNG, and the DOM it parsed holds one roofline
//! `<circle class="op">` per op row of the report. Runs when Chromium is found (`LLMPU_CHROMIUM`,
//! else `chromium` / `chromium-browser` on `PATH`); `.ci/run` installs it, and with `CI` set a
//! missing browser is a failure, not a skip.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::llmpu_ok;

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("LLMPU_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

fn headless(browser: &Path, args: &[&str], page: &Path) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium")
}

#[test]
fn chromium_renders_the_report_with_one_roofline_point_per_op() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: Chromium not found (set LLMPU_CHROMIUM or install `chromium`)"
        );
        eprintln!("SKIPPED: Chromium not found (set LLMPU_CHROMIUM)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("llmpu-report-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (bin, html, json, png) = (
        dir.join("tiny-gpt.llmpu"),
        dir.join("report.html"),
        dir.join("report.json"),
        dir.join("report.png"),
    );
    let s = |p: &Path| p.to_str().unwrap().to_string();
    llmpu_ok(&["compile", "examples/models/tiny-gpt.onnx", "-o", &s(&bin)]);
    llmpu_ok(&[
        "run",
        &s(&bin),
        "--timing-only",
        "--report",
        &s(&html),
        "--report-json",
        &s(&json),
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ops = report["locations"].as_array().unwrap().len();
    assert!(ops >= 20, "the model has many ops: {ops}");

    let dom = headless(&browser, &["--dump-dom"], &html);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(
        dom.matches("<circle class=\"op\"").count(),
        ops,
        "one point per op"
    );
    assert!(dom.contains("class=\"roofline\"") && dom.contains("class=\"timeline\""));
    assert_eq!(
        dom.matches("<tr>").count(),
        8 + 1 + ops,
        "totals rows, the ops header and one row per op"
    );

    let shot = |page: &Path, png: &Path| {
        let o = headless(
            &browser,
            &[
                "--window-size=1280,2400",
                &format!("--screenshot={}", s(png)),
            ],
            page,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(png).unwrap()
    };
    let img = shot(&html, &png);
    assert_eq!(&img[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let dim = |o: usize| u32::from_be_bytes(img[o..o + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (1280, 2400), "IHDR width and height");
    let blank_page = dir.join("blank.html");
    std::fs::write(&blank_page, "<html><body></body></html>").unwrap();
    let blank = shot(&blank_page, &dir.join("blank.png"));
    assert!(
        img.len() > 3 * blank.len(),
        "the report's screenshot ({} bytes) holds far more than a blank page's ({} bytes)",
        img.len(),
        blank.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The page's layout as Chromium computes it at a 1400 px wide window: a copy of the report with a
/// measuring script appended (the report itself has no scripts) writes the ops table's right
/// edge, the document's scroll width and the roofline's right edge into the DOM it dumps.
fn layout_at_1400px(browser: &Path, html: &Path) -> (f64, f64, f64) {
    let page = html.with_extension("measure.html");
    let text = std::fs::read_to_string(html).unwrap().replace(
        "</body>",
        "<script>const r = document.querySelector('table.ops').getBoundingClientRect();\
         const f = document.querySelector('svg.roofline').getBoundingClientRect();\
         document.body.insertAdjacentHTML('beforeend', '<pre id=\"layout\">' + r.right + ' ' + \
         document.documentElement.scrollWidth + ' ' + f.right + '</pre>');</script></body>",
    );
    std::fs::write(&page, text).unwrap();
    let o = headless(browser, &["--window-size=1400,900", "--dump-dom"], &page);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dom = String::from_utf8_lossy(&o.stdout);
    let at = dom
        .rfind("<pre id=\"layout\">")
        .expect("the measuring script ran")
        + 17;
    let end = at + dom[at..].find("</pre>").unwrap();
    let v: Vec<f64> = dom[at..end]
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1], v[2])
}

#[test]
fn the_gpt2_small_report_fits_a_1400_px_window() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: Chromium not found (set LLMPU_CHROMIUM or install `chromium`)"
        );
        eprintln!("SKIPPED: Chromium not found (set LLMPU_CHROMIUM)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("llmpu-report-1400-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (model, bin, html) = (
        dir.join("gpt2-small-prefill.onnx"),
        dir.join("gpt2.llmpu"),
        dir.join("report.html"),
    );
    llmpu_ok(&[
        "bench",
        "--only",
        "gpt2-small-prefill",
        "--emit-onnx",
        &s(&dir),
    ]);
    llmpu_ok(&["compile", &s(&model), "-o", &s(&bin)]);
    llmpu_ok(&["run", &s(&bin), "--timing-only", "--report", &s(&html)]);
    let page = std::fs::read_to_string(&html).unwrap();
    // Fused ops show their short label; every fused node is in the cell's tooltip.
    assert!(
        page.contains("title=\"/h.0/mlp/") && page.contains(">h.0/mlp: matmul+bias+gelu</td>"),
        "short labels with the node list on hover"
    );
    let (table_right, scroll_width, roofline_right) = layout_at_1400px(&browser, &html);
    assert!(
        table_right <= 1400.0 && scroll_width <= 1400.0 && roofline_right <= 1400.0,
        "ops table ends at {table_right} px, roofline at {roofline_right} px, page {scroll_width} px wide"
    );
    std::fs::remove_dir_all(&dir).ok();
}
