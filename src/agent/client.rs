//! The agent as an MCP client: it says it understands form elicitations only so that
//! a server asking to "confirm" an action hears an explicit no. The agent never
//! accepts an elicitation: a confirmation it gave would be the agent approving its own
//! action. Approvals come from people, through the registry (see `approval`).

use rmcp::ClientHandler;
use rmcp::model::{
    ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationCapability,
    FormElicitationCapability, Implementation,
};
use rmcp::service::{RequestContext, RoleClient};
use tracing::warn;

#[derive(Debug, Clone, Copy, Default)]
pub struct AgentClient;

impl ClientHandler for AgentClient {
    fn get_info(&self) -> ClientConfig {
        let elicitation = ElicitationCapability::new().with_form(FormElicitationCapability::new());
        let caps = ClientCapabilities::builder().enable_elicitation_with(elicitation).build();
        ClientConfig::new(caps, Implementation::new("inquest-agent", env!("CARGO_PKG_VERSION")))
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, rmcp::ErrorData> {
        let message = match &request {
            ElicitRequestParams::FormElicitationParams { message, .. } => message.clone(),
            ElicitRequestParams::UrlElicitationParams { message, url, .. } => format!("{message} ({url})"),
            _ => String::from("(an elicitation of a kind this agent does not know)"),
        };
        warn!(%message, "declined an elicitation: the agent never confirms actions itself");
        Ok(ElicitResult::new(ElicitationAction::Decline))
    }
}
