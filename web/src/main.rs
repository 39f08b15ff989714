//! The bundle's entry point: trunk builds this binary; all of it lives in the `web` library.

fn main() {
    web::start();
}
