//! Server integration tests: the real server on port 0, real WebSocket and HTTP clients, and
//! the real `server` binary. One test binary; one module per area.

mod binary;
mod caching;
mod hardening;
mod helpers;
mod http;
mod keepalive;
mod limits;
mod metrics;
mod origin;
mod poll;
mod room;
mod ws;
