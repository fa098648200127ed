//! `http(HOST)`: outgoing HTTP requests, to the hosts granted only (the
//! client, `plugins::outbound`, enforces it on every request, redirects
//! included).

use std::collections::BTreeSet;

use super::{Capability, Grant, WitError};
use crate::config::{HostGrant, PluginGrant};
use crate::plugins::outbound::{HttpRequest, authority};
use crate::plugins::state::HostState;
use crate::plugins::wit::latest::host_api::orthrus::plugin::http;

/// The hosts it may send requests to (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    pub hosts: BTreeSet<HostGrant>,
}

impl Grant for HttpGrant {
    /// Never by default, whatever a plugin asks: a webhook's receiver is
    /// the operator's choice, not the plugin's.
    fn asked(_: &[Capability]) -> Option<Self> {
        None
    }
    fn from_config(grant: &PluginGrant) -> Option<Self> {
        // Each host was checked when the configuration was read.
        let hosts: BTreeSet<HostGrant> = grant.http.iter().filter_map(|h| HostGrant::parse(h).ok()).collect();
        (!hosts.is_empty()).then_some(HttpGrant { hosts })
    }
    fn write_config(&self, grant: &mut PluginGrant) {
        grant.http = self.hosts.iter().map(ToString::to_string).collect();
    }
    fn capabilities(&self) -> Vec<Capability> {
        self.hosts.iter().map(|host| Capability::Http(host.to_string())).collect()
    }
}

impl http::Host for HostState {
    async fn send(&mut self, request: http::Request) -> Result<http::Response, WitError> {
        let Some(grant) = &self.grants.http else {
            return Err(self.not_granted(Capability::Http(authority(&request.url))).into());
        };
        let granted: Vec<HostGrant> = grant.hosts.iter().cloned().collect();
        let url = request.url.clone();
        let request = HttpRequest {
            method: request.method,
            url: request.url,
            headers: request.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: request.body,
        };
        let response = self.services.http.send(&granted, request).await.map_err(|e| self.outbound_refused(e))?;
        tracing::debug!(plugin = %self.plugin, %url, status = response.status, "HTTP request for a plugin");
        Ok(http::Response {
            status: response.status,
            headers: response.headers.into_iter().map(|(name, value)| http::Header { name, value }).collect(),
            body: response.body,
        })
    }
}
