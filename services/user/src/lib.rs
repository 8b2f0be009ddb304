//! The user service (being built).
