//! deskgate's end-to-end tests: one binary with one module per area, as wasmtime lays out
//! `crates/wasi-http/tests/all/`. The components they run are built by `tests/build.rs`.
//!
//! - [`components`]: every built component has a test named after it, and loads.
//! - [`sandbox`]: a component that loops, traps or hogs memory fails that one call with an error
//!   naming the adapter and the limit, and every other call carries on.
//! - [`platforms`]: each built-in adapter against its simulator, every operation, over HTTP.
//! - [`loading`]: bad files, wrong contracts, duplicate ids, directories, the compile cache.
//! - [`conformance`]: the adapter check passes our adapters and the guide's example, and fails a wrong one.
//! - [`docs`]: the guide shows the example adapter verbatim, and the example works.
//! - [`edge`]: the Spin edge component served by the host: simulators' webhooks reach the gateway
//!   through it once, forgeries stop at it, a down gateway means 503 and a later redelivery.

/// Fails to compile unless the current module has an item called `$name`: with
/// `deskgate_tests::foreach_component!`, it makes every component built by `tests/build.rs` need a
/// test of its own name.
macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::$name as _;
    };
}

mod components;
mod conformance;
mod docs;
mod edge;
mod loading;
mod platforms;
mod sandbox;
