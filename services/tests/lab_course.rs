//! The lab course's steps give their committed outputs: each script under `docs/lab/steps/`
//! runs against a fresh `prism up --no-feed` (`PRISM` = its URL) and its stdout must equal
//! `docs/lab/expected/<step>.out`, and the step's page (`docs/lab/<step>.md`) must show the
//! script and the output verbatim, so what the student reads is what was checked.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn lab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/lab")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lab_step_gives_its_committed_output() {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(lab().join("steps"))
        .expect("docs/lab/steps")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    steps.sort();
    assert!(!steps.is_empty(), "no lab step scripts");
    for script in steps {
        let name = script.file_stem().and_then(|s| s.to_str()).expect("step name").to_string();
        let expected = std::fs::read_to_string(lab().join("expected").join(format!("{name}.out"))).expect("expected output");
        let page = std::fs::read_to_string(lab().join(format!("{name}.md"))).expect("step page");
        let text = std::fs::read_to_string(&script).expect("script");
        assert!(page.contains(&text), "docs/lab/{name}.md does not show its script verbatim");
        assert!(page.contains(&expected), "docs/lab/{name}.md does not show its expected output verbatim");

        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        config.feed.no_feed = true;
        let up = start(config).await;
        let out = tokio::task::spawn_blocking({
            let (script, base) = (script.clone(), up.base.clone());
            move || Command::new("bash").arg(script).env("PRISM", base).output().expect("run the step")
        })
        .await
        .expect("join");
        up.stop().await;
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let got = String::from_utf8_lossy(&out.stdout);
        let first_diff = got.lines().zip(expected.lines()).position(|(g, e)| g != e);
        assert_eq!(got, expected, "{name}: the output differs from docs/lab/expected/{name}.out (first differing line: {first_diff:?})");
    }
}
