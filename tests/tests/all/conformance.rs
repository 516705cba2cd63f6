//! The conformance kit (`deskgate adapter check`) against every adapter we ship or document, and
//! against a deliberately wrong one.

use deskgate::conformance;
use deskgate::runtime::AdapterRuntime;
use deskgate_tests::{EXAMPLE_ACMEDESK, WRONG, component, test_config};

fn report_text(r: &conformance::Report) -> String {
    r.failures().map(|c| format!("[{}] {}", c.obligation, c.detail)).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_builtin_adapters_pass_every_obligation() {
    let mut rt = AdapterRuntime::new(test_config()).unwrap();
    rt.load_builtin().unwrap();
    for id in ["zendesk", "freshdesk", "intercom"] {
        let report = conformance::check(&rt.get(id).unwrap());
        assert!(report.passed(), "{id} failed conformance:\n{}", report_text(&report));
        // Every operation was exercised, not just the descriptor.
        let classified = report.checks.iter().filter(|c| c.obligation == "error-classification").count();
        assert!(classified >= 8, "{id}: only {classified} operations had their errors classified");
    }
}

#[test]
fn the_guides_example_adapter_passes() {
    let rt = AdapterRuntime::new(test_config()).unwrap();
    let adapter = rt.prepare(EXAMPLE_ACMEDESK, &component(EXAMPLE_ACMEDESK)).unwrap();
    let report = conformance::check(&adapter);
    assert!(report.passed(), "the example failed conformance:\n{}", report_text(&report));
}

#[test]
fn a_403_classified_as_unauthenticated_fails_with_the_obligation_named() {
    let rt = AdapterRuntime::new(test_config()).unwrap();
    let adapter = rt.prepare(WRONG, &component(WRONG)).unwrap();
    let report = conformance::check(&adapter);
    assert!(!report.passed());
    let failures: Vec<_> = report.failures().collect();
    assert!(failures.iter().all(|c| c.obligation == "error-classification"), "{}", report_text(&report));
    for c in &failures {
        assert!(
            c.detail.contains("HTTP 403 classified unauthenticated instead of forbidden")
                && c.detail.contains("never unauthenticated (re-auth)"),
            "the failure must name the broken obligation and the fix: {}",
            c.detail
        );
    }
    // Everything else about the adapter is fine, and the kit says so.
    assert!(report.checks.iter().any(|c| c.obligation == "descriptor" && c.passed));
}
