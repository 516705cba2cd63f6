//! Native tests of the AcmeDesk adapter. An adapter is plain Rust, so `cargo test` calls it
//! directly: no WebAssembly, no host, no network.

use deskgate_adapter_sdk::prelude::*;
use deskgate_example_acmedesk::AcmeDesk;

fn conn() -> Connection {
    Connection {
        id: "test".into(),
        plan: "standard".into(),
        agent_id: Some("1001".into()),
        settings: Vec::new(),
    }
}

fn response(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

const TICKET: &str = r#"{"ticket": {"id": "42", "subject": "Printer on fire", "status": "solved",
    "requester_id": "7", "assignee_id": "1001", "group_id": null, "tags": [],
    "created_at": "2024-04-17T17:18:10Z", "updated_at": "2024-04-17T18:00:00Z", "replies": []}}"#;

#[test]
fn get_ticket_is_one_read_then_a_ticket() {
    let op = Operation::GetTicket("42".into());
    let Ok(Step::Send(pending)) = AcmeDesk::start(conn(), op.clone()) else {
        panic!("get-ticket plans a request");
    };
    assert_eq!(pending.request.path, "/api/tickets/42");
    assert_eq!(pending.request.lane, Lane::Read);
    assert_eq!(pending.request.draws[0].bucket, "account");

    let answer = AcmeDesk::resume(conn(), op, pending.state, response(200, TICKET));
    let Ok(Step::Done(Outcome::Ticket(ticket))) = answer else {
        panic!("a 200 gives the ticket");
    };
    assert_eq!(ticket.status, TicketStatus::Solved);
    assert_eq!(ticket.updated_at, 1_713_376_800_000);
}

#[test]
fn a_403_is_forbidden_and_a_401_unauthenticated() {
    let op = Operation::GetTicket("42".into());
    let Ok(Step::Send(pending)) = AcmeDesk::start(conn(), op.clone()) else {
        panic!("get-ticket plans a request");
    };
    let missing_scope = r#"{"error": {"code": "missing_scope", "message": "Nope",
                                      "required_scope": "tickets:read"}}"#;
    let answer = AcmeDesk::resume(
        conn(),
        op.clone(),
        pending.state.clone(),
        response(403, missing_scope),
    );
    assert!(matches!(answer, Err(Failure::Forbidden(d)) if d.missing == "tickets:read"));

    let revoked = r#"{"error": {"code": "token_revoked", "message": "Revoked"}}"#;
    let answer = AcmeDesk::resume(conn(), op, pending.state, response(401, revoked));
    assert!(matches!(answer, Err(Failure::Unauthenticated(d)) if d.code == "token_revoked"));
}
