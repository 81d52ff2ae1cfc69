//! `ferrocorn sweep` end to end: a tiny sweep with two real cells and a
//! row that cannot start; every output file is written, the numbers are
//! plausible, and the broken row is reported without stopping the sweep.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{python, root, wait_until};

#[test]
fn a_tiny_sweep_runs_every_cell_and_writes_every_report() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("tiny.toml");
    std::fs::write(
        &sweep,
        format!(
            r#"
name = "tiny"
description = "two worker counts, and a server that does not exist"
app = "examples.flask_app:app"
python = "{python}"
duration = "2s"
warmup = "500ms"
request_timeout = "5s"

[load]
model = "closed"
users = 4

[[endpoints]]
path = "/hello"
weight = 3

[[endpoints]]
path = "/io?ms={{ms}}"

[grid]
workers = [1, 2]
ms = [5]

[[rows]]
name = "ferrocorn"

[[rows]]
name = "missing"
command = "/nonexistent/server --bind {{bind}}"
"#,
            python = python().display()
        ),
    )
    .unwrap();
    let out = dir.path().join("results");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrocorn"))
        .current_dir(root())
        .args([
            "sweep",
            sweep.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_until("the sweep to finish", Duration::from_secs(120), || {
        child
            .try_wait()
            .unwrap()
            .ok_or_else(|| "running".to_string())
    });
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("failed") && stderr.contains("/nonexistent/server"),
        "{stderr}"
    );

    for file in [
        "summary.md",
        "cells.csv",
        "series.csv",
        "results.json",
        "summary.html",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let charts = std::fs::read_dir(out.join("charts")).unwrap().count();
    assert!(charts >= 5, "{charts} charts");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let cells = json["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4, "2 worker counts x 2 rows");
    let ok: Vec<_> = cells
        .iter()
        .filter(|c| c["status"]["status"] == "ok")
        .collect();
    assert_eq!(ok.len(), 2, "{json:#}");
    for cell in ok {
        let load = &cell["load"];
        let sent = load["sent"].as_u64().unwrap();
        let completed = load["completed"].as_u64().unwrap();
        // 4 users for 2 s against /hello and /io: hundreds, not 0 and not millions.
        assert!((100..1_000_000).contains(&sent), "{load}");
        assert_eq!(completed, sent, "nothing should fail: {load}");
        let p50 = load["latency"]["p50_us"].as_u64().unwrap();
        let max = load["latency"]["max_us"].as_u64().unwrap();
        assert!(p50 > 0 && p50 <= max, "{load}");
        let server = &cell["server"];
        let rss = server["rss"]["peak"].as_u64().unwrap();
        // master + 1 or 2 Flask workers
        assert!((20 << 20..2 << 30).contains(&rss), "{server}");
        assert!(server["cpu_server_pct"].as_f64().unwrap() > 0.0, "{server}");
        assert!(!server["series"].as_array().unwrap().is_empty());
    }
    let failed = cells.iter().find(|c| c["row"] == "missing").unwrap();
    assert!(
        failed["status"]["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/server"),
        "{failed}"
    );
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("ferrocorn") && summary.contains("missing"),
        "{summary}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("cells.csv"))
            .unwrap()
            .lines()
            .count(),
        5
    );
}
