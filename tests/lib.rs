//! Nothing here: the end-to-end tests live in `e2/`; this crate exists to hold them.
