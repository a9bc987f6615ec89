//! The Helm chart and its example values (deploy/): `deploy/check.sh` passes (lint,
//! render, strict validation against pinned Kubernetes versions), each example renders
//! what it promises, and every configuration the chart renders is one the `inquest`
//! binary accepts. Helm is the one `deploy/check.sh` installs (a cached venv).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MICROSERVICES: &str = "deploy/helm/values-microservices.yaml";
const MONOLITHIC: &str = "deploy/helm/values-monolithic.yaml";
/// The roles of the microservices example: (component, object name).
const ROLES: [(&str, &str); 5] = [
    ("agent", "inquest-agent"),
    ("registry", "inquest-registry"),
    ("airflow", "inquest-airflow"),
    ("presto", "inquest-presto"),
    ("spark", "inquest-spark"),
];

#[test]
fn check_script_passes() {
    let out = Command::new("bash").arg(Path::new(ROOT).join("deploy/check.sh")).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "deploy/check.sh failed ({}):\n{text}", out.status);
    for expected in ["helm lint --strict", "validated", "ServiceMonitor", "deploy/check.sh: ok"] {
        assert!(text.contains(expected), "deploy/check.sh did not report `{expected}`:\n{text}");
    }
}

#[test]
fn microservices_runs_every_role_apart() {
    let objects = Rendered::of(&[MICROSERVICES], &[]);
    for (role, name) in ROLES {
        let server = !matches!(role, "agent" | "registry");
        let deployment = objects.get("Deployment", name);
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];

        let expected_args: Vec<&str> = if server { vec!["server", role] } else { vec![role] };
        assert_eq!(container["args"], serde_json::json!(expected_args), "{name}: args");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["securityContext"]["runAsUser"], 10001, "{name}");
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false, "{name}");
        // Service links would become INQUEST_* variables the configuration refuses.
        assert_eq!(pod["enableServiceLinks"], false, "{name}");

        // Probes: /readyz and /healthz on the listener that serves them; a domain server
        // on its own TLS listener beside /mcp, the others on the public port.
        let (port, scheme) = if server { ("mcp", "HTTPS") } else { ("http", "HTTP") };
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{name}: {probe}");
            assert_eq!(get["port"], port, "{name}: {probe}");
            assert_eq!(get["scheme"], scheme, "{name}: {probe}");
        }
        let ports = names(&container["ports"]);
        assert!(ports.contains(port), "{name}: no container port {port} in {ports:?}");
        let service = objects.get("Service", name);
        assert!(names(&service["spec"]["ports"]).contains(port), "{name}: the Service has no port {port}");
        assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"], "{name}");

        // The store URL only from the Secret, and only where there is a store.
        let env = &container["env"];
        assert_eq!(env_value(env, "INQUEST_CONFIG"), Some("/etc/inquest/config/inquest.toml"), "{name}");
        let store = env_entry(env, "INQUEST_STORE__URL");
        if server {
            assert!(store.is_none(), "{name}: a domain server has no store");
        } else {
            let store = store.unwrap_or_else(|| panic!("{name}: no INQUEST_STORE__URL"));
            assert_eq!(
                store["valueFrom"]["secretKeyRef"],
                serde_json::json!({"name": "inquest-postgres", "key": "url"})
            );
            assert!(store.get("value").is_none(), "{name}: the store URL is written out");
        }

        // SPIRE: the Workload API through the SPIFFE CSI driver, and the ID the code expects.
        let volumes = &pod["volumes"];
        assert!(
            volumes.as_array().unwrap().iter().any(|v| v["csi"]["driver"] == "csi.spiffe.io"),
            "{name}: no SPIFFE CSI volume"
        );
        let path = if server { format!("server/{role}") } else { role.to_string() };
        assert_eq!(
            objects.get("ClusterSPIFFEID", &format!("data-{name}"))["spec"]["spiffeIDTemplate"],
            format!("spiffe://inquest.example.com/{path}")
        );
        let config = objects.config(name);
        assert!(config.contains("source = \"workload_api\""), "{name}:\n{config}");
        assert!(config.contains("socket = \"unix:///spiffe-workload-api/spire-agent.sock\""), "{name}:\n{config}");

        let hpa = objects.get("HorizontalPodAutoscaler", name);
        assert_eq!(hpa["apiVersion"], "autoscaling/v2");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], name);
        // The HPA owns the replica count.
        assert!(deployment["spec"].get("replicas").is_none(), "{name}: replicas beside an HPA");
        let pdb = objects.get("PodDisruptionBudget", name);
        assert_eq!(pdb["apiVersion"], "policy/v1");
        assert_eq!(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"]);
        assert_eq!(objects.get("NetworkPolicy", name)["spec"]["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
        let monitor = objects.get("ServiceMonitor", name);
        let endpoint = &monitor["spec"]["endpoints"][0];
        let (port, path, scheme) = if server { ("mcp", "/mcp/metrics", "https") } else { ("http", "/metrics", "http") };
        assert_eq!(endpoint["port"], port, "{name}: metrics");
        assert_eq!(endpoint["path"], path, "{name}: metrics");
        assert_eq!(endpoint["scheme"], scheme, "{name}: metrics");
    }
    assert!(objects.get("HorizontalPodAutoscaler", "inquest-agent")["spec"]["minReplicas"].as_i64().unwrap() >= 3);
    assert!(objects.of_kind("PersistentVolumeClaim").is_empty(), "PostgreSQL, not a volume");

    // Who may talk to whom.
    let registry = objects.get("NetworkPolicy", "inquest-registry");
    let mesh = rule_on_port(&registry["spec"]["ingress"], "mesh");
    assert_eq!(components(&mesh["from"]), ["agent", "server"]);
    let airflow = objects.get("NetworkPolicy", "inquest-airflow");
    assert!(components(&rule_on_port(&airflow["spec"]["ingress"], "mcp")["from"]).contains(&"agent".to_string()));
    let agent_egress = &objects.get("NetworkPolicy", "inquest-agent")["spec"]["egress"];
    for port in [53, 5432, 7401, 7411, 7412, 7413] {
        assert!(egress_ports(agent_egress).contains(&port), "the agent may not reach port {port}");
    }
    assert!(!egress_ports(&airflow["spec"]["egress"]).contains(&5432), "a domain server reaching PostgreSQL");
}

#[test]
fn monolithic_runs_all_on_a_volume() {
    let objects = Rendered::of(&[MONOLITHIC], &[]);
    let deployments = objects.of_kind("Deployment");
    assert_eq!(deployments.len(), 1, "one process for every role");
    let deployment = deployments[0];
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["args"], serde_json::json!(["all"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);

    let pvc = objects.of_kind("PersistentVolumeClaim");
    assert_eq!(pvc.len(), 1);
    let claim = pvc[0]["metadata"]["name"].as_str().unwrap();
    let data = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "data").unwrap();
    assert_eq!(data["persistentVolumeClaim"]["claimName"], claim);
    let mount = container["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "data").unwrap();
    assert_eq!(mount["mountPath"], "/var/lib/inquest");

    assert!(env_entry(&container["env"], "INQUEST_STORE__URL").is_none(), "SQLite needs no store Secret");
    for kind in ["HorizontalPodAutoscaler", "PodDisruptionBudget", "ClusterSPIFFEID"] {
        assert!(objects.of_kind(kind).is_empty(), "{kind} in the monolithic example");
    }
    let name = deployment["metadata"]["name"].as_str().unwrap();
    let config = objects.config(name);
    assert!(config.contains("source = \"dev\""), "{config}");
    assert!(config.contains("mesh_listen = \"127.0.0.1:7401\""), "{config}");
    assert!(config.contains("[servers.spark]") && config.contains("[servers.airflow]\n"), "{config}");
    assert_eq!(objects.of_kind("Service").len(), 1);
    assert_eq!(objects.of_kind("NetworkPolicy").len(), 1);
}

#[test]
fn a_domain_team_adds_its_own_server_with_one_entry() {
    let extra = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        extra.path(),
        "servers:\n  hive:\n    enabled: true\n    image: {repository: registry.example.com/data/hive-mcp, tag: \"1.4.0\"}\n    \
         args: [\"serve\", \"--config\", \"/etc/inquest/config/inquest.toml\"]\n    port: 7420\n    replicas: 2\n    \
         resources: {requests: {cpu: 50m, memory: 64Mi}}\n    autoscaling: {enabled: true, maxReplicas: 3, targetCPUUtilizationPercentage: 80}\n    \
         config: {metastore_url: \"thrift://hive-metastore:9083\", max_rows: 500}\n",
    )
    .unwrap();
    let objects = Rendered::of(&[MICROSERVICES, extra.path().to_str().unwrap()], &[]);
    let container = &objects.get("Deployment", "inquest-hive")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example.com/data/hive-mcp:1.4.0");
    assert_eq!(container["args"], serde_json::json!(["serve", "--config", "/etc/inquest/config/inquest.toml"]));
    assert_eq!(container["ports"][0]["containerPort"], 7420);
    assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(objects.get("Service", "inquest-hive")["spec"]["ports"][0]["port"], 7420);
    assert_eq!(objects.get("HorizontalPodAutoscaler", "inquest-hive")["spec"]["maxReplicas"], 3);
    objects.get("PodDisruptionBudget", "inquest-hive");
    assert_eq!(
        objects.get("ClusterSPIFFEID", "data-inquest-hive")["spec"]["spiffeIDTemplate"],
        "spiffe://inquest.example.com/server/hive"
    );
    let config = objects.config("inquest-hive");
    for line in [
        "[servers.hive]",
        "listen = \"0.0.0.0:7420\"",
        "public_url = \"https://inquest-hive.data.svc:7420/mcp\"",
        "metastore_url = \"thrift://hive-metastore:9083\"",
        // Integers stay integers (Helm's own toToml would write 500.0).
        "max_rows = 500",
    ] {
        assert!(config.contains(line), "no `{line}` in:\n{config}");
    }
    assert!(egress_ports(&objects.get("NetworkPolicy", "inquest-agent")["spec"]["egress"]).contains(&7420));
    // The built-in servers keep the chart's image.
    let airflow = &objects.get("Deployment", "inquest-airflow")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(airflow["image"], "registry.example.com/platform/inquest:0.1.0");
    objects.configs_are_accepted();
}

#[test]
fn every_rendered_configuration_is_accepted_by_inquest() {
    for values in [MICROSERVICES, MONOLITHIC] {
        Rendered::of(&[values], &[]).configs_are_accepted();
    }
    // The other identity modes too.
    let istio = Rendered::of(&[MICROSERVICES], &["identity.mode=istio", "identity.trustDomain=cluster.local"]);
    istio.configs_are_accepted();
    let config = istio.config("inquest-agent");
    assert!(config.contains("cert_file = \"/etc/istio-output-certs/cert-chain.pem\""), "{config}");
    assert!(config.contains("\"spiffe://cluster.local/ns/data/sa/inquest-registry\""), "{config}");
    let annotations = &istio.get("Deployment", "inquest-agent")["spec"]["template"]["metadata"]["annotations"];
    assert!(annotations["proxy.istio.io/config"].as_str().unwrap().contains("OUTPUT_CERTS: /etc/istio-output-certs"));
    assert!(istio.of_kind("ClusterSPIFFEID").is_empty());

    let files = Rendered::of(&[MICROSERVICES], &["identity.mode=files", "publicTls.existingSecret=inquest-tls"]);
    files.configs_are_accepted();
    let pod = &files.get("Deployment", "inquest-presto")["spec"]["template"]["spec"];
    let svid = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "svid").unwrap();
    assert_eq!(svid["secret"]["secretName"], "inquest-presto-svid");
    let registry = &files.get("Deployment", "inquest-registry")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(registry["readinessProbe"]["httpGet"]["scheme"], "HTTPS", "the public listener speaks TLS");
    assert!(files.config("inquest-registry").contains("cert_file = \"/etc/inquest/tls/tls.crt\""));
}

