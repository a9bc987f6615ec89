//! Prompt templates (`prompts/*.j2`), rendered with minijinja. The files are built into
//! the binary; a deployment may override any of them from a folder (`agent.prompts`).
//! Undefined variables are errors, so a template and its callers cannot drift apart
//! silently.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The templates, by file name.
const BUILT_IN: &[(&str, &str)] = &[
    ("system.md.j2", include_str!("../../prompts/system.md.j2")),
    ("investigate.md.j2", include_str!("../../prompts/investigate.md.j2")),
    ("tool_result.md.j2", include_str!("../../prompts/tool_result.md.j2")),
    ("nudge.md.j2", include_str!("../../prompts/nudge.md.j2")),
    ("follow_up.md.j2", include_str!("../../prompts/follow_up.md.j2")),
];

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("prompt {name}: cannot read {path}: {why}")]
    Read { name: String, path: String, why: String },
    #[error("prompt {name}: {why}")]
    Template { name: String, why: String },
}

pub struct Prompts {
    env: Environment<'static>,
}

impl Prompts {
    /// The built-in templates, each replaced by the file of the same name in
    /// `overrides` when there is one.
    pub fn load(overrides: Option<&Path>) -> Result<Prompts, PromptError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .build()
            .map_err(|e| PromptError::Template { name: "(syntax)".into(), why: e.to_string() })?;
        env.set_syntax(syntax);
        for (name, text) in BUILT_IN {
            let source = match overrides.map(|d| d.join(name)).filter(|p| p.is_file()) {
                Some(path) => std::fs::read_to_string(&path).map_err(|e| PromptError::Read {
                    name: name.to_string(),
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?,
                None => text.to_string(),
            };
            env.add_template_owned(name.to_string(), source)
                .map_err(|e| PromptError::Template { name: name.to_string(), why: e.to_string() })?;
        }
        Ok(Prompts { env })
    }

    pub fn render<S: Serialize>(&self, name: &str, context: S) -> Result<String, PromptError> {
        let template =
            self.env.get_template(name).map_err(|e| PromptError::Template { name: name.into(), why: e.to_string() })?;
        template
            .render(minijinja::Value::from(minijinja::value::Serde(&context)))
            .map(|s| s.trim().to_string())
            .map_err(|e| PromptError::Template { name: name.into(), why: format!("{e:#}") })
    }
}
