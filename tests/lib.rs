//! Nothing here: the end-to-end tests live in `e2e/`; this crate exists to hold them.
