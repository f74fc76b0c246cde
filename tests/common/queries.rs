//! Every PromQL expression the project ships: alert and recording rules
//! under prometheus/rules/, panel targets and template-variable queries in
//! grafana/provisioning/dashboards/. Parsed with a real PromQL parser.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use promql_parser::parser::{self, Expr};
use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where an expression came from, for error messages.
#[derive(Debug, Clone)]
pub struct Query {
    pub origin: String,
    pub expr: String,
    /// Grafana panels whose data may legitimately be absent (no GPU) say so.
    pub optional_without_gpu: bool,
}

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect();
    files.sort();
    files
}

/// (name, expr) of every rule, with `record` names separately.
pub fn rule_queries() -> (Vec<Query>, BTreeSet<String>) {
    let mut queries = Vec::new();
    let mut recorded = BTreeSet::new();
    for file in files(&repo().join("prometheus/rules"), "yml") {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for group in doc["groups"].as_sequence().expect("groups") {
            for rule in group["rules"].as_sequence().expect("rules") {
                let name = rule["alert"]
                    .as_str()
                    .or(rule["record"].as_str())
                    .expect("alert or record");
                if let Some(record) = rule["record"].as_str() {
                    recorded.insert(record.to_owned());
                }
                queries.push(Query {
                    origin: format!("{} {name}", file.file_name().unwrap().to_string_lossy()),
                    expr: rule["expr"].as_str().expect("expr").to_owned(),
                    optional_without_gpu: false,
                });
            }
        }
    }
    (queries, recorded)
}

/// The record name of the last rule of `group` in prometheus/rules/`file`.
/// A group stores its rules' results one after another, so once the last
/// one's result of an evaluation is in, every rule of that evaluation is:
/// a query at its timestamp reads one evaluation, where an earlier rule's
/// timestamp may still find a later rule's previous result.
pub fn last_record(file: &str, group: &str) -> String {
    let path = repo().join("prometheus/rules").join(file);
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .find(|g| g["name"].as_str() == Some(group))
        .and_then(|g| g["rules"].as_sequence()?.last()?["record"].as_str())
        .unwrap_or_else(|| panic!("{file}: no group {group} ending in a recording rule"))
        .to_owned()
}

pub fn dashboards() -> Vec<(PathBuf, Value)> {
    files(&repo().join("grafana/provisioning/dashboards"), "json")
        .into_iter()
        .map(|p| {
            let json = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, json)
        })
        .collect()
}

/// Panels, flattened out of collapsed rows.
pub fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().cloned().unwrap_or_default() {
        for nested in panel["panels"].as_array().cloned().unwrap_or_default() {
            out.push(nested);
        }
        out.push(panel);
    }
    out
}

pub fn is_gpu_panel(panel: &Value) -> bool {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["expr"].as_str().is_some_and(|e| e.contains("_gpu_")))
}

/// Panel target expressions and variable queries (`label_values(m, l)`
/// becomes the selector `m`).
pub fn dashboard_queries() -> Vec<Query> {
    let mut queries = Vec::new();
    for (path, dashboard) in dashboards() {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for panel in panels(&dashboard) {
            let gpu = is_gpu_panel(&panel);
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                if let Some(expr) = target["expr"].as_str() {
                    queries.push(Query {
                        origin: format!(
                            "{file} panel {:?} target {}",
                            panel["title"], target["refId"]
                        ),
                        expr: expr.to_owned(),
                        optional_without_gpu: gpu,
                    });
                }
            }
        }
        for variable in dashboard["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let query = variable["query"]["query"]
                .as_str()
                .or(variable["query"].as_str())
                .unwrap_or("");
            if let Some(inner) = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
            {
                let selector = inner
                    .rsplit_once(',')
                    .map(|(s, _)| s)
                    .unwrap_or(inner)
                    .trim();
                queries.push(Query {
                    origin: format!("{file} variable {}", variable["name"]),
                    expr: selector.to_owned(),
                    optional_without_gpu: false,
                });
            }
        }
    }
    queries
}

/// The dashboards' annotation queries (markers; may legitimately be empty,
/// so they are not among the panel queries that must return data).
pub fn annotation_queries() -> Vec<Query> {
    let mut queries = Vec::new();
    for (path, dashboard) in dashboards() {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for a in dashboard["annotations"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(expr) = a["target"]["expr"].as_str() {
                queries.push(Query {
                    origin: format!("{file} annotation {:?}", a["name"]),
                    expr: expr.to_owned(),
                    optional_without_gpu: false,
                });
            }
        }
    }
    queries
}

/// Grafana's variables replaced by what they expand to with "All" chosen.
pub fn substitute_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
        .replace("${job}", ".*")
        .replace("$job", ".*")
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
        .replace("${model_version}", ".*")
        .replace("$model_version", ".*")
}

/// Parses a query (after variable substitution) into its AST.
pub fn parse(query: &Query) -> Expr {
    parser::parse(&substitute_variables(&query.expr)).unwrap_or_else(|e| {
        panic!(
            "{} does not parse as PromQL: {e}\n{}",
            query.origin, query.expr
        )
    })
}

/// Every metric name a query selects.
pub fn metric_names(expr: &Expr) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    collect(expr, &mut names);
    names
}

fn collect(expr: &Expr, names: &mut BTreeSet<String>) {
    match expr {
        Expr::Aggregate(a) => {
            collect(&a.expr, names);
            if let Some(p) = &a.param {
                collect(p, names);
            }
        }
        Expr::Unary(u) => collect(&u.expr, names),
        Expr::Binary(b) => {
            collect(&b.lhs, names);
            collect(&b.rhs, names);
        }
        Expr::Paren(p) => collect(&p.expr, names),
        Expr::Subquery(s) => collect(&s.expr, names),
        Expr::VectorSelector(v) => {
            names.insert(selector_name(v));
        }
        Expr::MatrixSelector(m) => {
            names.insert(selector_name(&m.vs));
        }
        Expr::Call(c) => c.args.args.iter().for_each(|a| collect(a, names)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector_name(v: &promql_parser::parser::VectorSelector) -> String {
    v.name.clone().unwrap_or_else(|| {
        v.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__")
            .map(|m| m.value.clone())
            .unwrap_or_else(|| "<no name>".into())
    })
}
