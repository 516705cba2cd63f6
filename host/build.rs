//! Builds the three built-in adapters into components and embeds them in the binary, so
//! `deskgate` needs nothing but itself to run (third-party adapters load from a directory).

use std::path::PathBuf;

const ADAPTERS: &[(&str, &str)] = &[
    ("zendesk", "deskgate-adapter-zendesk"),
    ("freshdesk", "deskgate-adapter-freshdesk"),
    ("intercom", "deskgate-adapter-intercom"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest.parent().unwrap().to_path_buf();
    deskgate_component_build::rerun_if_changed(
        &workspace,
        &["components/sdk", "components/zendesk", "components/freshdesk", "components/intercom"],
    );
    let packages: Vec<&str> = ADAPTERS.iter().map(|(_, p)| *p).collect();
    let built = deskgate_component_build::build_components(&workspace, "wasm-builtin", &packages);
    let mut src = String::from("/// Built-in adapter components: (name, component bytes).\npub static ADAPTERS: &[(&str, &[u8])] = &[\n");
    for ((name, _), (_, path)) in ADAPTERS.iter().zip(built) {
        src.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", path.display().to_string()));
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("builtin.rs");
    std::fs::write(out, src).unwrap();
}
