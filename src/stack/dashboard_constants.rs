//! The dashboards' provisioning-time values: the hidden constant
//! `runbook_base` and the default of the textbox `mlflow_url`. Grafana
//! expands nothing inside dashboard JSON, so every deployment provisions
//! copies carrying its own values.
//!
//! [`PROVISIONED`] is the one list of those variables and of where each
//! value comes from. The launcher (`mlwatch up`, `demo`, `nix run`) fills
//! the copies from it ([`rewrite`]). The two deployments that cannot run
//! this code are held to the same list by this module's tests:
//! nix/lib/dashboard-constants.jq (the NixOS module's rewrite, which runs
//! in a build where no mlwatch exists yet) sets exactly these variables,
//! from the module options named here, as `grafana/generate.py --out` does;
//! and the committed dashboards, which compose provisions as they are,
//! carry the values this list derives from the default ports, the ones
//! docker-compose.yml publishes.

use anyhow::Context;

use super::endpoints::Endpoints;

/// One variable that each deployment sets at provisioning.
struct Provisioned {
    /// The dashboard variable (`templating.list[].name`).
    pub name: &'static str,
    /// Its value in the launcher's stack.
    pub value: fn(&Endpoints) -> &str,
    /// The NixOS module expression the value comes from (nix/module.nix
    /// hands it to nix/lib/dashboard-constants.jq as `--arg <name>`).
    /// Read by the test that holds the module to this list.
    #[cfg_attr(not(test), allow(dead_code))]
    nix_option: &'static str,
}

fn runbook_base(endpoints: &Endpoints) -> &str {
    &endpoints.runbooks
}

fn mlflow_url(endpoints: &Endpoints) -> &str {
    &endpoints.mlflow_url
}

/// Every provisioned variable of every dashboard.
const PROVISIONED: [Provisioned; 2] = [
    Provisioned {
        name: "runbook_base",
        value: runbook_base,
        nix_option: "cfg.runbookUrl",
    },
    Provisioned {
        name: "mlflow_url",
        value: mlflow_url,
        nix_option: "cfg.mlflow.url",
    },
];

