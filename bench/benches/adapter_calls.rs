//! Per-call cost of adapter translation, through the component versus the same Rust code called
//! natively, side by side in one run; and instantiation cost with the pooling allocator.
//!
//! Run: `cargo bench -p deskgate-bench --bench adapter_calls`

use criterion::{Criterion, criterion_group, criterion_main};
use deskgate::bindings as host;
use deskgate::runtime::{AdapterRuntime, RuntimeConfig};
use deskgate_adapter_sdk::bindings::deskgate::adapter::types as guest;
use deskgate_adapter_sdk::prelude::Guest;
use deskgate_bench::{FIXTURES, Fixture, REPLY};
use std::hint::black_box;

fn host_conn() -> host::Connection {
    host::Connection { id: "bench".into(), plan: String::new(), agent_id: Some("1001".into()), settings: vec![] }
}

fn guest_conn() -> guest::Connection {
    guest::Connection { id: "bench".into(), plan: String::new(), agent_id: Some("1001".into()), settings: vec![] }
}

fn host_reply() -> host::Operation {
    host::Operation::Apply(host::ApplyAction { ticket_id: "4242".into(), action: host::Action::Reply(REPLY.into()) })
}

fn guest_reply() -> guest::Operation {
    guest::Operation::Apply(guest::ApplyAction { ticket_id: "4242".into(), action: guest::Action::Reply(REPLY.into()) })
}

fn host_resp(status: u16, body: &str) -> host::HttpResponse {
    host::HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

fn guest_resp(status: u16, body: &str) -> guest::HttpResponse {
    guest::HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

/// Plan + interpret through the component; panics unless the reply is confirmed written.
fn component_pair(a: &deskgate::runtime::Adapter, conn: &host::Connection, op: &host::Operation, resp: &host::HttpResponse) {
    let host::Step::Send(p) = a.start(conn, op).unwrap().unwrap() else { panic!("reply plans a request") };
    let done = a.resume(conn, op, &p.state, resp).unwrap().unwrap();
    assert!(matches!(done, host::Step::Done(host::Outcome::Written(_))), "{done:?}");
}

fn native_pair<G: Guest>(conn: &guest::Connection, op: &guest::Operation, resp: &guest::HttpResponse) {
    let guest::Step::Send(p) = G::start(conn.clone(), op.clone()).unwrap() else { panic!("reply plans a request") };
    let done = G::resume(conn.clone(), op.clone(), p.state, resp.clone()).unwrap();
    assert!(matches!(done, guest::Step::Done(guest::Outcome::Written(_))), "{done:?}");
}

fn native_classify<G: Guest>(conn: &guest::Connection, op: &guest::Operation, state: &str, resp: &guest::HttpResponse) {
    let r = G::resume(conn.clone(), op.clone(), state.to_string(), resp.clone());
    assert!(matches!(r, Err(guest::Failure::Forbidden(_))), "{r:?}");
}

fn bench(c: &mut Criterion) {
    let mut rt = AdapterRuntime::new(RuntimeConfig::default()).expect("runtime");
    rt.load_builtin().expect("built-in adapters load");
    let (hc, gc) = (host_conn(), guest_conn());
    let (hop, gop) = (host_reply(), guest_reply());
    for Fixture { platform, reply_status, reply_body, forbidden_body } in FIXTURES {
        let adapter = rt.get(platform).expect("adapter loaded");
        let mut conn = hc.clone();
        conn.plan = adapter.descriptor().default_plan.clone();
        let mut gconn = gc.clone();
        gconn.plan = conn.plan.clone();
        let hresp = host_resp(reply_status, reply_body);
        let gresp = guest_resp(reply_status, reply_body);
        let h403 = host_resp(403, forbidden_body);
        let g403 = guest_resp(403, forbidden_body);
        let host::Step::Send(p) = adapter.start(&conn, &hop).unwrap().unwrap() else { unreachable!() };
        let state = p.state.clone();

        let mut g = c.benchmark_group(format!("{platform}/reply-plan+interpret"));
        g.bench_function("component", |b| b.iter(|| component_pair(&adapter, &conn, &hop, black_box(&hresp))));
        g.bench_function("native", |b| match platform {
            "zendesk" => b.iter(|| native_pair::<deskgate_adapter_zendesk::ZendeskAdapter>(&gconn, &gop, black_box(&gresp))),
            "freshdesk" => b.iter(|| native_pair::<deskgate_adapter_freshdesk::FreshdeskAdapter>(&gconn, &gop, black_box(&gresp))),
            _ => b.iter(|| native_pair::<deskgate_adapter_intercom::IntercomAdapter>(&gconn, &gop, black_box(&gresp))),
        });
        g.finish();

        let mut g = c.benchmark_group(format!("{platform}/classify-403"));
        g.bench_function("component", |b| {
            b.iter(|| {
                let r = adapter.resume(&conn, &hop, &state, black_box(&h403)).unwrap();
                assert!(matches!(r, Err(host::Failure::Forbidden(_))));
            })
        });
        g.bench_function("native", |b| match platform {
            "zendesk" => b.iter(|| native_classify::<deskgate_adapter_zendesk::ZendeskAdapter>(&gconn, &gop, &state, black_box(&g403))),
            "freshdesk" => b.iter(|| native_classify::<deskgate_adapter_freshdesk::FreshdeskAdapter>(&gconn, &gop, &state, black_box(&g403))),
            _ => b.iter(|| native_classify::<deskgate_adapter_intercom::IntercomAdapter>(&gconn, &gop, &state, black_box(&g403))),
        });
        g.finish();
    }
    let zendesk = rt.get("zendesk").unwrap();
    c.bench_function("instantiate/pooling (zendesk)", |b| b.iter(|| zendesk.instantiate().unwrap()));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
