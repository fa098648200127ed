//! What plugins send out of the server: HTTP requests to the hosts their
//! grant names, and mail through the operator's relay. Both are checked
//! and bounded here, before anything leaves.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{HostGrant, MailConfig, MailSecurity};

/// Request and response bodies are cut off here.
pub const MAX_HTTP_BODY: usize = 1 << 20;
/// One request, connection included, gives up after this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

impl HostGrant {
    /// Whether this grant lets a request go to `url`.
    fn allows(&self, url: &reqwest::Url) -> bool {
        let Some(host) = url.host_str() else { return false };
        let port = url.port_or_known_default();
        let default_port = match url.scheme() {
            "https" => Some(443),
            _ => Some(80),
        };
        host.eq_ignore_ascii_case(self.host()) && port == self.port().or(default_port)
    }
}

/// Why a plugin's request or mail did not go out.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// What the plugin asked for is malformed or never allowed.
    #[error("{0}")]
    Invalid(String),
    /// The request's host is not among those granted.
    #[error("host {authority} is not granted")]
    HostNotGranted { authority: String },
    /// No answer, or a relay that refused: it may work later.
    #[error("{0}")]
    Unreachable(String),
    /// This server is not set up for it.
    #[error("{0}")]
    NotConfigured(String),
}

/// The host (and port, if the URL names one) a URL goes to, as a grant
/// names it; the URL itself if it has no host.
pub fn authority(url: &str) -> String {
    let parsed = reqwest::Url::parse(url).ok();
    match parsed.as_ref().map(|u| (u.host_str(), u.port())) {
        Some((Some(host), Some(port))) => format!("{host}:{port}"),
        Some((Some(host), None)) => host.to_owned(),
        _ => url.to_owned(),
    }
}

/// An HTTP request a plugin wants sent.
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The HTTP client plugins share (one connection pool).
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    pub fn new() -> HttpClient {
        let client = reqwest::Client::builder()
            // A redirect could lead to a host that was not granted.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("Orthrus/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client's settings are valid");
        HttpClient { client }
    }

    /// Sends `request` if one of `granted` allows its URL.
    pub async fn send(&self, granted: &[HostGrant], request: HttpRequest) -> Result<HttpResponse, OutboundError> {
        use OutboundError::Invalid;
        let url =
            reqwest::Url::parse(&request.url).map_err(|e| Invalid(format!("{:?} is not a URL: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Invalid(format!("{}: only http:// and https:// URLs can be sent", request.url)));
        }
        if !granted.iter().any(|g| g.allows(&url)) {
            let authority = authority(&request.url);
            let list: Vec<String> = granted.iter().map(ToString::to_string).collect();
            tracing::debug!(%authority, granted = %list.join(", "), "a plugin's request to a host not granted");
            return Err(OutboundError::HostNotGranted { authority });
        }
        let method = match request.method.to_ascii_uppercase().as_str() {
            "GET" => reqwest::Method::GET,
            "POST" => reqwest::Method::POST,
            "PUT" => reqwest::Method::PUT,
            "PATCH" => reqwest::Method::PATCH,
            "DELETE" => reqwest::Method::DELETE,
            other => return Err(Invalid(format!("method {other:?} is not allowed (GET, POST, PUT, PATCH, DELETE)"))),
        };
        if request.body.len() > MAX_HTTP_BODY {
            return Err(Invalid(format!(
                "the request body is {} bytes; at most {MAX_HTTP_BODY} may be sent",
                request.body.len()
            )));
        }
        let mut builder = self.client.request(method, url.clone());
        for (name, value) in &request.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Invalid(format!("{name:?} is not a header name")))?;
            if name == reqwest::header::HOST || name == reqwest::header::CONTENT_LENGTH {
                continue;
            }
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| Invalid(format!("the value of header {name} is not valid")))?;
            builder = builder.header(name, value);
        }
        let mut response = builder
            .body(request.body)
            .send()
            .await
            .map_err(|e| OutboundError::Unreachable(describe_http_error(&url, &e)))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| OutboundError::Unreachable(describe_http_error(&url, &e)))?
        {
            let room = MAX_HTTP_BODY - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() == MAX_HTTP_BODY {
                break;
            }
        }
        Ok(HttpResponse { status, headers, body })
    }
}