/// A provisioned dashboard: `source` with every variable of [`PROVISIONED`]
/// set to its value for `endpoints` (as its current value and its only
/// option, the way Grafana stores a constant). A dashboard without one of
/// them is an error: its links would point nowhere.
pub fn rewrite(source: &str, endpoints: &Endpoints) -> anyhow::Result<String> {
    let mut doc: serde_json::Value =
        serde_json::from_str(source).context("dashboard is not valid JSON")?;
    let variables = doc["templating"]["list"]
        .as_array_mut()
        .context("dashboard has no templating.list")?;
    for provisioned in &PROVISIONED {
        let variable = variables
            .iter_mut()
            .find(|v| v["name"] == provisioned.name)
            .with_context(|| format!("dashboard has no variable {}", provisioned.name))?;
        let value = serde_json::Value::String((provisioned.value)(endpoints).to_owned());
        variable["query"] = value.clone();
        variable["current"] = serde_json::json!({"selected": false, "text": value, "value": value});
        variable["options"] =
            serde_json::json!([{"selected": true, "text": value, "value": value}]);
    }
    Ok(serde_json::to_string_pretty(&doc)? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::plan::{endpoints, runbook_page_url};
    use crate::stack::ports::Ports;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn repo() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    fn repo_file(path: &str) -> String {
        std::fs::read_to_string(repo().join(path)).unwrap()
    }

    fn dashboards() -> Vec<(String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(repo().join("grafana/provisioning/dashboards"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        files.sort();
        assert!(files.len() >= 2, "{files:?}");
        files
    }

    fn names() -> BTreeSet<String> {
        PROVISIONED.iter().map(|p| p.name.to_owned()).collect()
    }

    fn variable(dashboard: &str, name: &str) -> serde_json::Value {
        let doc: serde_json::Value = serde_json::from_str(dashboard).unwrap();
        doc["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no variable {name}"))
    }

    fn custom() -> Endpoints {
        Endpoints {
            mlflow_url: "http://127.0.0.1:15123".into(),
            ..endpoints(&Ports::default(), 1, "https://runbooks.example/ml", false).unwrap()
        }
    }

    #[test]
    fn every_provisioned_variable_gets_its_value() {
        for (name, source) in dashboards() {
            let text = rewrite(&source, &custom()).unwrap();
            for provisioned in &PROVISIONED {
                let expected = (provisioned.value)(&custom()).to_owned();
                let v = variable(&text, provisioned.name);
                assert_eq!(v["query"], expected.as_str(), "{name}");
                assert_eq!(v["current"]["value"], expected.as_str(), "{name}");
                assert_eq!(v["options"][0]["value"], expected.as_str(), "{name}");
                assert_eq!(v["options"].as_array().unwrap().len(), 1, "{name}");
            }
        }
        let missing = rewrite(
            r#"{"templating": {"list": [{"name": "runbook_base"}]}}"#,
            &custom(),
        )
        .unwrap_err();
        assert!(missing.to_string().contains("mlflow_url"), "{missing}");
    }

    /// Compose provisions the committed dashboards as they are: their
    /// values are the launcher's for the default ports, which compose
    /// publishes for the runbooks page and MLflow.
    #[test]
    fn the_committed_dashboards_carry_the_values_of_the_default_ports() {
        let ports = Ports::default();
        let defaults = endpoints(&ports, 1, &runbook_page_url(&ports), false).unwrap();
        for (name, source) in dashboards() {
            let committed: serde_json::Value = serde_json::from_str(&source).unwrap();
            let rewritten: serde_json::Value =
                serde_json::from_str(&rewrite(&source, &defaults).unwrap()).unwrap();
            assert_eq!(rewritten, committed, "{name}");
        }
        let compose: serde_yaml::Value =
            serde_yaml::from_str(&repo_file("docker-compose.yml")).unwrap();
        let published = |service: &str| -> Vec<String> {
            compose["services"][service]["ports"]
                .as_sequence()
                .unwrap_or_else(|| panic!("compose service {service} publishes no ports"))
                .iter()
                .map(|p| p.as_str().unwrap().to_owned())
                .collect()
        };
        let p = Ports::default();
        assert!(
            published("mlflow").contains(&format!("127.0.0.1:{0}:{0}", p.mlflow)),
            "compose publishes MLflow where the dashboards link: {:?}",
            published("mlflow")
        );
        assert!(
            published("runbooks").contains(&format!("127.0.0.1:{0}:{0}", p.webhook)),
            "compose publishes the runbooks where the dashboards link: {:?}",
            published("runbooks")
        );
    }

    /// The NixOS module's rewrite sets the same variables, from the module
    /// options listed here; generate.py --out sets the same ones too (and
    /// .ci/check_consistency.py holds the jq file's output to generate.py's).
    #[test]
    fn the_nix_rewrite_and_generate_py_set_exactly_these_variables() {
        let jq = repo_file("nix/lib/dashboard-constants.jq");
        let code: String = jq
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let referenced: BTreeSet<String> = code
            .split('$')
            .skip(1)
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .filter(|name| name != "value")
            .collect();
        assert_eq!(referenced, names(), "the variables jq's arguments set");
        for provisioned in &PROVISIONED {
            assert!(
                code.contains(&format!(
                    ".name == \"{0}\" then set_value(${0})",
                    provisioned.name
                )),
                "{} set by name in the jq file",
                provisioned.name
            );
        }
        let module = repo_file("nix/module.nix");
        let passed: BTreeSet<String> = module
            .split("--arg ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned))
            .collect();
        assert_eq!(passed, names(), "the module's jq arguments");
        for provisioned in &PROVISIONED {
            let argument = format!(
                "--arg {} ${{lib.escapeShellArg {}}}",
                provisioned.name, provisioned.nix_option
            );
            assert!(module.contains(&argument), "nix/module.nix has {argument}");
        }
        let generate = repo_file("grafana/generate.py");
        let set: BTreeSet<String> = generate
            .split("set_variable(d, \"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next().map(str::to_owned))
            .collect();
        assert_eq!(set, names(), "the variables generate.py --out sets");
    }

    /// The same values give the same dashboards as `generate.py --out`
    /// (python3 is on PATH wherever the tests run: CI and the Nix build).
    #[test]
    fn the_rewrite_equals_generate_py_out() {
        let out = tempfile::tempdir().unwrap();
        let values = custom();
        let status = std::process::Command::new("python3")
            .arg(repo().join("grafana/generate.py"))
            .arg("--out")
            .arg(out.path())
            .args(["--runbook-url", &values.runbooks])
            .args(["--mlflow-url", &values.mlflow_url])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("python3 runs grafana/generate.py");
        assert!(status.success());
        for (name, source) in dashboards() {
            let ours: serde_json::Value =
                serde_json::from_str(&rewrite(&source, &values).unwrap()).unwrap();
            let theirs: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.path().join(&name)).unwrap())
                    .unwrap();
            assert_eq!(ours, theirs, "{name}");
        }
    }
}
