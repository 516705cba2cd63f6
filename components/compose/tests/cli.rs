//! `deskgate-edge-compose`'s arguments, run as `spin-3.toml`'s build runs it: every mistake is
//! refused with what was wrong and the usage. (Composing real components through the library is
//! tested in `tests/tests/all/edge.rs`, where they are built.)

use std::process::Command;

fn compose(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_deskgate-edge-compose")).args(args).output().expect("run deskgate-edge-compose");
    assert!(out.stdout.is_empty(), "nothing on stdout when it fails");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_arguments_are_refused_with_the_usage_or_the_file() {
    let dir = std::env::temp_dir().join(format!("deskgate-compose-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"not a component").unwrap();
    let junk = junk.to_str().unwrap();
    let out = dir.join("out.wasm");
    let out = out.to_str().unwrap();
    let junk_adapter = format!("zendesk={junk}");
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec![], &["usage: deskgate-edge-compose EDGE.wasm OUT.wasm PLATFORM=ADAPTER.wasm"]),
        (vec![junk, out, "zendesk"], &["`zendesk` is not PLATFORM=ADAPTER.wasm", "usage:"]),
        (vec!["/nonexistent/edge.wasm", out, "zendesk=x.wasm"], &["cannot read /nonexistent/edge.wasm"]),
        (vec![junk, out, "zendesk=/nonexistent/z.wasm"], &["cannot read /nonexistent/z.wasm"]),
        (vec![junk, out, &junk_adapter], &["the edge is not a loadable component"]),
    ];
    for (args, needles) in cases {
        let (code, stderr) = compose(&args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{args:?}: missing {n:?} in {stderr}");
        }
    }
    assert!(!std::path::Path::new(out).exists(), "no output written");
}
