//! `deskgate edge`, run as a user would: every bad argument is refused with the flag and the fix.
//! (Serving a real edge component from the CLI's arguments is tested in
//! `tests/tests/all/edge.rs`, where the component is built.)

use std::process::Command;

fn deskgate_edge(args: &[&str]) -> (bool, String) {
    let cache = std::env::temp_dir().join(format!("deskgate-edge-cli-cache-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_deskgate"))
        .arg("edge")
        .args(args)
        .env("DESKGATE_CACHE_DIR", cache)
        .output()
        .expect("run deskgate edge");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("deskgate-edge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn bad_arguments_name_the_flag_and_the_fix() {
    let junk = temp_file("junk.wasm", b"not a component");
    let junk = junk.to_str().unwrap();
    let good_vars = ["--config-var", "core_url=http://127.0.0.1:8080", "--config-var", "core_token=t"];
    let bad_toml = temp_file("bad.toml", b"core_url = [1, 2]");
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["--component", "/nonexistent/edge.wasm"], &["--component", "/nonexistent/edge.wasm"]),
        (vec!["--component", junk, "--config-var", "core_url"], &["--config-var", "KEY=VALUE"]),
        (vec!["--component", junk, "--config-var", "core_token=t"], &["core_url"]),
        (vec!["--component", junk, "--config-var", "core_url=ftp://x", "--config-var", "core_token=t"], &["core_url", "http"]),
        (vec!["--component", junk, "--config-var", "core_url=http://127.0.0.1:8080"], &["core_token", "DESKGATE_EDGE_TOKEN"]),
        (vec!["--component", junk, "--listen", "nowhere"], &["--listen", "127.0.0.1:8090"]),
        (vec!["--component", junk, "--config-file", bad_toml.to_str().unwrap()], &["core_url", "expected a string"]),
        ([&["--component", junk, "--adapter", "nope"][..], &good_vars].concat(), &["--adapter", "zendesk"]),
        ([&["--component", junk][..], &good_vars].concat(), &["--component", "not a loadable component"]),
    ];
    for (args, needles) in cases {
        let (ok, stderr) = deskgate_edge(&args);
        assert!(!ok, "{args:?} should fail");
        for n in needles {
            assert!(stderr.contains(n), "{args:?}: missing {n:?} in:\n{stderr}");
        }
    }
}

#[test]
fn help_lists_the_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_deskgate")).args(["edge", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--component", "--adapter", "--listen", "--config-var", "--config-file"] {
        assert!(text.contains(flag), "missing {flag} in:\n{text}");
    }
}
