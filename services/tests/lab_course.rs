//! The lab course's steps give their committed outputs: each script under `docs/lab/steps/`
//! runs and its stdout must equal `docs/lab/expected/<step>.out`, and the step's page
//! (`docs/lab/<step>.md`) must show the script and the output verbatim, so what the student
//! reads is what was checked.
//!
//! A script that says it "Needs a running Prism at $PRISM" gets a fresh `prism up --no-feed`
//! (its URL in `PRISM`); the others start their own Prisms from `PRISM_BIN` (this build's
//! binary) with data under `LAB_WORK` (a fresh temporary folder). Every script inherits the test
//! servers' variables (`PRISM_DATABASE_URL`, `PRISM_KAFKA_BROKERS`: private servers for a step
//! that names them) and finds the lab's Python packages first on its `PATH`
//! (`PRISM_TEST_LAB_VENV`, from `infra/test-env.sh`).
//! One test per step, so nextest runs them in parallel.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn lab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/lab")
}

/// Runs step `name` and compares its output with the committed one.
async fn check_step(name: &str) {
    let script = lab().join("steps").join(format!("{name}.sh"));
    let expected = std::fs::read_to_string(lab().join("expected").join(format!("{name}.out"))).expect("expected output");
    let page = std::fs::read_to_string(lab().join(format!("{name}.md"))).expect("step page");
    let text = std::fs::read_to_string(&script).expect("script");
    assert!(page.contains(&text), "docs/lab/{name}.md does not show its script verbatim");
    assert!(page.contains(&expected), "docs/lab/{name}.md does not show its expected output verbatim");

    let venv = std::env::var("PRISM_TEST_LAB_VENV").expect("PRISM_TEST_LAB_VENV (run the tests through infra/test.sh)");
    let path = format!("{venv}/bin:{}", std::env::var("PATH").unwrap_or_default());
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    // Steps on Kafka or PostgreSQL get private servers: `prism.quotes` and consumer groups on a
    // broker shared with other tests would change their output.
    let servers = (text.contains("PRISM_KAFKA_BROKERS") || text.contains("PRISM_DATABASE_URL")).then(TestEnv::start);
    let server_vars: Vec<(String, String)> = servers
        .as_ref()
        .map(|e| ["PRISM_KAFKA_BROKERS", "PRISM_DATABASE_URL"].iter().map(|k| (k.to_string(), e.var(k))).collect())
        .unwrap_or_default();
    let up = if text.contains("Needs a running Prism at $PRISM") {
        let mut config = test_config(&dir.path().join("prism"));
        config.feed.no_feed = true;
        Some(start(config).await)
    } else {
        None
    };
    let base = up.as_ref().map(|u| u.base.clone()).unwrap_or_default();
    let out = tokio::task::spawn_blocking({
        let (script, work) = (script.clone(), work.clone());
        move || {
            Command::new("bash")
                .arg(script)
                .env("PRISM", base)
                .env("PRISM_BIN", env!("CARGO_BIN_EXE_prism"))
                .env("LAB_WORK", work)
                .env("PATH", path)
                .envs(server_vars)
                .output()
                .expect("run the step")
        }
    })
    .await
    .expect("join");
    if let Some(up) = up {
        up.stop().await;
    }
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{name} failed ({}); stdout:\n{got}\nstderr:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let first_diff = got.lines().zip(expected.lines()).position(|(g, e)| g != e);
    assert_eq!(
        got,
        expected,
        "{name}: the output differs from docs/lab/expected/{name}.out (first differing line: {first_diff:?}); stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One `#[tokio::test]` per step; `every_step_has_a_test` keeps this list complete.
macro_rules! steps {
    ($($test:ident => $name:literal),* $(,)?) => {
        const STEPS: &[&str] = &[$($name),*];
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                check_step($name).await;
            }
        )*
    };
}

steps! {
    step_01_start => "01-start",
    step_02_partitions => "02-partitions",
    step_03_late_trade => "03-late-trade",
    step_04_lambda_merge => "04-lambda-merge",
    step_05_delivery => "05-delivery",
    step_06_lambda_vs_kappa => "06-lambda-vs-kappa",
    step_07_cdc_and_logs => "07-cdc-and-logs",
    step_08_duckdb_sql => "08-duckdb-sql",
    step_09_kafka_client => "09-kafka-client",
}

/// The notebook (`docs/lab/prism-lab.ipynb`) re-executed by `docs/lab/check_notebook.py`
/// prints what it committed, cell by cell, and draws its pictures again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notebook_gives_its_committed_outputs() {
    let venv = std::env::var("PRISM_TEST_LAB_VENV").expect("PRISM_TEST_LAB_VENV (run the tests through infra/test.sh)");
    let work = tempfile::tempdir().expect("tempdir");
    let out = tokio::task::spawn_blocking({
        let work = work.path().to_path_buf();
        move || {
            Command::new(format!("{venv}/bin/python"))
                .arg(lab().join("check_notebook.py"))
                .env("PRISM_BIN", env!("CARGO_BIN_EXE_prism"))
                .env("LAB_WORK", work)
                .output()
                .expect("run check_notebook.py")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the notebook differs from its committed outputs:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.trim_end().ends_with(" passed, 0 failed"), "{stdout}");
}

#[test]
fn every_step_has_a_test_and_an_index_entry() {
    let mut scripts: Vec<String> = std::fs::read_dir(lab().join("steps"))
        .expect("docs/lab/steps")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .collect();
    scripts.sort();
    let mut listed: Vec<String> = STEPS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(scripts, listed, "docs/lab/steps/*.sh and the steps! list in this file differ");
    let index = std::fs::read_to_string(lab().join("README.md")).expect("docs/lab/README.md");
    for step in STEPS {
        assert!(index.contains(&format!("({step}.md)")), "docs/lab/README.md does not link {step}.md");
    }
}
