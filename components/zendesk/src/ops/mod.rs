//! One module per kind of operation.

pub mod probe;
pub mod read;
pub mod readback;
pub mod write;

/// Helpers shared by the operations' tests.
#[cfg(test)]
pub(crate) mod testing {
    use deskgate_adapter_sdk::prelude::*;

    /// A connection on the default plan, with a known agent.
    pub fn conn() -> Connection {
        Connection {
            id: "c1".into(),
            plan: "enterprise".into(),
            agent_id: Some("7".into()),
            settings: Vec::new(),
        }
    }

    /// A connection that has not run who-am-i yet.
    pub fn conn_without_agent() -> Connection {
        Connection {
            agent_id: None,
            ..conn()
        }
    }

    /// A response.
    pub fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![(
                "content-type".into(),
                "application/json; charset=UTF-8".into(),
            )],
            body: body.as_bytes().to_vec(),
        }
    }

    /// A 200 with a JSON body.
    pub fn ok_json(body: &str) -> HttpResponse {
        resp(200, body)
    }

    /// A fixture file's text.
    pub fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).expect("fixture")
    }

    /// The request and state of a `Step::Send`.
    pub fn sent(step: Result<Step, Failure>) -> (HttpRequest, String) {
        match step {
            Ok(Step::Send(p)) => (p.request, p.state),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    /// The outcome of a `Step::Done`.
    pub fn finished(step: Result<Step, Failure>) -> Outcome {
        match step {
            Ok(Step::Done(o)) => o,
            other => panic!("expected an outcome, got {other:?}"),
        }
    }

    /// The request's body as JSON.
    pub fn body(req: &HttpRequest) -> serde_json::Value {
        serde_json::from_slice(req.body.as_deref().expect("a body")).expect("JSON body")
    }

    /// The request's draws as `bucket` or `bucket:key`.
    pub fn draws(req: &HttpRequest) -> Vec<String> {
        req.draws
            .iter()
            .map(|d| {
                assert_eq!(d.cost, 1);
                match &d.key {
                    Some(k) => format!("{}:{k}", d.bucket),
                    None => d.bucket.clone(),
                }
            })
            .collect()
    }

    /// Every bucket a request draws on is declared on every plan.
    pub fn assert_declared(req: &HttpRequest) {
        let d = crate::describe::descriptor();
        for draw in &req.draws {
            for plan in &d.plans {
                assert!(
                    plan.buckets.iter().any(|b| b.name == draw.bucket),
                    "bucket {} not declared on {}",
                    draw.bucket,
                    plan.plan
                );
            }
        }
    }

    /// The draws of every ticket update of ticket `id`.
    pub fn write_draws(id: &str) -> Vec<String> {
        vec![
            "account".into(),
            format!("ticket-update:{id}"),
            "ticket-update-account".into(),
        ]
    }

    /// Whether a request's header is set.
    pub fn req_header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
