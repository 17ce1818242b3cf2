//! `clickward key`: create an API key (printed once).

use clap::{Subcommand, ValueEnum};
use clickward_store::{KeyScope, Store};

/// Scope of a new key.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    /// Everything.
    Admin,
    /// GET only.
    Read,
}

/// `clickward key …`
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create an API key and print it once.
    Create {
        /// admin or read.
        #[arg(long, value_enum)]
        scope: ScopeArg,
        /// A note for people.
        #[arg(long)]
        label: Option<String>,
    },
}

/// Runs `clickward key …`.
///
/// # Errors
/// Store errors and bad arguments, with context.
pub(super) async fn run(store: &dyn Store, cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::Create { scope, label } => {
            let (secret, hash, prefix) = crate::services::keys::new_key();
            let scope = match scope {
                ScopeArg::Admin => KeyScope::Admin,
                ScopeArg::Read => KeyScope::Read,
            };
            store.create_api_key(hash, prefix, scope, label).await?;
            eprintln!("created a {} key; it is shown only now:", scope.as_str());
            outln!("{secret}");
        }
    }
    Ok(())
}
