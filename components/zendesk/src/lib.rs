//! zendesk
