//! `clickward report`: the report over the store, printed a chunk at a time.

use crate::services::reports::{ReportArgs, report_text};
use clickward_store::Store;

/// Runs `clickward report`.
///
/// # Errors
/// Store errors and bad arguments, with context.
pub(super) async fn run(store: &dyn Store, args: ReportArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for chunk in report_text(store, &args).await? {
        std::io::Write::write_all(&mut out, chunk.as_bytes())?;
    }
    Ok(())
}
