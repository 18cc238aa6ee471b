//! The compose stack's files agree with the code (no Docker engine runs here; the files' syntax
//! is checked by `infra/check-compose.sh`): every Grafana panel's query names a metric Prism
//! exports, every Prism container runs a real `prism` subcommand, and Prometheus scrapes every
//! Prism container that serves HTTP.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `prism_*` names in `text` (identifier characters after the prefix).
fn prism_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("prism_") {
        let boundary = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'_';
        let name: String = rest[i..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        if boundary {
            out.push(name.clone());
        }
        rest = &rest[i + name.len().max(1)..];
    }
    out
}

/// Every metric name the crates declare: `pub const X: &str = "prism_…";` in their sources.
fn exported_metrics() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<PathBuf> = ["core/src", "ingest/src", "speed-layer/src", "batch-layer/src", "serving/src", "services/src"]
        .iter()
        .map(|d| root().join(d))
        .collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                for line in text.lines().filter(|l| l.contains(": &str = \"prism_")) {
                    out.extend(prism_names(line));
                }
            }
        }
    }
    out
}

#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let exported = exported_metrics();
    assert!(exported.contains("prism_ingest_events_appended_total") && exported.len() > 40, "{exported:?}");
    let dashboard: serde_json::Value = serde_json::from_str(&read("infra/compose/grafana/dashboards/prism.json")).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in ["Ingest rate", "Consumer lag", "horizon age", "Replay progress", "End-to-end latency", "Dead letters"] {
        assert!(titles.iter().any(|t| t.contains(wanted)), "no panel for {wanted}: {titles:?}");
    }
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names = prism_names(expr);
            assert!(!names.is_empty(), "{expr} names no Prism metric");
            for name in names {
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
                assert!(
                    exported.contains(&name) || exported.contains(base),
                    "panel {:?}: {name} is not a metric Prism exports",
                    panel["title"]
                );
            }
        }
    }
}

/// (service, command, HTTP port) of every container running the Prism image.
fn prism_containers() -> Vec<(String, String, Option<u16>)> {
    let compose = read("docker-compose.yml");
    let mut out = Vec::new();
    let mut current: Option<(String, bool, Option<String>, Option<u16>)> = None;
    let mut in_services = false;
    let flush = |c: Option<(String, bool, Option<String>, Option<u16>)>, out: &mut Vec<_>| {
        if let Some((name, prism, Some(command), port)) = c {
            if prism {
                out.push((name, command, port));
            }
        }
    };
    for line in compose.lines() {
        if line == "services:" {
            in_services = true;
            continue;
        }
        if !line.starts_with(' ') && !line.is_empty() {
            in_services = false;
        }
        if !in_services {
            continue;
        }
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')).filter(|l| !l.starts_with(' ')) {
            flush(current.take(), &mut out);
            current = Some((name.to_string(), false, None, None));
            continue;
        }
        let Some(c) = current.as_mut() else { continue };
        let t = line.trim();
        if t == "<<: *prism" {
            c.1 = true;
        } else if let Some(cmd) = t.strip_prefix("command: [\"").and_then(|r| r.split('"').next()) {
            c.2 = Some(cmd.to_string());
        } else if let Some(addr) = t.strip_prefix("PRISM_HTTP_ADDR: 0.0.0.0:") {
            c.3 = addr.parse().ok();
        }
    }
    flush(current, &mut out);
    out
}

#[test]
fn every_prism_container_runs_a_real_subcommand_and_is_scraped() {
    let containers = prism_containers();
    let names: Vec<&str> = containers.iter().map(|c| c.0.as_str()).collect();
    for wanted in [
        "ingest-api",
        "speed-layer",
        "archiver",
        "batch-layer",
        "serving",
        "feed",
        "quote-sim",
        "quote-poller",
        "ingest-cdc",
        "ingest-logs",
    ] {
        assert!(names.contains(&wanted), "no {wanted} container: {names:?}");
    }
    let prometheus = read("infra/compose/prometheus.yml");
    for (service, command, port) in &containers {
        let help = Command::new(env!("CARGO_BIN_EXE_prism")).args([command.as_str(), "--help"]).output().expect("run prism");
        assert!(help.status.success(), "{service}: `prism {command}` is not a subcommand");
        let port = port.unwrap_or_else(|| panic!("{service} sets no PRISM_HTTP_ADDR"));
        if service != "quote-sim" {
            assert!(prometheus.contains(&format!("\"{service}:{port}\"")), "Prometheus does not scrape {service}:{port}");
        }
    }
    let env = read(".env");
    assert!(env.lines().any(|l| l == "PRISM_ARCHITECTURE=lambda" || l == "PRISM_ARCHITECTURE=kappa"), "{env}");
    assert!(env.lines().any(|l| l == "COMPOSE_PROFILES=${PRISM_ARCHITECTURE}"), "the profiles follow the architecture: {env}");
}

#[test]
fn the_compose_database_has_the_table_the_lab_script_plays_into() {
    // postgres-init.sql creates the flights table for the stack; load_flights.py creates it when
    // absent: the two definitions must be the same table.
    let script = read("infra/lab/load_flights.py");
    let schema = script.split("SCHEMA = \"\"\"\n").nth(1).and_then(|s| s.split("\"\"\"").next()).expect("SCHEMA in load_flights.py");
    let init = read("infra/compose/postgres-init.sql");
    let normalize = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(normalize(&init).contains(&normalize(schema)), "infra/compose/postgres-init.sql no longer creates load_flights.py's table");
    assert!(init.contains("CREATE PUBLICATION prism_cdc FOR TABLES IN SCHEMA public"), "{init}");
}

#[test]
fn the_image_builds_with_the_workspace_rust_version() {
    let manifest = read("Cargo.toml");
    let msrv = manifest.lines().find_map(|l| l.strip_prefix("rust-version = \"")).and_then(|v| v.strip_suffix('"')).expect("rust-version");
    let dockerfile = read("infra/Dockerfile");
    let image =
        dockerfile.lines().find_map(|l| l.strip_prefix("FROM rust:")).and_then(|r| r.split('-').next()).expect("FROM rust:<version>");
    assert_eq!(image, msrv, "infra/Dockerfile builds with Rust {image}, the workspace needs {msrv}");
}
