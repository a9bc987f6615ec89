//! The tools a scenario offers the planner, described as the built-in domain servers
//! describe them, so a model sees the same names, descriptions and argument schemas
//! as in production.

use serde_json::{Value, json};

use super::scenario::{OfferedTool, Scenario};
use crate::mcp::{Domain, ToolSpec};
use crate::planner::ToolInfo;

/// The scenario's tools: its `tools` list, or every tool its responses name, in order.
/// What an entry leaves out comes from the built-in domain with that tool; a tool no
/// built-in domain has takes any arguments and is not read-only.
pub fn offered(scenario: &Scenario, builtin: &[(String, ToolSpec)]) -> Vec<ToolInfo> {
    let entries: Vec<OfferedTool> = match &scenario.tools {
        Some(tools) => tools.clone(),
        None => {
            let mut names: Vec<String> = Vec::new();
            for r in &scenario.responses {
                if !names.contains(&r.tool) {
                    names.push(r.tool.clone());
                }
            }
            names
                .into_iter()
                .map(|name| OfferedTool { name, description: None, read_only: None, parameters: None })
                .collect()
        }
    };
    entries
        .into_iter()
        .map(|t| {
            let spec = builtin.iter().find(|(n, _)| *n == t.name).map(|(_, s)| s);
            ToolInfo {
                description: t.description.or_else(|| spec.map(|s| s.description.to_string())).unwrap_or_default(),
                read_only: t.read_only.or_else(|| spec.map(|s| s.hints.read_only)).unwrap_or(false),
                parameters: t
                    .parameters
                    .or_else(|| spec.map(|s| Value::Object(s.input_schema.clone())))
                    .unwrap_or_else(|| json!({"type": "object"})),
                name: t.name,
            }
        })
        .collect()
}

/// Every tool of the built-in domains, as `server__tool`.
pub fn builtin() -> Vec<(String, ToolSpec)> {
    use crate::domains::{airflow, presto, spark};
    let mut out: Vec<(String, ToolSpec)> = Vec::new();
    out.extend(airflow::tools::specs().into_iter().map(|s| (format!("airflow__{}", s.name), s)));
    out.extend(spark::tools::specs().into_iter().map(|s| (format!("spark__{}", s.name), s)));
    // Presto's specs hang off its domain; building one opens no connection.
    match presto::PrestoDomain::new(presto::config::PrestoConfig::default()) {
        Ok(domain) => out.extend(domain.tools().into_iter().map(|s| (format!("presto__{}", s.name), s))),
        Err(error) => tracing::warn!(%error, "the Presto tools' descriptions are not available to the eval"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::scenario::Recorded;

    fn scenario(tools: Option<Vec<OfferedTool>>) -> Scenario {
        let rec = |tool: &str| Recorded { tool: tool.into(), args: Default::default(), answer: Ok(json!({})) };
        Scenario {
            file: "s.yaml".into(),
            name: "s".into(),
            description: "d".into(),
            system: crate::eval::scenario::System::Airflow,
            labels: Default::default(),
            annotations: Default::default(),
            team: "data".into(),
            responses: vec![rec("airflow__get_task_log"), rec("custom__probe"), rec("airflow__get_task_log")],
            tools,
            expect: Default::default(),
        }
    }

    #[test]
    fn responses_name_the_tools_and_built_in_specs_describe_them() {
        let builtin = builtin();
        for server in ["airflow__", "presto__", "spark__"] {
            assert!(builtin.iter().any(|(n, _)| n.starts_with(server)), "{server} tools are known");
        }
        let tools = offered(&scenario(None), &builtin);
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["airflow__get_task_log", "custom__probe"]);
        assert!(tools[0].read_only && tools[0].description.contains("log"));
        assert_eq!(tools[0].parameters["properties"]["task_id"]["type"], json!("string"));
        assert!(!tools[1].read_only);
        assert_eq!(tools[1].parameters, json!({"type": "object"}));

        let listed = scenario(Some(vec![OfferedTool {
            name: "airflow__clear_task_instances".into(),
            description: Some("clears".into()),
            read_only: None,
            parameters: None,
        }]));
        let tools = offered(&listed, &builtin);
        assert_eq!(tools.len(), 1);
        assert_eq!(tools[0].description, "clears");
        assert!(!tools[0].read_only, "a write stays a write");
    }
}
