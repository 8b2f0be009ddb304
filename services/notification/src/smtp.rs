//! The production mailer: SMTP through `lettre`, configured by one URL
//! (`smtp://host:port` plain, `smtp://host:port?tls=required` STARTTLS,
//! `smtps://host:port` TLS; `user:password@` for AUTH). One connection per
//! message, with a timeout well below the consumer's ack wait.

use std::time::{Duration, SystemTime};

use futures::{future::BoxFuture, FutureExt};
use lettre::{message::Mailbox, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::{
    mailer::{build_message, DeliveryError, Mailer},
    render::Email,
};

/// Sends each message to the SMTP server of `SMTP_URL`.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    described: String,
}

impl SmtpMailer {
    pub fn new(url: &str, from: Mailbox, timeout: Duration) -> anyhow::Result<Self> {
        let described = without_credentials(url);
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("SMTP_URL {described} is not usable: {e}"))?
            .timeout(Some(timeout))
            .build();
        Ok(Self {
            transport,
            from,
            described,
        })
    }
}

/// Classifies an SMTP failure: a 5xx answer is final, anything else (no
/// connection, timeout, TLS trouble, 4xx) may pass later.
pub fn classify(error: &lettre::transport::smtp::Error) -> DeliveryError {
    if error.is_permanent() {
        DeliveryError::Permanent(format!("SMTP server refused the message: {error}"))
    } else {
        DeliveryError::Transient(format!("SMTP delivery failed: {error}"))
    }
}

impl Mailer for SmtpMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), DeliveryError>> {
        async move {
            let message = build_message(&self.from, email, SystemTime::now())?;
            self.transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| classify(&e))
        }
        .boxed()
    }

    fn describe(&self) -> String {
        self.described.clone()
    }
}

/// The URL without `user:password@`, for logs and errors.
pub fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{tail}")
        }
        None => "(unparsable SMTP_URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_shown() {
        assert_eq!(
            without_credentials("smtp://user:s3cret@mail.example.com:587?tls=required"),
            "smtp://mail.example.com:587?tls=required"
        );
        assert_eq!(
            without_credentials("smtp://127.0.0.1:2525"),
            "smtp://127.0.0.1:2525"
        );
        assert_eq!(without_credentials("s3cret"), "(unparsable SMTP_URL)");
    }

    #[test]
    fn urls_are_checked_at_start() {
        let from: Mailbox = "shop@localhost".parse().unwrap();
        for ok in [
            "smtp://127.0.0.1:2525",
            "smtps://mail.example.com",
            "smtp://mail.example.com:587?tls=required",
        ] {
            assert!(
                SmtpMailer::new(ok, from.clone(), Duration::from_secs(1)).is_ok(),
                "{ok}"
            );
        }
        let err = SmtpMailer::new("http://u:pw@x", from, Duration::from_secs(1))
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("pw"), "{err}");
    }

    #[tokio::test]
    async fn nobody_listening_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mailer = SmtpMailer::new(
            &format!("smtp://127.0.0.1:{port}"),
            "shop@localhost".parse().unwrap(),
            Duration::from_secs(2),
        )
        .unwrap();
        let email = crate::render::welcome(
            "USER:1",
            "shop@localhost",
            &crate::domain::UserInfo {
                id: "u1".into(),
                email: "a@example.com".into(),
                name: None,
            },
        );
        assert!(matches!(
            mailer.send(&email).await,
            Err(DeliveryError::Transient(_))
        ));
    }
}
