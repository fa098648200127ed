//! `mail`: mail through the server's SMTP relay, from the server's sender.

use super::{Capability, WitError, flag_grant};
use crate::plugins::state::HostState;
use crate::plugins::wit::latest::host_api::orthrus::plugin::mail;

flag_grant!(
    /// May send mail through the relay of `[mail]`.
    MailGrant,
    Capability::Mail,
    mail
);

impl mail::Host for HostState {
    async fn send(&mut self, message: mail::Message) -> Result<(), WitError> {
        self.granted(&self.grants.mail, Capability::Mail)?;
        let mailer = &self.services.mailer;
        mailer.send(&message.to, &message.subject, &message.body).await.map_err(|e| self.outbound_refused(e))?;
        tracing::info!(plugin = %self.plugin, to = ?message.to, subject = %message.subject, "mail sent for a plugin");
        Ok(())
    }
}
