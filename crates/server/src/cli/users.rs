//! `clickward user`: add, list, magic links.

use super::slug;
use crate::process::config::Validated;
use anyhow::{Context, bail};
use clap::Subcommand;
use clickward_store::Store;

/// `clickward user …`
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user, or replace the one with this name (a new password ends
    /// its sessions). The password (at least 10 characters) is read from
    /// standard input, one line; with `--no-password` the user signs in by
    /// magic link only.
    Add {
        /// Sign-in name.
        name: String,
        /// A merchant-side user: the whole dashboard.
        #[arg(
            long,
            conflicts_with = "affiliate",
            required_unless_present = "affiliate"
        )]
        admin: bool,
        /// An affiliate's user: the portal, that affiliate's data only.
        #[arg(long)]
        affiliate: Option<String>,
        /// No password: magic links only.
        #[arg(long)]
        no_password: bool,
    },
    /// List users.
    List,
    /// Print a sign-in link for a user, valid once and for 15 minutes.
    MagicLink {
        /// Sign-in name.
        name: String,
        /// Base URL of the link (default `dashboard.public_url`, else
        /// `http://` + the listen address).
        #[arg(long)]
        base: Option<String>,
        /// Mail it to the user's address through `[mail]` instead of
        /// printing it.
        #[arg(long)]
        send: bool,
    },
    /// Set where a user's mail goes (`--email ''` for none) and whether an
    /// affiliate's user gets a mail per new conversion.
    Email {
        /// Sign-in name.
        name: String,
        /// The address.
        #[arg(long)]
        email: String,
        /// A mail for each new conversion (affiliates' users; off unless given).
        #[arg(long)]
        conversions: bool,
    },
}

pub(super) async fn user_command(
    v: &Validated,
    store: &dyn Store,
    cmd: UserCmd,
) -> anyhow::Result<()> {
    use clickward_store::{UserInput, UserRole};
    match cmd {
        UserCmd::Add {
            name,
            admin,
            affiliate,
            no_password,
        } => {
            let name = name.trim().to_owned();
            anyhow::ensure!(
                !name.is_empty()
                    && name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_alphanumeric() || "._@-".contains(c)),
                "user name {name:?}: 1–64 letters, digits or . _ @ -"
            );
            let (role, affiliate) = match (admin, affiliate) {
                (true, _) => (UserRole::Admin, None),
                (false, Some(a)) => (UserRole::Affiliate, Some(slug(&a, "affiliate")?)),
                (false, None) => bail!("say --admin or --affiliate SLUG"),
            };
            let password_hash = if no_password {
                None
            } else {
                use std::io::IsTerminal;
                if std::io::stdin().is_terminal() {
                    // No echo control here: say so rather than pretend.
                    eprint!("password for {name} (shown as typed; or pipe it in): ");
                }
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                let password = line.trim_end_matches(['\r', '\n']);
                Some(crate::dashboard::session::hash_password(password)?)
            };
            let user = store
                .save_user(UserInput {
                    username: name,
                    role,
                    affiliate,
                    password_hash,
                    changed_at: jiff::Timestamp::now().as_microsecond(),
                })
                .await?;
            outln!(
                "user {} ({}{})",
                user.username,
                user.role.as_str(),
                user.affiliate
                    .map(|a| format!(" of {a}"))
                    .unwrap_or_default()
            );
        }
        UserCmd::List => {
            outln!("{:<32} {:<10} affiliate", "user", "role");
            for u in store.list_users().await? {
                outln!(
                    "{:<32} {:<10} {}",
                    u.username,
                    u.role.as_str(),
                    u.affiliate.as_deref().unwrap_or("-")
                );
            }
        }
        UserCmd::Email {
            name,
            email,
            conversions,
        } => {
            let email = Some(email.trim().to_owned()).filter(|e| !e.is_empty());
            if let Some(e) = &email {
                crate::services::mail::mailbox(e)?;
            }
            anyhow::ensure!(
                store
                    .set_user_email(name.clone(), email.clone(), conversions)
                    .await?,
                "no user {name:?}"
            );
            outln!(
                "{name}: mail to {}, conversion mails {}",
                email.as_deref().unwrap_or("nobody"),
                if conversions { "on" } else { "off" }
            );
        }
        UserCmd::MagicLink { name, base, send } => {
            let user = store
                .find_user(name.clone())
                .await?
                .with_context(|| format!("no user {name:?}"))?;
            let key = crate::process::secrets::cookie_key(&v.config.data_dir.join("secrets"))?;
            let token = crate::dashboard::session::magic_token(
                key.signing(),
                &user,
                jiff::Timestamp::now().as_microsecond(),
            );
            let base = base
                .or_else(|| v.config.dashboard.public_url.clone())
                .unwrap_or_else(|| format!("http://{}", v.config.listen));
            let link = format!("{}/login/magic?t={token}", base.trim_end_matches('/'));
            if send {
                let m = &v.config.mail;
                let smtp = m
                    .smtp
                    .as_deref()
                    .context("--send needs a relay: set [mail] smtp in the config")?;
                let to = user.email.as_deref().with_context(|| {
                    format!("{name} has no address: clickward user email {name} --email ADDRESS")
                })?;
                let mailer =
                    crate::services::mail::Mailer::new(smtp, &m.from, &m.admin, base.clone())?;
                let answer = mailer
                    .send(
                        &crate::services::mail::mailbox(to)?,
                        &crate::services::mail::Mailer::magic_link(&user.username, &link),
                        None,
                    )
                    .await
                    .context("sending the sign-in link")?;
                outln!("sent a sign-in link to {to} ({answer})");
            } else {
                outln!("{link}");
            }
        }
    }
    Ok(())
}