#[test]
fn contradictory_values_are_refused() {
    for (sets, why) in [
        (vec!["mode=monolithic", "identity.mode=spire"], "identity.mode: dev"),
        (vec!["identity.mode=dev"], "use spire, istio or files"),
        (vec!["identity.mode=vault"], "identity.mode must be"),
        (vec!["mode=both"], "mode must be"),
        (vec!["servers.agent.enabled=true"], "clash"),
        (vec!["servers.Bad_Name.enabled=true"], "DNS label"),
    ] {
        let out = helm_template(&[MICROSERVICES], &sets);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sets:?} rendered");
        assert!(stderr.contains(why), "{sets:?}: expected `{why}` in:\n{stderr}");
    }
}

/// The objects one `helm template` rendered.
struct Rendered(Vec<Value>);

impl Rendered {
    fn of(values: &[&str], sets: &[&str]) -> Rendered {
        let out = helm_template(values, sets);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "helm template {values:?} {sets:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs: Vec<Value> = serde_saphyr::from_multiple(&stdout).unwrap();
        Rendered(docs.into_iter().filter(|d| !d.is_null()).collect())
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.0.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self.of_kind(kind).into_iter().filter(|o| o["metadata"]["name"] == name).collect();
        assert_eq!(found.len(), 1, "{kind} {name}: found {}", found.len());
        found[0]
    }

