//! A host a plugin may be granted to send HTTP requests to, as the
//! configuration names it (`plugins.grants.NAME.http`); `plugins` checks
//! each request against it.

/// A host a plugin may send HTTP requests to: `name` (the scheme's default
/// port) or `name:port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostGrant {
    host: String,
    port: Option<u16>,
}

impl HostGrant {
    pub fn parse(text: &str) -> Result<HostGrant, String> {
        let text = text.trim().to_ascii_lowercase();
        let (host, port) = match text.rsplit_once(':') {
            // An IPv6 address without a port has colons too: `[::1]:80` or `[::1]`.
            Some((host, port)) if !host.ends_with(':') && (!host.contains(':') || host.ends_with(']')) => {
                (host.to_owned(), Some(port.parse::<u16>().map_err(|_| format!("{port:?} is not a port"))?))
            }
            _ => (text.clone(), None),
        };
        let valid = !host.is_empty()
            && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_[]:".contains(c))
            && !host.starts_with('.');
        if !valid {
            return Err(format!("{text:?} is not a host name"));
        }
        Ok(HostGrant { host, port })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, when the grant names one (else the scheme's default).
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl std::fmt::Display for HostGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}
