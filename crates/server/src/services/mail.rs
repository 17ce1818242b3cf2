//! E-mail through an SMTP relay (`[mail] smtp = "smtp://…"`; Amazon SES's
//! SMTP interface is one): a new conversion to the affiliate's users who
//! asked for it, a payout created to the affiliate's users and the admins,
//! an endpoint disabled to the admins, and magic sign-in links. Plain text
//! and HTML (askama), never visitor data (no IP, user agent, referrer or
//! sub-ids).
//!
//! Mail of outbox events is a delivery like a webhook's: one built-in
//! `email` endpoint, so it is leased, retried, dead-lettered, logged and
//! replayable the same way; its recipients are looked up when it is sent.

use std::time::{Duration, Instant};

use askama::Template;
use clickward_core::money::Currency;
use clickward_store::{LeasedDelivery, Store, User, UserRole};
use lettre::message::{Mailbox, MultiPart, header};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// The events mail is sent for.
pub const MAIL_EVENTS: [&str; 3] = ["conversion.created", "payout.created", "webhook.disabled"];

/// Why `[mail]` was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MailConfigError(pub String);

/// The relay and the addresses.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    admins: Vec<Mailbox>,
    public_url: String,
}

/// One attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailOutcome {
    /// Sent (or nobody to tell).
    pub sent: bool,
    /// What the relay said, or why nothing was sent.
    pub note: String,
    /// Time the attempt took.
    pub latency: Duration,
    /// Recipients, for the log.
    pub to: String,
}

/// One mail's values, rendered by its plain-text and its HTML template
/// (askama takes one template per type, so the two wrapper types are made
/// here from the one list of fields).
macro_rules! mail_templates {
    ($name:ident, $text:tt, $html:tt { $($f:ident: $t:ty),* $(,)? }) => {
        #[derive(Clone, Copy)]
        struct $name<'a> {
            $($f: $t),*
        }

        impl $name<'_> {
            fn mail(self, subject: String) -> Mail {
                #[derive(Template)]
                #[template(path = $text)]
                struct Text<'a> {
                    $($f: $t),*
                }
                #[derive(Template)]
                #[template(path = $html)]
                struct Html<'a> {
                    $($f: $t),*
                }
                Mail {
                    subject,
                    text: render(&Text { $($f: self.$f),* }),
                    html: render(&Html { $($f: self.$f),* }),
                }
            }
        }
    };
}

mail_templates!(ConversionMail, "mail/conversion.txt", "mail/conversion.html" {
    user: &'a str,
    program: &'a str,
    event: &'a str,
    order_id: &'a str,
    amount: &'a str,
    commission: &'a str,
    status: &'a str,
    when: &'a str,
    portal: &'a str,
});

mail_templates!(PayoutMail, "mail/payout.txt", "mail/payout.html" {
    user: &'a str,
    affiliate: &'a str,
    amount: &'a str,
    conversions: i64,
    batch: &'a str,
    when: &'a str,
    portal: &'a str,
});

mail_templates!(DisabledMail, "mail/endpoint_disabled.txt", "mail/endpoint_disabled.html" {
    id: &'a str,
    kind: &'a str,
    description: &'a str,
    reason: &'a str,
    page: &'a str,
});

mail_templates!(MagicMail, "mail/magic_link.txt", "mail/magic_link.html" {
    user: &'a str,
    link: &'a str,
});

/// A mail to send: subject, plain text, HTML.
pub struct Mail {
    /// Subject line.
    pub subject: String,
    /// text/plain part.
    pub text: String,
    /// text/html part.
    pub html: String,
}

fn render(t: &impl Template) -> String {
    t.render().unwrap_or_default()
}

fn money(minor: Option<i64>, currency: &str) -> String {
    match (minor, Currency::parse(currency)) {
        (Some(m), Ok(c)) => format!("{} {}", c.format(m), c.code()),
        _ => "—".to_owned(),
    }
}

