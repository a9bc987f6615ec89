//! GitHub's REST description (`@octokit/openapi`, `generated/api.github.com.json`),
//! for checking what the GitHub test server receives and answers, and the webhooks it
//! sends (the description's `x-webhooks`).
//!
//! The description is OpenAPI 3.0: its schemas are turned into JSON Schema (draft 7,
//! whose `$ref` ignores siblings as OpenAPI 3.0's does) once per process: `nullable:
//! true` becomes a `"null"` type, OpenAPI-only keywords are dropped, and every
//! `#/components/schemas/...` reference points at one registered document holding the
//! converted components. Each operation's schema is compiled the first time it is
//! needed and kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, Registry, ValidationError, Validator};
use serde_json::{Map, Value, json};

use super::refclients::{cache_dir, npm_install};

pub const OPENAPI: &str = "@octokit/openapi@23.0.2";
const CACHE: &str = "npm/octokit-openapi-23.0.2";
/// Where the converted `components` document is registered.
const COMPONENTS: &str = "https://openapi.github.test/components.json";

/// An operation of the description: `GET /repos/{owner}/{repo}/pulls` and its JSON.
#[derive(Debug, Clone)]
pub struct Operation {
    pub id: String,
    pub method: String,
    pub template: String,
    pub docs: String,
}

/// Path parameters that may hold slashes (`heads/a/b`, `jobs/etl/x.conf`); only as
/// the last segment.
const SLASHED: &[&str] = &["ref", "path"];

struct Route {
    method: String,
    template: String,
    /// Fixed segments; `None` for a parameter.
    segments: Vec<Option<String>>,
    /// The last segment is a parameter that may hold slashes.
    slashed: bool,
}

pub struct Description {
    /// `paths`, `components.responses` and `x-webhooks`, as published.
    doc: Value,
    registry: Registry<'static>,
    routes: Vec<Route>,
    compiled: Mutex<HashMap<String, Option<Arc<Validator>>>>,
    /// How long reading, converting and indexing the description took.
    pub loaded_in: Duration,
}

static DESCRIPTION: tokio::sync::OnceCell<Description> = tokio::sync::OnceCell::const_new();

/// The description, installed once per machine and loaded once per process.
pub async fn description() -> &'static Description {
    DESCRIPTION
        .get_or_init(|| async {
            let dir = cache_dir(CACHE);
            npm_install(&dir, &[OPENAPI]).await;
            let file = dir.join("node_modules/@octokit/openapi/generated/api.github.com.json");
            tokio::task::spawn_blocking(move || Description::load(&std::fs::read(&file).unwrap())).await.unwrap()
        })
        .await
}

impl Description {
    fn load(bytes: &[u8]) -> Description {
        let started = Instant::now();
        let mut all: Value = serde_json::from_slice(bytes).unwrap();
        let schemas = all["components"]["schemas"].take();
        let converted: Map<String, Value> =
            schemas.as_object().unwrap().iter().map(|(name, s)| (name.clone(), convert(s))).collect();
        let registry = Registry::new()
            .draft(Draft::Draft7)
            .add(COMPONENTS, json!({"components": {"schemas": converted}}))
            .unwrap()
            .prepare()
            .unwrap();
        let doc = json!({
            "paths": all["paths"].take(),
            "components": {"responses": all["components"]["responses"].take()},
            "x-webhooks": all["x-webhooks"].take(),
        });
        let mut routes = Vec::new();
        for (template, item) in doc["paths"].as_object().unwrap() {
            for method in ["get", "put", "post", "delete", "patch", "head"] {
                if item.get(method).is_some() {
                    let segments = template
                        .split('/')
                        .skip(1)
                        .map(|s| {
                            let var = s.starts_with('{') && s.ends_with('}') && s.matches('{').count() == 1;
                            (!var).then(|| s.to_string())
                        })
                        .collect();
                    let last = template.rsplit('/').next().unwrap_or_default();
                    let slashed = SLASHED.iter().any(|p| last == format!("{{{p}}}"));
                    routes.push(Route { method: method.into(), template: template.clone(), segments, slashed });
                }
            }
        }
        Description { doc, registry, routes, compiled: Mutex::default(), loaded_in: started.elapsed() }
    }

