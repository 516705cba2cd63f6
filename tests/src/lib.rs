//! Support for deskgate's end-to-end tests (`tests/all/`).
//!
//! `build.rs` compiles the test components (`tests/components/*`) and the docs' example adapter
//! (`docs/example-adapter`) to wasm32-wasip2 components and writes their paths into
//! `artifacts.rs`, included here: [`MISBEHAVING`], [`WRONG`], [`EXAMPLE_ACMEDESK`], [`ALL`] and the
//! [`foreach_component!`] macro. The helpers below build runtimes, connections, responses and
//! temporary directories for the tests.

use deskgate::bindings::{Connection, HttpResponse};
use deskgate::runtime::{AdapterRuntime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// The bytes of a built component.
///
/// # Panics
/// When the file is missing, which means the build script did not run.
pub fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read component {path}: {e}"))
}

/// A compile cache shared by every test in this build (under `OUT_DIR`, so in the target
/// directory): each component is compiled by Cranelift once, not once per test.
pub fn shared_cache_dir() -> PathBuf {
    PathBuf::from(concat!(env!("OUT_DIR"), "/compile-cache"))
}

/// A runtime configuration for tests: the default limits, a smaller instance pool (tests run in
/// parallel, each with its own runtime) and the shared compile cache.
pub fn test_config() -> RuntimeConfig {
    RuntimeConfig {
        max_instances: 64,
        warm_per_adapter: 8,
        cache_dir: Some(shared_cache_dir()),
        ..RuntimeConfig::default()
    }
}

/// A runtime with tight limits for sandbox tests: `deadline` per call and `memory_cap` bytes.
pub fn sandbox_config(deadline: Duration, memory_cap: usize) -> RuntimeConfig {
    RuntimeConfig {
        call_deadline: deadline,
        memory_cap,
        ..test_config()
    }
}

/// A runtime with `components` (paths) loaded.
///
/// # Errors
/// When the engine cannot be built or a component does not load.
pub fn runtime_with(config: RuntimeConfig, components: &[&str]) -> anyhow::Result<AdapterRuntime> {
    let mut rt = AdapterRuntime::new(config)?;
    for path in components {
        rt.load(path, &component(path))?;
    }
    Ok(rt)
}

/// A connection on `plan` whose agent is `1001`.
pub fn connection(plan: &str) -> Connection {
    Connection {
        id: "test".to_string(),
        plan: plan.to_string(),
        agent_id: Some("1001".to_string()),
        settings: Vec::new(),
    }
}

/// A response with JSON content type.
pub fn json_response(status: u16, body: &str) -> HttpResponse {
    response(status, &[("content-type", "application/json")], body)
}

/// A response.
pub fn response(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

/// A directory under the system's temporary directory, removed (with its contents) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new, empty directory whose name contains `label`, the process id and a counter.
    ///
    /// # Panics
    /// When the directory cannot be created.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("deskgate-{label}-{}-{n}", std::process::id()));
        // A leftover from a crashed run with the same pid is stale.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
