//! Which of the permitted tools the model is offered: a short list keeps its attention
//! (and the prompt) on what matters for this alert (pure).

use serde_json::Value;

use crate::playbook::AlertContext;

/// A permitted tool, as the model may see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    /// `server__tool`.
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    /// The server says it changes nothing (believed for our own servers only).
    pub read_only: bool,
}

impl ToolInfo {
    pub fn server(&self) -> &str {
        self.name.split_once("__").map_or("", |(s, _)| s)
    }
}

/// Up to `max` tools: those of servers the playbook used first, then those of servers
/// the alert names, read-only before the rest, then by name.
pub fn choose(tools: &[ToolInfo], playbook_servers: &[&str], alert: &AlertContext, max: usize) -> Vec<ToolInfo> {
    let text: String = alert
        .labels
        .iter()
        .chain(alert.annotations.iter())
        .flat_map(|(k, v)| [k.as_str(), v.as_str()])
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let score = |t: &ToolInfo| {
        let server = t.server();
        let mut s = 0;
        if playbook_servers.contains(&server) {
            s += 4;
        }
        if !server.is_empty() && text.contains(&server.to_lowercase()) {
            s += 2;
        }
        if t.read_only {
            s += 1;
        }
        s
    };
    let mut ranked: Vec<(i32, &ToolInfo)> = tools.iter().map(|t| (score(t), t)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    ranked.into_iter().take(max).map(|(_, t)| t.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, read_only: bool) -> ToolInfo {
        ToolInfo { name: name.into(), description: String::new(), parameters: serde_json::json!({}), read_only }
    }

    #[test]
    fn the_playbooks_and_the_alerts_servers_come_first() {
        let tools = [
            tool("spark__list_applications", true),
            tool("presto__describe_table", true),
            tool("airflow__clear_task_instances", false),
            tool("airflow__get_task_log", true),
            tool("other__ping", true),
        ];
        let mut alert = AlertContext::default();
        alert.labels.insert("system".into(), "presto".into());
        let chosen: Vec<String> = choose(&tools, &["airflow"], &alert, 4).into_iter().map(|t| t.name).collect();
        assert_eq!(
            chosen,
            ["airflow__get_task_log", "airflow__clear_task_instances", "presto__describe_table", "other__ping"]
        );
    }
}