    /// The operation `method path` (no query) is, if the description has it. A
    /// parameter matches one segment; a last `{ref}` or `{path}` the rest
    /// (`git/refs/{ref}` takes `heads/a/b`). The match with the most fixed segments wins.
    pub fn operation(&self, method: &str, path: &str) -> Option<Operation> {
        let method = method.to_ascii_lowercase();
        let got: Vec<&str> = path.split('/').skip(1).collect();
        let fits = |r: &Route| {
            let n = r.segments.len();
            let fixed_fit = |i: usize, s: &Option<String>| s.as_ref().is_none_or(|lit| lit == got[i]);
            if got.len() == n {
                r.segments.iter().enumerate().all(|(i, s)| fixed_fit(i, s) && !got[i].is_empty())
            } else {
                got.len() > n && r.slashed && r.segments.iter().enumerate().all(|(i, s)| fixed_fit(i, s))
            }
        };
        let best = self
            .routes
            .iter()
            .filter(|r| r.method == method && fits(r))
            .max_by_key(|r| (r.segments.len() == got.len(), r.segments.iter().filter(|s| s.is_some()).count()))?;
        let op = &self.doc["paths"][&best.template][&best.method];
        Some(Operation {
            id: op["operationId"].as_str().unwrap_or_default().to_string(),
            method: best.method.to_ascii_uppercase(),
            template: best.template.clone(),
            docs: op["externalDocs"]["url"].as_str().unwrap_or("https://docs.github.com/rest").to_string(),
        })
    }

    fn op(&self, op: &Operation) -> &Value {
        &self.doc["paths"][&op.template][op.method.to_ascii_lowercase()]
    }

    /// Follows an OpenAPI `$ref` (`#/components/responses/...`) within the document.
    fn follow<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => self.doc.pointer(pointer).unwrap_or(&Value::Null),
            None => v,
        }
    }

    /// Whether the operation takes a JSON body.
    pub fn takes_json(&self, op: &Operation) -> bool {
        !self.follow(&self.op(op)["requestBody"])["content"]["application/json"]["schema"].is_null()
    }

    /// Whether the operation's request body may not be left out.
    pub fn body_required(&self, op: &Operation) -> bool {
        self.follow(&self.op(op)["requestBody"])["required"] == true
    }

    /// What is wrong with `body` as the operation's JSON request body.
    pub fn check_request(&self, op: &Operation, body: &Value) -> Vec<Problem> {
        let schema = &self.follow(&self.op(op)["requestBody"])["content"]["application/json"]["schema"];
        match self.validator(&format!("{} request", op.id), schema) {
            Some(v) => problems(&v, body),
            None => vec![],
        }
    }

    /// What is wrong with a response of `status` whose body is `body`, sent as
    /// `content_type` (the media type, without parameters).
    pub fn check_response(&self, op: &Operation, status: u16, content_type: &str, body: &[u8]) -> Vec<Problem> {
        let responses = &self.op(op)["responses"];
        let Some(response) = responses.get(status.to_string()).or_else(|| responses.get("default")) else {
            return vec![Problem::whole(format!("status {status} is not one GitHub documents for this operation"))];
        };
        let content = &self.follow(response)["content"];
        let media = if content.get(content_type).is_some() { content_type } else { "application/json" };
        let schema = &content[media]["schema"];
        if schema.is_null() {
            if body.is_empty() {
                return vec![];
            }
            // The description leaves some error answers without a body, yet GitHub sends
            // its usual error object with them (`{"message": ...}`): checked as that.
            if status >= 400 {
                return self.check_json(
                    "basic-error",
                    &json!({"$ref": format!("{COMPONENTS}#/components/schemas/basic-error")}),
                    body,
                );
            }
            return vec![Problem::whole(format!(
                "status {status} has no body in GitHub's description, yet one was sent"
            ))];
        }
        if content.get(content_type).is_none() && !content_type.ends_with("json") {
            return vec![Problem::whole(format!("sent as `{content_type}`, which GitHub does not for this answer"))];
        }
        self.check_json(&format!("{} {status} {media}", op.id), schema, body)
    }

    fn check_json(&self, key: &str, schema: &Value, body: &[u8]) -> Vec<Problem> {
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return vec![Problem::whole(format!("the body is not JSON: {e}"))],
        };
        match self.validator(key, schema) {
            Some(v) => problems(&v, &value),
            None => vec![],
        }
    }

    /// What is wrong with `payload` as the webhook `event` with its `action`
    /// (`pull_request_review` + `submitted`: `x-webhooks/pull-request-review-submitted`).
    pub fn check_webhook(&self, event: &str, payload: &Value) -> Vec<Problem> {
        let mut name = event.replace('_', "-");
        if let Some(action) = payload["action"].as_str() {
            name = format!("{name}-{}", action.replace('_', "-"));
        }
        let hook = &self.doc["x-webhooks"][&name]["post"];
        let schema = &self.follow(&hook["requestBody"])["content"]["application/json"]["schema"];
        if schema.is_null() {
            return vec![Problem::whole(format!("GitHub's description has no `{name}` webhook"))];
        }
        match self.validator(&format!("webhook {name}"), schema) {
            Some(v) => problems(&v, payload),
            None => vec![],
        }
    }

    /// The compiled `schema`, made once per `key`; `None` if there is no schema.
    fn validator(&self, key: &str, schema: &Value) -> Option<Arc<Validator>> {
        if let Some(v) = self.compiled.lock().unwrap().get(key) {
            return v.clone();
        }
        let made = (!schema.is_null()).then(|| {
            let validator = jsonschema::options()
                .with_draft(Draft::Draft7)
                .with_registry(&self.registry)
                .should_validate_formats(true)
                .build(&convert(schema))
                .unwrap_or_else(|e| panic!("GitHub's schema for {key} does not compile: {e}"));
            Arc::new(validator)
        });
        self.compiled.lock().unwrap().insert(key.to_string(), made.clone());
        made
    }
}