fn describe_http_error(url: &reqwest::Url, error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "failed"
    };
    // The source chain says why (refused, DNS, TLS), the top level only "error sending request".
    let mut reason = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        reason = e.to_string();
        source = e.source();
    }
    format!("{} {url}: {what}: {reason}", "request to")
}

/// Mail through the configured relay.
#[derive(Clone)]
pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Option<Mailbox>,
}

impl Mailer {
    pub fn new(config: &MailConfig) -> Result<Mailer, String> {
        if config.relay.is_empty() {
            return Ok(Mailer { transport: None, from: None });
        }
        let from: Mailbox =
            config.from.parse().map_err(|e| format!("mail.from: {:?} is not a mail address: {e}", config.from))?;
        let tls = |relay: &str| {
            TlsParameters::new(relay.to_owned()).map_err(|e| format!("mail.relay: cannot set up TLS: {e}"))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.relay)
            .port(config.port)
            .timeout(Some(Duration::from_secs(config.timeout_secs.max(1))));
        builder = match config.security {
            MailSecurity::None => builder.tls(Tls::None),
            MailSecurity::Starttls => builder.tls(Tls::Required(tls(&config.relay)?)),
            MailSecurity::Tls => builder.tls(Tls::Wrapper(tls(&config.relay)?)),
        };
        if !config.username.is_empty() {
            let password = std::fs::read_to_string(&config.password_file)
                .map_err(|e| format!("mail.password_file: cannot read {}: {e}", config.password_file.display()))?;
            builder = builder.credentials(Credentials::new(config.username.clone(), password.trim().to_owned()));
        }
        Ok(Mailer { transport: Some(builder.build()), from: Some(from) })
    }

    pub async fn send(&self, to: &[String], subject: &str, body: &str) -> Result<(), OutboundError> {
        use OutboundError::Invalid;
        let (Some(transport), Some(from)) = (&self.transport, &self.from) else {
            return Err(OutboundError::NotConfigured(
                "mail is not configured on this server (set [mail] relay)".into(),
            ));
        };
        if to.is_empty() {
            return Err(Invalid("a mail needs at least one recipient".into()));
        }
        let mut message = Message::builder().from(from.clone()).subject(subject);
        let mut recipients = 0;
        for address in to {
            // One bad address (from a Nix expression, say) must not keep
            // the others from their mail, nor fail the delivery forever.
            match address.parse::<Mailbox>() {
                Ok(mailbox) => {
                    message = message.to(mailbox);
                    recipients += 1;
                }
                Err(e) => tracing::warn!("not mailing {address:?}: it is not a mail address ({e})"),
            }
        }
        if recipients == 0 {
            return Err(Invalid(format!("none of {to:?} is a mail address")));
        }
        let message = message
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|e| Invalid(format!("cannot write the mail: {e}")))?;
        transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| OutboundError::Unreachable(format!("the mail relay refused the mail: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_grants_match_host_and_port() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        let plain = HostGrant::parse("Example.org").unwrap();
        assert!(plain.allows(&url("https://example.org/x")));
        assert!(plain.allows(&url("http://EXAMPLE.org/x")));
        assert!(!plain.allows(&url("https://example.org:8443/x")), "another port needs its own grant");
        assert!(!plain.allows(&url("https://evil.example.org/x")));
        assert!(!plain.allows(&url("https://example.org.evil.net/x")));
        let port = HostGrant::parse("127.0.0.1:8080").unwrap();
        assert!(port.allows(&url("http://127.0.0.1:8080/hook")));
        assert!(!port.allows(&url("http://127.0.0.1:8081/hook")));
        assert!(HostGrant::parse("[::1]:80").unwrap().allows(&url("http://[::1]/")));
        for bad in ["", "a b", "host:port", "http://x", "x/y", ".x"] {
            assert!(HostGrant::parse(bad).is_err(), "{bad:?}");
        }
    }
}
