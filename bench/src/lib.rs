//! Shared fixtures for deskgate's benchmarks: the canned platform responses each adapter
//! interprets, so the component and native runs measure exactly the same work.

/// A platform, its reply action's success response, and a 403 body to classify.
pub struct Fixture {
    /// Adapter id.
    pub platform: &'static str,
    /// Status of a successful reply.
    pub reply_status: u16,
    /// Body of a successful reply.
    pub reply_body: &'static str,
    /// A 403 body the adapter must classify as forbidden.
    pub forbidden_body: &'static str,
}

/// One fixture per built-in adapter.
pub const FIXTURES: [Fixture; 3] = [
    Fixture {
        platform: "zendesk",
        reply_status: 200,
        reply_body: r#"{"ticket":{"id":4242,"url":"https://acme.zendesk.com/api/v2/tickets/4242.json","subject":"Printer on fire","status":"open","requester_id":11,"assignee_id":null,"group_id":null,"tags":["printer"],"created_at":"2024-04-17T17:18:10Z","updated_at":"2024-04-17T17:20:00Z"},"audit":{"id":99,"ticket_id":4242,"created_at":"2024-04-17T17:20:00Z","author_id":1001,"events":[{"id":555,"type":"Comment","body":"Thanks for waiting: this is fixed now.","public":true,"author_id":1001}]}}"#,
        forbidden_body: r#"{"error": "Forbidden", "description": "You are missing the following required scopes: tickets:write"}"#,
    },
    Fixture {
        platform: "freshdesk",
        reply_status: 201,
        reply_body: r#"{"id":5001,"body":"<p>Thanks for waiting: this is fixed now.</p>","body_text":"Thanks for waiting: this is fixed now.","incoming":false,"private":false,"user_id":1001,"ticket_id":4242,"source":0,"created_at":"2024-04-17T17:20:00Z","updated_at":"2024-04-17T17:20:00Z","attachments":[]}"#,
        forbidden_body: r#"{"code":"access_denied","message":"You are not authorized to perform this action."}"#,
    },
    Fixture {
        platform: "intercom",
        reply_status: 200,
        reply_body: r#"{"type":"conversation","id":"4242","created_at":1713374290,"updated_at":1713374400,"state":"open","open":true,"read":true,"admin_assignee_id":null,"team_assignee_id":null,"tags":{"type":"tag.list","tags":[]},"source":{"type":"conversation","id":"1","author":{"type":"user","id":"77"},"body":"Printer on fire"},"conversation_parts":{"type":"conversation_part.list","conversation_parts":[{"type":"conversation_part","id":"9001","part_type":"comment","body":"<p>Thanks for waiting: this is fixed now.</p>","created_at":1713374400,"updated_at":1713374400,"author":{"type":"admin","id":"1001"}}],"total_count":1}}"#,
        forbidden_body: r#"{"type":"error.list","request_id":"b1c2","errors":[{"code":"action_forbidden","message":"Insufficient permissions","data":{"required_permissions":["write_conversations"]}}]}"#,
    },
];

/// The reply every benchmark posts.
pub const REPLY: &str = "Thanks for waiting: this is fixed now.";
