//! `wasi:config/store@0.2.0-draft-2024-09-27`, the configuration interface the edge imports.
//!
//! This exact version is the one Spin 3.x and 4.x provide (backed by Spin variables) and
//! spin-sdk 5 binds. (`wasmtime-wasi-config` 48 implements `0.2.0-rc.1`, a different package
//! version that would not satisfy the edge's import, hence this small host implementation.)

use std::collections::BTreeMap;

use wasmtime::component::{HasData, Linker};

#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        inline: "
            package wasi:config@0.2.0-draft-2024-09-27;

            interface store {
                variant error { upstream(string), io(string) }
                get: func(key: string) -> result<option<string>, error>;
                get-all: func() -> result<list<tuple<string, string>>, error>;
            }

            world imports { import store; }
        ",
        world: "imports",
    });
}

use generated::wasi::config::store as api;

/// A read-only view of the configuration values, as the store's data hands it out.
#[derive(Debug)]
pub struct ConfigStore<'a> {
    vars: &'a BTreeMap<String, String>,
}

impl<'a> ConfigStore<'a> {
    /// A view of `vars`.
    pub fn new(vars: &'a BTreeMap<String, String>) -> Self {
        Self { vars }
    }
}

impl api::Host for ConfigStore<'_> {
    fn get(&mut self, key: String) -> Result<Option<String>, api::Error> {
        Ok(self.vars.get(&key).cloned())
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, api::Error> {
        Ok(self.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

struct HasConfig;

impl HasData for HasConfig {
    type Data<'a> = ConfigStore<'a>;
}

/// Add `wasi:config/store` to `linker`, reading values through `get`.
///
/// # Errors
/// When the interface is already defined in `linker`.
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> ConfigStore<'_>) -> anyhow::Result<()> {
    api::add_to_linker::<T, HasConfig>(linker, get)?;
    Ok(())
}
