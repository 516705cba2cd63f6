//! `deskgate-edge-compose EDGE.wasm OUT.wasm PLATFORM=ADAPTER.wasm...`: the edge with every
//! adapter import plugged, for runtimes without component dependencies.

use std::process::ExitCode;

const USAGE: &str = "usage: deskgate-edge-compose EDGE.wasm OUT.wasm PLATFORM=ADAPTER.wasm... \
    (e.g. zendesk=deskgate_adapter_zendesk.wasm, one per adapter import of the edge)";

fn run(args: &[String]) -> Result<String, String> {
    let [edge, out, adapters @ ..] = args else { return Err(USAGE.to_owned()) };
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("cannot read {p}: {e}"));
    let edge = read(edge)?;
    let mut loaded = Vec::new();
    for arg in adapters {
        let (name, path) = arg.split_once('=').ok_or_else(|| format!("`{arg}` is not PLATFORM=ADAPTER.wasm\n{USAGE}"))?;
        loaded.push((name.to_owned(), read(path)?));
    }
    let pairs: Vec<(&str, &[u8])> = loaded.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let bytes = deskgate_edge_compose::compose(&edge, &pairs).map_err(|e| e.to_string())?;
    std::fs::write(out, bytes).map_err(|e| format!("cannot write {out}: {e}"))?;
    Ok(out.clone())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
