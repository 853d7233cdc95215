//! Approval requests by email (`[approvals.email]`, over `lettre`): each
//! recipient gets one plain-text message with the request and approve/reject
//! links signed for them (`link.rs`), so the decision is recorded as theirs.

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

use super::Approval;
use crate::config::{EmailConfig, SmtpSecurity};

/// Sends approval emails through the configured SMTP server.
pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Recipients of requests that name none.
    pub(crate) default_to: Vec<String>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// # Errors
    /// When the `from` address or the relay name is invalid (the config checks
    /// both, so only a host TLS cannot use as a name fails here).
    pub(crate) fn new(cfg: &EmailConfig) -> Result<Self, String> {
        let builder = match cfg.security {
            SmtpSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&cfg.host)
                    .map_err(|e| format!("approvals.email.host: {e}"))?
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&cfg.host)
                .map_err(|e| format!("approvals.email.host: {e}"))?,
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            }
        };
        let mut builder = builder
            .port(cfg.port)
            .timeout(Some(std::time::Duration::from_secs(30)));
        if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
            builder = builder.credentials(Credentials::new(
                user.expose().to_owned(),
                password.expose().to_owned(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from: cfg
                .from
                .parse()
                .map_err(|e| format!("approvals.email.from: {e}"))?,
            default_to: cfg.to.clone(),
        })
    }

    /// Sends `a` to `to` with its decision links.
    ///
    /// # Errors
    /// The SMTP server's refusal or a connection failure, as text without secrets.
    pub(crate) async fn send(
        &self,
        to: &str,
        a: &Approval,
        approve: &str,
        reject: &str,
    ) -> Result<(), String> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("{to:?} is not an email address: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!("Approval requested: {}", a.title))
            .body(text(a, approve, reject))
            .map_err(|e| e.to_string())?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The message's text.
fn text(a: &Approval, approve: &str, reject: &str) -> String {
    let mut out = format!("{}\n\n", a.title);
    if let Some(body) = &a.body {
        out.push_str(body);
        out.push_str("\n\n");
    }
    if !a.data.is_null() && a.data != serde_json::json!({}) {
        out.push_str(&serde_json::to_string_pretty(&a.data).unwrap_or_default());
        out.push_str("\n\n");
    }
    out.push_str(&format!(
        "Asked by {} ({}) at {}.\n",
        a.script, a.handler, a.created_at
    ));
    if let Some(exp) = &a.expires_at {
        let then = if a.approve_on_expiry {
            "approved"
        } else {
            "rejected"
        };
        out.push_str(&format!("Unanswered, it counts as {then} at {exp}.\n"));
    }
    out.push_str(&format!(
        "\nApprove: {approve}\nReject:  {reject}\n\n\
         Each link opens a page that asks you to confirm; nothing is decided until you do.\n"
    ));
    out
}
