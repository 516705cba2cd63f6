//! intercom
