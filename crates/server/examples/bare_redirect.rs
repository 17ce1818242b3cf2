//! The ceiling of the HTTP stack: the same axum/hyper/tokio server clickward
//! runs (multi-thread runtime, `TOKIO_WORKER_THREADS` honoured, connect info,
//! mimalloc), answering every request with a fixed 302 and doing nothing
//! else. `bench/run.sh` measures it beside nginx and clickward in the same
//! run, so the table shows how much of the gap to nginx is the stack itself.
//!
//! ```sh
//! cargo run --release -p clickward --example bare_redirect -- 127.0.0.1:18183
//! ```

use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn redirect() -> Response {
    (
        StatusCode::FOUND,
        [
            (
                header::LOCATION,
                HeaderValue::from_static("https://merchant.example/landing"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18183".to_owned())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = Router::new().fallback(redirect);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
