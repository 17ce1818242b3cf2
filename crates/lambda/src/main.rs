//! The `clickward-lambda` binary: the tracker behind API Gateway's HTTP API
//! (`cargo lambda build --release --arm64`; deploy/aws/template.yaml).

use std::sync::Arc;
use std::time::Instant;

use clickward::clock::SystemClock;
use clickward::process::app::Function;
use clickward_lambda::{Env, service};

// As in the server: measured less CPU per redirect than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let started = Instant::now();
    clickward::telemetry::init_logging();
    let mut env = Env::from_process();
    if env.cookie_key.is_none()
        && let Some(name) = &env.cookie_key_param
    {
        let token = std::env::var("AWS_SESSION_TOKEN").unwrap_or_default();
        env.cookie_key = Some(
            clickward_lambda::ssm_parameter(clickward_lambda::extension_port(), name, &token)
                .await?,
        );
    }
    let cfg = env.config()?.validate()?;
    let f = Function::start(cfg, Arc::new(SystemClock)).await?;
    // The cold start's own part (the runtime's is in the REPORT line).
    tracing::info!(
        init_ms = started.elapsed().as_secs_f64() * 1e3,
        "clickward is ready"
    );
    lambda_http::run(service(f.router, env.viewer_header)).await
}