/// One thing wrong with a body: where (a JSON pointer into it) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: String,
    pub what: String,
    /// A required property that is missing, by name.
    pub missing: Option<String>,
}

impl Problem {
    fn whole(what: String) -> Problem {
        Problem { at: String::new(), what, missing: None }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.at.is_empty() { "/" } else { &self.at };
        write!(f, "{at}: {}", self.what)
    }
}

fn problems(validator: &Validator, instance: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    for e in validator.iter_errors(instance) {
        describe(&e, &mut out);
    }
    out.dedup();
    out
}

/// The error as problems; for `anyOf`/`oneOf`, the problems of the branches that got
/// furthest (not the ones that failed on the value's type alone, such as `null`).
fn describe(e: &ValidationError<'_>, out: &mut Vec<Problem>) {
    let at = e.instance_path().to_string();
    match e.kind() {
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            let only_type = |branch: &Vec<ValidationError<'static>>| {
                branch.len() == 1
                    && matches!(branch[0].kind(), ValidationErrorKind::Type { .. })
                    && branch[0].instance_path().to_string() == at
            };
            let deeper: Vec<&Vec<ValidationError<'static>>> = context.iter().filter(|b| !only_type(b)).collect();
            if deeper.is_empty() {
                out.push(Problem { at, what: short(e), missing: None });
            } else {
                for branch in deeper {
                    for inner in branch {
                        describe(inner, out);
                    }
                }
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().map(str::to_string);
            out.push(Problem { at, what: short(e), missing: name });
        }
        _ => out.push(Problem { at, what: short(e), missing: None }),
    }
}

/// The error's message, with a long value left out.
fn short(e: &ValidationError<'_>) -> String {
    if e.instance().to_string().len() <= 80 { e.to_string() } else { e.masked().to_string() }
}

/// An OpenAPI 3.0 schema as JSON Schema (draft 7).
fn convert(schema: &Value) -> Value {
    let Some(obj) = schema.as_object() else { return schema.clone() };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        let target = if r.starts_with('#') { format!("{COMPONENTS}{r}") } else { r.to_string() };
        return json!({"$ref": target});
    }
    let mut out = Map::new();
    for (k, v) in obj {
        let v = match k.as_str() {
            "properties" | "patternProperties" => {
                Value::Object(v.as_object().into_iter().flatten().map(|(p, s)| (p.clone(), convert(s))).collect())
            }
            "items" | "additionalProperties" | "not" => convert(v),
            "allOf" | "anyOf" | "oneOf" => Value::Array(v.as_array().into_iter().flatten().map(convert).collect()),
            // OpenAPI's own words, not JSON Schema's.
            "nullable" | "discriminator" | "readOnly" | "writeOnly" | "xml" | "externalDocs" | "example"
            | "deprecated" => continue,
            _ if k.starts_with("x-") => continue,
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    if obj.get("nullable") != Some(&Value::Bool(true)) {
        return Value::Object(out);
    }
    match out.get("type").and_then(Value::as_str).map(str::to_string) {
        Some(t) => {
            out.insert("type".into(), json!([t, "null"]));
            if let Some(options) = out.get_mut("enum").and_then(Value::as_array_mut)
                && !options.contains(&Value::Null)
            {
                options.push(Value::Null);
            }
            Value::Object(out)
        }
        None => json!({"anyOf": [{"type": "null"}, Value::Object(out)]}),
    }
}
