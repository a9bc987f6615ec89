//! The model seam: one chat-completions call. The real one is async-openai against any
//! OpenAI-compatible endpoint; tests put a scripted server behind the real client, or
//! a fake behind this trait.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{CreateChatCompletionRequest, CreateChatCompletionResponse};
use async_trait::async_trait;
use secrecy::ExposeSecret;

use crate::config::LlmConfig;

#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("the model did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the model endpoint failed: {0}")]
    Api(String),
    #[error("the model's answer has no choices")]
    Empty,
}

#[async_trait]
pub trait ChatModel: Send + Sync {
    /// The model name requests carry (and prices are looked up by).
    fn model(&self) -> &str;
    async fn chat(&self, request: CreateChatCompletionRequest) -> Result<CreateChatCompletionResponse, LlmError>;
}

/// An OpenAI-compatible endpoint through async-openai. No automatic retries: a failed
/// turn ends the planner, and the playbook's report stands.
pub struct OpenAiModel {
    client: Client<OpenAIConfig>,
    model: String,
    timeout: Duration,
}

impl OpenAiModel {
    pub fn new(config: &LlmConfig) -> OpenAiModel {
        let mut oc = OpenAIConfig::new().with_api_base(config.base_url.clone());
        // Local servers (vLLM, Ollama) take no key; async-openai would otherwise send
        // the OPENAI_API_KEY of the environment, which belongs to someone else.
        oc = oc.with_api_key(config.api_key.as_ref().map(|k| k.expose_secret().to_string()).unwrap_or_default());
        OpenAiModel { client: Client::with_config(oc), model: config.model.clone(), timeout: config.timeout }
    }
}

#[async_trait]
impl ChatModel for OpenAiModel {
    fn model(&self) -> &str {
        &self.model
    }

    async fn chat(&self, request: CreateChatCompletionRequest) -> Result<CreateChatCompletionResponse, LlmError> {
        match tokio::time::timeout(self.timeout, self.client.chat().create(request)).await {
            Err(_) => Err(LlmError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(LlmError::Api(e.to_string())),
            Ok(Ok(r)) if r.choices.is_empty() => Err(LlmError::Empty),
            Ok(Ok(r)) => Ok(r),
        }
    }
}
