//! Pre-composition of deskgate's edge component with its adapters.
//!
//! The edge imports one adapter per platform under the platform's id (`zendesk`, `freshdesk`,
//! `intercom`), each satisfied by an adapter component's export of [`ADAPTER_INTERFACE`]. Spin
//! plugs them in itself, from `[component.edge.dependencies]` in `spin.toml`. Runtimes without
//! component dependencies (SpinKube's shim, plain `wasmtime serve`, Spin before 4.0, deskgate's
//! own `deskgate edge`) need one component with the adapters already inside: [`compose`] builds
//! it on bytes with `wac-graph` (the library behind `wac plug`), so neither a build script nor CI
//! needs a CLI install.
//!
//! ```no_run
//! let edge = std::fs::read("deskgate_edge.wasm")?;
//! let zendesk = std::fs::read("deskgate_adapter_zendesk.wasm")?;
//! let freshdesk = std::fs::read("deskgate_adapter_freshdesk.wasm")?;
//! let intercom = std::fs::read("deskgate_adapter_intercom.wasm")?;
//! let adapters = [("zendesk", &zendesk[..]), ("freshdesk", &freshdesk[..]), ("intercom", &intercom[..])];
//! std::fs::write("edge-composed.wasm", deskgate_edge_compose::compose(&edge, &adapters)?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions};

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

/// The edge's adapter imports, by name: its imports with a plain name (no `:`; every WASI import
/// is a `namespace:package/interface`), one per platform.
///
/// # Errors
/// When `edge` is not a loadable component.
pub fn adapter_imports(edge: &[u8]) -> Result<Vec<String>, ComposeError> {
    let mut graph = CompositionGraph::new();
    let pkg = load_edge(&mut graph, edge)?;
    Ok(plain_imports(&graph, &pkg))
}

fn load_edge(graph: &mut CompositionGraph, edge: &[u8]) -> Result<Package, ComposeError> {
    Package::from_bytes("deskgate:edge", None, edge.to_vec(), graph.types_mut())
        .map_err(|e| ComposeError(format!("the edge is not a loadable component: {e:#}")))
}

fn plain_imports(graph: &CompositionGraph, pkg: &Package) -> Vec<String> {
    graph.types()[pkg.ty()].imports.keys().filter(|name| !name.contains(':')).cloned().collect()
}

/// Plug each `(name, adapter)`'s export of [`ADAPTER_INTERFACE`] into `edge`'s import `name`;
/// returns the composed component, validated, which imports only what they import otherwise
/// (WASI, the adapter types) and exports what `edge` exports (`wasi:http/incoming-handler`).
///
/// # Errors
/// When a part is not a component, an adapter import of the edge is given no adapter or two (or
/// a name the edge does not import is given one), or an adapter does not export an adapter
/// interface the edge's import accepts; each message names the part and the fix.
pub fn compose(edge: &[u8], adapters: &[(&str, &[u8])]) -> Result<Vec<u8>, ComposeError> {
    let mut graph = CompositionGraph::new();
    let edge_pkg = load_edge(&mut graph, edge)?;
    let wanted = plain_imports(&graph, &edge_pkg);
    if wanted.is_empty() {
        return Err(ComposeError(
            "the edge has no adapter imports: give the edge component as built (deskgate_edge.wasm), not an adapter or an edge composed already".to_owned(),
        ));
    }
    let given: Vec<&str> = adapters.iter().map(|(name, _)| *name).collect();
    if let Some(missing) = wanted.iter().find(|w| !given.contains(&w.as_str())) {
        return Err(ComposeError(format!(
            "the edge imports the `{missing}` adapter and none was given for it: pass `{missing}=<the {missing} adapter's .wasm>` (the edge imports {})",
            wanted.join(", ")
        )));
    }
    if let Some((_, twice)) = given.iter().enumerate().find(|(i, g)| given[..*i].contains(g)) {
        return Err(ComposeError(format!("the `{twice}` adapter is given twice: give each adapter import one adapter")));
    }
    if let Some(extra) = given.iter().find(|g| !wanted.iter().any(|w| w == *g)) {
        return Err(ComposeError(format!(
            "the edge has no `{extra}` adapter import (it imports {}): add the platform to components/edge/wit/world.wit, or leave it out",
            wanted.join(", ")
        )));
    }
    let edge_id = graph
        .register_package(edge_pkg)
        .map_err(|e| ComposeError(format!("register the edge: {}", chain(&e))))?;
    let edge_instance = graph.instantiate(edge_id);
    for (name, bytes) in adapters {
        let pkg = Package::from_bytes(&format!("deskgate:adapter-{name}"), None, bytes.to_vec(), graph.types_mut())
            .map_err(|e| ComposeError(format!("the {name} adapter is not a loadable component: {e:#}")))?;
        let id = graph
            .register_package(pkg)
            .map_err(|e| ComposeError(format!("register the {name} adapter: {}", chain(&e))))?;
        let instance = graph.instantiate(id);
        let export = graph.alias_instance_export(instance, ADAPTER_INTERFACE).map_err(|_| {
            ComposeError(format!(
                "the {name} adapter exports no `{ADAPTER_INTERFACE}`: build it against wit/adapter.wit (deskgate-adapter-sdk)"
            ))
        })?;
        graph.set_instantiation_argument(edge_instance, name, export).map_err(|e| {
            ComposeError(format!(
                "the {name} adapter's `{ADAPTER_INTERFACE}` does not fit the edge's `{name}` import (rebuild both from this checkout's wit/): {}",
                chain(&e)
            ))
        })?;
    }
    let exports: Vec<String> = graph.types()[graph[edge_id].ty()].exports.keys().cloned().collect();
    for name in exports {
        let export = graph
            .alias_instance_export(edge_instance, &name)
            .map_err(|e| ComposeError(format!("export the edge's `{name}`: {}", chain(&e))))?;
        graph
            .export(export, &name)
            .map_err(|e| ComposeError(format!("export the edge's `{name}`: {}", chain(&e))))?;
    }
    graph
        .encode(EncodeOptions::default())
        .map_err(|e| ComposeError(format!("encode the composition: {}", chain(&e))))
}
