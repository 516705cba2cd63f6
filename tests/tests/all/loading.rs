//! Loading adapters: files that are not components, components that do not fit the contract,
//! two adapters with one id, a directory with good and bad files, and the compile cache.

use deskgate::bindings::{Operation, Step};
use deskgate::runtime::{AdapterRuntime, LoadError, RuntimeConfig};
use deskgate_tests::{MISBEHAVING, TempDir, component, connection, test_config};
use std::path::Path;

/// The smallest core module: just the header.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";
/// The smallest component: just the header (layer 1). It exports nothing.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";
/// A component that imports a function `x` the host does not provide:
/// `(component (import "x" (func)))`.
const IMPORTS_UNKNOWN: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, // header
    0x07, 0x05, 0x01, 0x40, 0x00, 0x01, 0x00, // type section: one `func()` type
    0x0a, 0x06, 0x01, 0x00, 0x01, b'x', 0x01, 0x00, // import section: "x" as func type 0
];

fn runtime() -> AdapterRuntime {
    AdapterRuntime::new(test_config()).expect("runtime")
}

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path.display().to_string()
}

fn works(rt: &AdapterRuntime) {
    let adapter = rt.get("misbehaving").expect("misbehaving is registered");
    let step = adapter.start(
        &connection("standard"),
        &Operation::GetTicket("ok-9".into()),
    );
    assert!(
        matches!(&step, Ok(Ok(Step::Send(p))) if p.request.path == "/tickets/9"),
        "{step:?}"
    );
}

#[test]
fn a_file_that_is_not_wasm_is_a_compile_error_naming_it() {
    let dir = TempDir::new("not-wasm");
    let path = write(&dir, "notes.wasm", b"these are my notes, not a component\n");
    let mut rt = runtime();
    let err = rt
        .load(&path, &component(&path))
        .expect_err("text is not a component");
    assert!(
        matches!(&err, LoadError::Compile { source_name, .. } if *source_name == path),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&path) && text.contains("wasm32-wasip2"),
        "{text}"
    );
    assert_eq!(rt.adapters().count(), 0);
}

#[test]
fn a_core_module_is_refused_with_a_message_naming_it() {
    let mut rt = runtime();
    let err = rt
        .load("plugins/core.wasm", CORE_MODULE)
        .expect_err("a core module is not an adapter");
    // A core module fails in the component parser, so the host reports it as not a loadable
    // component; either way the message names the file and the fix.
    assert!(
        matches!(&err, LoadError::Compile { source_name, .. } | LoadError::Contract { source_name, .. }
            if source_name == "plugins/core.wasm"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("plugins/core.wasm") && text.contains("component"),
        "{text}"
    );
}

#[test]
fn a_component_without_the_adapter_export_breaks_the_contract() {
    let mut rt = runtime();
    let err = rt
        .load("empty.wasm", EMPTY_COMPONENT)
        .expect_err("exports nothing");
    assert!(
        matches!(&err, LoadError::Contract { source_name, .. } if source_name == "empty.wasm"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("empty.wasm") && text.contains("deskgate:adapter/adapter@0.1.0"),
        "{text}"
    );
}

#[test]
fn a_component_importing_what_the_host_refuses_breaks_the_contract() {
    let mut rt = runtime();
    let err = rt
        .load("imports.wasm", IMPORTS_UNKNOWN)
        .expect_err("imports an unknown function");
    assert!(
        matches!(&err, LoadError::Contract { source_name, .. } if source_name == "imports.wasm"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("import nothing that does IO"),
        "{err}"
    );
}

#[test]
fn two_components_with_one_id_are_a_duplicate() {
    let mut rt = runtime();
    let bytes = component(MISBEHAVING);
    rt.load("first.wasm", &bytes).expect("the first copy loads");
    let err = rt.load("second.wasm", &bytes).expect_err("the id is taken");
    let LoadError::Duplicate { id, first, second } = &err else {
        panic!("expected a duplicate, got {err:?}")
    };
    assert_eq!(
        (id.as_str(), first.as_str(), second.as_str()),
        ("misbehaving", "first.wasm", "second.wasm")
    );
    let text = err.to_string();
    assert!(
        text.contains("misbehaving") && text.contains("first.wasm") && text.contains("second.wasm"),
        "{text}"
    );
    // The first one is still registered and working.
    assert_eq!(rt.adapters().count(), 1);
    assert_eq!(
        rt.get("misbehaving").expect("registered").source(),
        "first.wasm"
    );
    works(&rt);
}

#[test]
fn load_dir_loads_the_good_and_reports_the_bad() {
    let dir = TempDir::new("load-dir");
    write(&dir, "good.wasm", &component(MISBEHAVING));
    let bad = write(&dir, "bad.wasm", b"not a component");
    write(&dir, "README.txt", b"only *.wasm files are loaded");
    let mut rt = runtime();
    let errors = rt.load_dir(dir.path()).expect("the directory is readable");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        matches!(&errors[0], LoadError::Compile { source_name, .. } if *source_name == bad),
        "{errors:?}"
    );
    assert!(errors[0].to_string().contains("bad.wasm"));
    assert_eq!(
        rt.adapters()
            .map(|a| a.id().to_string())
            .collect::<Vec<_>>(),
        ["misbehaving"]
    );
    works(&rt);
}

#[test]
fn load_dir_of_a_missing_directory_is_an_io_error() {
    let dir = TempDir::new("missing");
    let missing = dir.join("no-such-dir");
    let err = runtime().load_dir(&missing).expect_err("nothing to read");
    assert!(
        matches!(&err, LoadError::Io { path, .. } if Path::new(path) == missing),
        "{err:?}"
    );
}

fn cached_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn the_compile_cache_is_written_and_reused() {
    let cache = TempDir::new("cache");
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..test_config()
    };
    let bytes = component(MISBEHAVING);

    let mut first = AdapterRuntime::new(config.clone()).expect("runtime");
    first.load("misbehaving.wasm", &bytes).expect("compiles");
    let files = cached_files(cache.path());
    assert_eq!(files.len(), 1, "one artifact: {files:?}");
    let artifact = files[0].clone();
    assert_eq!(artifact.extension().and_then(|e| e.to_str()), Some("cwasm"));
    let written = std::fs::metadata(&artifact)
        .and_then(|m| m.modified())
        .expect("mtime");
    works(&first);

    // A second runtime (as after a restart) loads the artifact instead of compiling: the file
    // is not written again.
    let mut second = AdapterRuntime::new(config.clone()).expect("runtime");
    second
        .load("misbehaving.wasm", &bytes)
        .expect("loads from the cache");
    works(&second);
    assert_eq!(cached_files(cache.path()), std::slice::from_ref(&artifact));
    let after = std::fs::metadata(&artifact)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(after, written, "a cache hit must not rewrite the artifact");

    // A corrupted artifact is ignored: the component is compiled again and the artifact replaced.
    // The runtimes above map the artifact into memory, so it is replaced (a new file renamed over
    // it, as the cache itself writes) rather than truncated under them, and they are dropped first.
    drop((first, second));
    let garbage = cache.join("garbage.tmp");
    std::fs::write(&garbage, b"garbage where a compiled component was").expect("write garbage");
    std::fs::rename(&garbage, &artifact).expect("corrupt the artifact");
    let mut third = AdapterRuntime::new(config).expect("runtime");
    third.load("misbehaving.wasm", &bytes).expect("recompiles");
    works(&third);
    let repaired = std::fs::read(&artifact).expect("the artifact is written again");
    assert!(
        repaired.len() > 1024 && repaired.starts_with(b"\x7fELF"),
        "artifact not repaired"
    );
}
