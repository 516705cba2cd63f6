//! `deskgate-edge-compose EDGE.wasm ADAPTER.wasm OUT.wasm`: one pre-composed edge per platform.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [edge, adapter, out] = args.as_slice() else {
        eprintln!("usage: deskgate-edge-compose EDGE.wasm ADAPTER.wasm OUT.wasm");
        return ExitCode::from(2);
    };
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("cannot read {p}: {e}"));
    let result = read(edge)
        .and_then(|e| read(adapter).map(|a| (e, a)))
        .and_then(|(e, a)| deskgate_edge_compose::compose(&e, &a).map_err(|e| e.to_string()))
        .and_then(|bytes| std::fs::write(out, bytes).map_err(|e| format!("cannot write {out}: {e}")));
    match result {
        Ok(()) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
