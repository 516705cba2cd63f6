//! Pre-composition of deskgate's edge component with one adapter.
//!
//! Spin satisfies the edge's `deskgate:adapter/adapter@0.1.0` import itself, from
//! `[component.<id>.dependencies]` in `spin.toml`. Runtimes without component dependencies
//! (SpinKube's shim, plain `wasmtime serve`, deskgate's own `deskgate edge`) need one component
//! with the adapter already plugged in: [`compose`] does that on bytes with `wac-graph` (the
//! library behind `wac plug`), so neither a build script nor CI needs a CLI install.
//!
//! ```no_run
//! let edge = std::fs::read("deskgate_edge.wasm")?;
//! let adapter = std::fs::read("deskgate_adapter_zendesk.wasm")?;
//! std::fs::write("edge-zendesk.wasm", deskgate_edge_compose::compose(&edge, &adapter)?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions, PlugError, plug};

/// The interface the edge imports and every adapter exports.
pub const ADAPTER_INTERFACE: &str = "deskgate:adapter/adapter@0.1.0";

/// Why a composition failed.
#[derive(Debug)]
pub struct ComposeError(String);

impl std::fmt::Display for ComposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ComposeError {}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Plug `adapter`'s export of [`ADAPTER_INTERFACE`] into `edge`'s import of it; returns the
/// composed component, validated, which imports only what the two import otherwise (WASI) and
/// exports what `edge` exports (`wasi:http/incoming-handler`).
///
/// # Errors
/// When either is not a component, or the adapter does not export a compatible adapter
/// interface (the message says which).
pub fn compose(edge: &[u8], adapter: &[u8]) -> Result<Vec<u8>, ComposeError> {
    let mut graph = CompositionGraph::new();
    let edge_pkg = Package::from_bytes("deskgate:edge", None, edge.to_vec(), graph.types_mut())
        .map_err(|e| ComposeError(format!("the edge is not a loadable component: {e:#}")))?;
    let adapter_pkg = Package::from_bytes("deskgate:adapter-impl", None, adapter.to_vec(), graph.types_mut())
        .map_err(|e| ComposeError(format!("the adapter is not a loadable component: {e:#}")))?;
    let edge_id = graph
        .register_package(edge_pkg)
        .map_err(|e| ComposeError(format!("register the edge: {}", chain(&e))))?;
    let adapter_id = graph
        .register_package(adapter_pkg)
        .map_err(|e| ComposeError(format!("register the adapter: {}", chain(&e))))?;
    plug(&mut graph, vec![adapter_id], edge_id).map_err(|e| match e {
        PlugError::NoPlugHappened => ComposeError(format!(
            "the adapter exports no `{ADAPTER_INTERFACE}` the edge can import: build it against wit/adapter.wit (deskgate-adapter-sdk)"
        )),
        other => ComposeError(format!("plug the adapter into the edge: {}", chain(&other))),
    })?;
    graph
        .encode(EncodeOptions::default())
        .map_err(|e| ComposeError(format!("encode the composition: {}", chain(&e))))
}
