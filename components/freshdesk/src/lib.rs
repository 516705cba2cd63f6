//! freshdesk
