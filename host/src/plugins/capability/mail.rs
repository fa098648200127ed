//! `mail`: mail through the server's SMTP relay, from the server's sender.

use super::{Capability, Grant};
use crate::config::PluginGrant;
use crate::plugins::state::HostState;
use crate::plugins::wit::latest::host_api::orthrus::plugin::mail;

/// May send mail through the relay of `[mail]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailGrant;

impl Grant for MailGrant {
    fn asked(capabilities: &[Capability]) -> Option<Self> {
        super::asks(capabilities, &Capability::Mail).then_some(MailGrant)
    }
    fn from_config(grant: &PluginGrant) -> Option<Self> {
        grant.mail.then_some(MailGrant)
    }
    fn write_config(&self, grant: &mut PluginGrant) {
        grant.mail = true;
    }
    fn capabilities(&self) -> Vec<Capability> {
        vec![Capability::Mail]
    }
}

impl mail::Host for HostState {
    async fn send(&mut self, message: mail::Message) -> Result<(), String> {
        self.granted(&self.grants.mail, "send mail")?;
        self.services.mailer.send(&message.to, &message.subject, &message.body).await?;
        tracing::info!(plugin = %self.plugin, to = ?message.to, subject = %message.subject, "mail sent for a plugin");
        Ok(())
    }
}
