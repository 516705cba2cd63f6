//! Compiled-component cache.
//!
//! Compiling a component with Cranelift takes hundreds of milliseconds; loading a precompiled one
//! takes about a millisecond. The cache key is the SHA-256 of the component's bytes and of the
//! engine's compatibility hash (wasmtime version, target, settings), so a changed component or an
//! upgraded runtime never picks up a stale artifact. Writes go to a temporary file first and are
//! renamed into place, so a crash never leaves a torn artifact behind.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// A `Hasher` that feeds SHA-256, so the engine's compatibility hash is stable across processes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only used through `write`")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn key(engine: &Engine, bytes: &[u8]) -> String {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        h.0.update(bytes);
        hex::encode(h.0.finalize())
    }

    /// The compiled component for `bytes`, from the cache when present and valid.
    ///
    /// # Errors
    /// When the bytes do not compile. Cache read or write problems are not errors: the component
    /// is compiled and the problem logged.
    pub fn load_or_compile(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let path = self.dir.join(format!("{}.cwasm", Self::key(engine, bytes)));
        // Read the artifact into memory rather than mapping the file: an operator truncating or
        // replacing a cache file under a running gateway must not be able to crash it.
        if let Ok(artifact) = std::fs::read(&path) {
            // SAFETY: the file is named by the SHA-256 of the source component and the engine's
            // compatibility hash, and only this process family writes the cache directory, which
            // should be as private as the gateway's database. wasmtime also checks the artifact's
            // header against the engine and refuses a mismatch.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize(engine, &artifact) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached component"),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write the component cache");
        }
        Ok(component)
    }

    fn store(&self, path: &std::path::Path, component: &Component) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let data = component.serialize()?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
