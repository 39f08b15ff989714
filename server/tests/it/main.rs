//! Server integration tests: the real server on port 0, real WebSocket and HTTP clients, and
//! the real `client` binary. One test binary; one module per area.

mod binary;
mod cli;
mod helpers;
mod http;
mod ws;
