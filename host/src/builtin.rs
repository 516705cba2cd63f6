//! The adapters compiled into this binary (see `host/build.rs`).

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