    /// The inquest.toml of the role named `name`.
    fn config(&self, name: &str) -> String {
        self.get("ConfigMap", &format!("{name}-config"))["data"]["inquest.toml"].as_str().unwrap().to_string()
    }

    /// Runs `inquest config check` for every Deployment with its ConfigMap and its
    /// environment (values from Secrets replaced by stand-ins), as its pod would load it.
    fn configs_are_accepted(&self) {
        let dir = tempfile::tempdir().unwrap();
        for deployment in self.of_kind("Deployment") {
            let name = deployment["metadata"]["name"].as_str().unwrap();
            let container = &deployment["spec"]["template"]["spec"]["containers"][0];
            let file = dir.path().join(format!("{name}.toml"));
            std::fs::write(&file, self.config(name)).unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_inquest"));
            cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).args(["config", "check"]);
            for entry in container["env"].as_array().unwrap() {
                let key = entry["name"].as_str().unwrap();
                let value = match (key, entry["value"].as_str()) {
                    ("INQUEST_CONFIG", _) => file.display().to_string(),
                    (_, Some(v)) => v.to_string(),
                    ("INQUEST_STORE__URL", None) => "postgres://inquest:secret@postgres:5432/inquest".to_string(),
                    (_, None) => "stand-in-secret".to_string(),
                };
                cmd.env(key, value);
            }
            let out: Output = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "inquest config check refused {name}'s configuration:\n{}\n--- inquest.toml\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.config(name)
            );
        }
    }
}