fn when(us: Option<i64>) -> String {
    us.and_then(|u| jiff::Timestamp::from_microsecond(u).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// Parses `Name <addr>` or `addr`.
///
/// # Errors
/// A sentence naming the text.
pub fn mailbox(text: &str) -> Result<Mailbox, MailConfigError> {
    text.parse()
        .map_err(|e| MailConfigError(format!("{text:?} is not an e-mail address: {e}")))
}

impl Mailer {
    /// A mailer for relay `smtp` (`smtp://host:port` plain, `smtp://…?tls=required`
    /// for STARTTLS, `smtps://` for TLS; user and password in the URL), from
    /// `from`, telling `admins` about payouts and disabled endpoints; links
    /// point at `public_url`.
    ///
    /// # Errors
    /// A bad URL or address, named.
    pub fn new(
        smtp: &str,
        from: &str,
        admins: &[String],
        public_url: String,
    ) -> Result<Self, MailConfigError> {
        crate::services::delivery::http::install_crypto_provider();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp)
            .map_err(|e| {
                MailConfigError(format!(
                    "mail.smtp: not an SMTP URL like \"smtp://127.0.0.1:25\": {e}"
                ))
            })?
            .timeout(Some(Duration::from_secs(10)))
            .build();
        Ok(Self {
            transport,
            from: mailbox(from).map_err(|e| MailConfigError(format!("mail.from: {e}")))?,
            admins: admins
                .iter()
                .map(|a| mailbox(a).map_err(|e| MailConfigError(format!("mail.admin: {e}"))))
                .collect::<Result<_, _>>()?,
            public_url: public_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends `mail` to `to`, with `message_id` (`<…@clickward>`) when given.
    ///
    /// # Errors
    /// What the relay said, or why it could not be reached.
    pub async fn send(
        &self,
        to: &Mailbox,
        mail: &Mail,
        message_id: Option<String>,
    ) -> anyhow::Result<String> {
        let msg = Message::builder()
            .from(self.from.clone())
            .to(to.clone())
            .subject(mail.subject.clone())
            .message_id(message_id)
            .header(header::MIME_VERSION_1_0)
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))?;
        let answer = self.transport.send(msg).await?;
        Ok(answer.message().collect::<Vec<_>>().join(" "))
    }

    /// The magic-link mail for `user`.
    pub fn magic_link(user: &str, link: &str) -> Mail {
        MagicMail { user, link }.mail("Sign in to clickward".to_owned())
    }

    /// Who gets the mail of `d`'s event, and what it says.
    fn compose(&self, d: &LeasedDelivery, users: &[User]) -> Vec<(Mailbox, Mail)> {
        let p = &d.payload;
        let mut out = Vec::new();
        let of_affiliate =
            |slug: Option<&str>, wants: fn(&User) -> bool| -> Vec<(Mailbox, String)> {
                users
                    .iter()
                    .filter(|u| {
                        u.role == UserRole::Affiliate
                            && u.affiliate.as_deref() == slug
                            && slug.is_some()
                            && wants(u)
                    })
                    .filter_map(|u| {
                        Some((
                            u.email.as_deref().and_then(|e| mailbox(e).ok())?,
                            u.username.clone(),
                        ))
                    })
                    .collect()
            };
        let portal = format!("{}/portal", self.public_url);
        match d.kind.as_str() {
            "conversion.created" => {
                let c = &p["conversion"];
                let s = |k: &str| c[k].as_str().unwrap_or("").to_owned();
                let cur = s("currency");
                let (amount, commission) = (
                    money(c["amount_minor"].as_i64(), &cur),
                    money(c["commission_minor"].as_i64(), &cur),
                );
                let when = when(c["occurred_at"].as_i64());
                for (to, user) in of_affiliate(c["affiliate"].as_str(), |u| u.notify_conversions) {
                    let (program, event, order_id, status) =
                        (s("program"), s("event"), s("order_id"), s("status"));
                    let m = ConversionMail {
                        user: &user,
                        program: &program,
                        event: &event,
                        order_id: &order_id,
                        amount: &amount,
                        commission: &commission,
                        status: &status,
                        when: &when,
                        portal: &portal,
                    };
                    out.push((
                        to,
                        m.mail(format!("New conversion on {program}: {commission}")),
                    ));
                }
            }
            "payout.created" => {
                let o = &p["payout"];
                let affiliate = o["affiliate"].as_str().unwrap_or("").to_owned();
                let amount = money(
                    o["amount_minor"].as_i64(),
                    o["currency"].as_str().unwrap_or(""),
                );
                let batch = o["batch_id"].as_str().unwrap_or("").to_owned();
                let conversions = o["conversions"].as_i64().unwrap_or(0);
                let when = when(o["created_at"].as_i64());
                let mut to: Vec<(Mailbox, String, String)> =
                    of_affiliate(Some(&affiliate), |_| true)
                        .into_iter()
                        .map(|(m, u)| (m, u, portal.clone()))
                        .collect();
                to.extend(self.admins.iter().map(|a| {
                    (
                        a.clone(),
                        "admin".to_owned(),
                        format!("{}/dashboard/payouts", self.public_url),
                    )
                }));
                for (m, user, link) in to {
                    let mail = PayoutMail {
                        user: &user,
                        affiliate: &affiliate,
                        amount: &amount,
                        conversions,
                        batch: &batch,
                        when: &when,
                        portal: &link,
                    }
                    .mail(format!("Payout created for {affiliate}: {amount}"));
                    out.push((m, mail));
                }
            }
            "webhook.disabled" => {
                let w = &p["webhook"];
                let s = |k: &str| w[k].as_str().unwrap_or("").to_owned();
                let (id, kind, description, reason) =
                    (s("id"), s("kind"), s("description"), s("reason"));
                let page = format!("{}/dashboard/webhooks", self.public_url);
                for a in &self.admins {
                    let mail = DisabledMail {
                        id: &id,
                        kind: &kind,
                        description: &description,
                        reason: &reason,
                        page: &page,
                    }
                    .mail(format!("Endpoint {id} disabled: {reason}"));
                    out.push((a.clone(), mail));
                }
            }
            _ => {}
        }
        out
    }

    /// Sends the mail of delivery `d` to everyone it concerns.
    pub async fn deliver(&self, store: &dyn Store, d: &LeasedDelivery) -> MailOutcome {
        let started = Instant::now();
        let users = match store.list_users().await {
            Ok(u) => u,
            Err(e) => {
                return MailOutcome {
                    sent: false,
                    note: format!("reading users failed: {e}"),
                    latency: started.elapsed(),
                    to: String::new(),
                };
            }
        };
        let mails = self.compose(d, &users);
        let to = mails
            .iter()
            .map(|(m, _)| m.email.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if mails.is_empty() {
            return MailOutcome {
                sent: true,
                note: "nobody to tell".to_owned(),
                latency: started.elapsed(),
                to,
            };
        }
        let mut notes = Vec::new();
        for (i, (m, mail)) in mails.iter().enumerate() {
            let id = format!("<{}.{}.{i}@clickward>", d.event_id, d.endpoint.id);
            match self.send(m, mail, Some(id)).await {
                Ok(answer) => notes.push(answer),
                Err(e) => {
                    return MailOutcome {
                        sent: false,
                        note: format!("the relay refused the mail to {}: {e}", m.email),
                        latency: started.elapsed(),
                        to,
                    };
                }
            }
        }
        MailOutcome {
            sent: true,
            note: notes.join("; "),
            latency: started.elapsed(),
            to,
        }
    }
}