/// `helm template` of the chart in namespace `data`, with the helm `deploy/check.sh`
/// installs.
fn helm_template(values: &[&str], sets: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(tools().join("helm"));
    cmd.current_dir(ROOT)
        .args(["template", "inquest", "deploy/helm/inquest", "--namespace", "data"])
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"));
    for v in values {
        cmd.args(["-f", v]);
    }
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd.output().unwrap()
}

/// The bin folder of the cached venv with helm (installed by `deploy/check.sh --tools`).
fn tools() -> PathBuf {
    static TOOLS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TOOLS
        .get_or_init(|| {
            let out =
                Command::new("bash").arg(Path::new(ROOT).join("deploy/check.sh")).arg("--tools").output().unwrap();
            assert!(
                out.status.success(),
                "deploy/check.sh --tools failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim())
        })
        .clone()
}

fn names(list: &Value) -> BTreeSet<&str> {
    list.as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect()
}

fn env_entry<'a>(env: &'a Value, name: &str) -> Option<&'a Value> {
    env.as_array().unwrap().iter().find(|e| e["name"] == name)
}

fn env_value<'a>(env: &'a Value, name: &str) -> Option<&'a str> {
    env_entry(env, name).and_then(|e| e["value"].as_str())
}

/// The ingress rule of a NetworkPolicy that opens `port`.
fn rule_on_port<'a>(rules: &'a Value, port: &str) -> &'a Value {
    rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ports"].as_array().is_some_and(|ps| ps.iter().any(|p| p["port"] == port)))
        .unwrap_or_else(|| panic!("no rule for port {port} in {rules}"))
}

/// The components a rule's peers select, sorted.
fn components(peers: &Value) -> Vec<String> {
    let mut out: Vec<String> = peers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["podSelector"]["matchLabels"]["app.kubernetes.io/component"].as_str().map(String::from))
        .collect();
    out.sort();
    out
}

/// Every numbered port an egress policy opens.
fn egress_ports(rules: &Value) -> BTreeSet<i64> {
    rules
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_i64())
        .collect()
}
