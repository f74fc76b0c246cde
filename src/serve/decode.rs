//! Request decoding: from the raw bytes of a `POST /predict` body to a matrix
//! of feature rows, or an [`InputError`] that says exactly what was wrong.
//!
//! The body is parsed into a small JSON tree ([`Json`]) that, unlike
//! `serde_json::Value`, keeps every key of an object, so duplicate keys are
//! reported instead of silently keeping the last one. The tree is then
//! checked against the model's [`Schema`]. Every failure is a client error
//! (4xx): nothing here can panic or classify bad input as a server error,
//! which the property tests at the bottom of this file pin down.

use std::collections::HashMap;
use std::fmt;

use ndarray::{Array2, ArrayViewMut1};
use poem::http::StatusCode;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::json;

/// The Content-Type every request to /predict must carry.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// serde_json refuses input nested deeper than this.
const MAX_NESTING: usize = 128;

/// Echoed user input (keys, strings, headers) is cut to this many characters.
const ECHO_LIMIT: usize = 64;

/// A rejected request: the HTTP status and the JSON body that explains it.
/// Boxed, so that the `Ok` path of every decoding step stays small.
#[derive(Debug, Clone, PartialEq)]
pub struct InputError(Box<Rejection>);

/// The content of an [`InputError`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    #[serde(skip)]
    pub status: StatusCode,
    /// What is wrong, as a stable short phrase (documented in docs/service.md).
    pub error: &'static str,
    /// Where in the request: `features[2]`, `instances[3].age`, a header name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub got: Option<serde_json::Value>,
    /// Extra context, such as the parser's line and column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl std::ops::Deref for InputError {
    type Target = Rejection;

    fn deref(&self) -> &Rejection {
        &self.0
    }
}

impl std::ops::DerefMut for InputError {
    fn deref_mut(&mut self) -> &mut Rejection {
        &mut self.0
    }
}

impl InputError {
    pub fn new(status: StatusCode, error: &'static str) -> Self {
        Self(Box::new(Rejection {
            status,
            error,
            field: None,
            expected: None,
            got: None,
            detail: None,
        }))
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn expected(mut self, expected: impl Into<serde_json::Value>) -> Self {
        self.expected = Some(expected.into());
        self
    }

    pub fn got(mut self, got: impl Into<serde_json::Value>) -> Self {
        self.got = Some(got.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// A JSON parse failure, sorted into the classes clients can act on.
    /// serde_json exposes these only through its message, so the match is
    /// on the message prefix; `json_errors_are_classified` pins it.
    fn from_json(error: &serde_json::Error) -> Self {
        let message = error.to_string();
        if message.starts_with("recursion limit exceeded") {
            InputError::new(StatusCode::BAD_REQUEST, "JSON nested too deeply")
                .expected(format!("at most {MAX_NESTING} levels of nesting"))
                .detail(message)
        } else if message.starts_with("number out of range") {
            InputError::new(StatusCode::BAD_REQUEST, "number out of range")
                .expected("a number that fits a 64-bit float (|x| < 1.8e308)")
                .detail(message)
        } else {
            InputError::new(StatusCode::BAD_REQUEST, "malformed JSON").detail(message)
        }
    }

    /// The error as the JSON text of a response body.
    pub fn body(&self) -> String {
        // Serialising owned strings and JSON values cannot fail.
        serde_json::to_string(&*self.0)
            .unwrap_or_else(|_| format!("{{\"error\":\"{}\"}}", self.error))
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.error, self.status.as_u16())?;
        if let Some(field) = &self.field {
            write!(f, " at {field}")?;
        }
        Ok(())
    }
}

/// The inputs a model takes, by position and by name.
#[derive(Debug, Clone)]
pub struct Schema {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Schema {
    pub fn new(names: &[String]) -> Self {
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Self {
            names: names.to_vec(),
            index,
        }
    }

    pub fn width(&self) -> usize {
        self.names.len()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Decoded feature rows, one per instance, in the schema's column order.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub rows: Array2<f64>,
    /// True for `{"instances": [...]}`: the response lists predictions.
    pub batch: bool,
}

/// Checks that the Content-Type names JSON (parameters such as
/// `charset=utf-8` are allowed).
pub fn check_content_type(header: Option<&str>) -> Result<(), InputError> {
    let error = || {
        InputError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type",
        )
        .field("Content-Type")
        .expected(JSON_CONTENT_TYPE)
    };
    let Some(value) = header else {
        return Err(error().got(serde_json::Value::Null));
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(JSON_CONTENT_TYPE) {
        Ok(())
    } else {
        Err(error().got(echo(value)))
    }
}

/// Decodes a request body against `schema`, allowing at most `max_batch`
/// instances.
pub fn decode(body: &[u8], schema: &Schema, max_batch: usize) -> Result<Decoded, InputError> {
    if body.trim_ascii().is_empty() {
        return Err(
            InputError::new(StatusCode::BAD_REQUEST, "empty body").expected(request_shape())
        );
    }
    let json: Json = serde_json::from_slice(body).map_err(|e| InputError::from_json(&e))?;
    let Json::Object(entries) = json else {
        return Err(
            InputError::new(StatusCode::BAD_REQUEST, "request must be a JSON object")
                .expected(request_shape())
                .got(json.kind()),
        );
    };
    let mut features = None;
    let mut instances = None;
    for (key, value) in entries {
        let slot = match key.as_str() {
            "features" => &mut features,
            "instances" => &mut instances,
            _ => {
                return Err(InputError::new(StatusCode::BAD_REQUEST, "unknown field")
                    .field(echo(&key))
                    .expected("\"features\" or \"instances\""))
            }
        };
        if slot.is_some() {
            return Err(InputError::new(StatusCode::BAD_REQUEST, "duplicate key").field(key));
        }
        *slot = Some(value);
    }
    match (features, instances) {
        (Some(features), None) => {
            let mut rows = Array2::zeros((1, schema.width()));
            fill_row(&features, schema, Location::Single, rows.row_mut(0))?;
            Ok(Decoded { rows, batch: false })
        }
        (None, Some(instances)) => decode_batch(instances, schema, max_batch),
        (Some(_), Some(_)) => Err(
            InputError::new(StatusCode::BAD_REQUEST, "ambiguous request")
                .field("instances")
                .expected("either \"features\" or \"instances\", not both"),
        ),
        (None, None) => Err(InputError::new(StatusCode::BAD_REQUEST, "missing field")
            .field("features")
            .expected(request_shape())),
    }
}

fn decode_batch(instances: Json, schema: &Schema, max_batch: usize) -> Result<Decoded, InputError> {
    let Json::Array(items) = instances else {
        return Err(
            InputError::new(StatusCode::BAD_REQUEST, "instances must be an array")
                .field("instances")
                .expected("an array of instances")
                .got(instances.kind()),
        );
    };
    if items.is_empty() {
        return Err(InputError::new(StatusCode::BAD_REQUEST, "empty batch")
            .field("instances")
            .expected(format!("1 to {max_batch} instances"))
            .got(0));
    }
    if items.len() > max_batch {
        return Err(
            InputError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch too large")
                .field("instances")
                .expected(format!("at most {max_batch} instances"))
                .got(items.len()),
        );
    }
    let mut rows = Array2::zeros((items.len(), schema.width()));
    for (index, (item, out)) in items.iter().zip(rows.rows_mut()).enumerate() {
        fill_row(item, schema, Location::Instance(index), out)?;
    }
    Ok(Decoded { rows, batch: true })
}

/// Where an instance sits in the request, for error paths.
#[derive(Debug, Clone, Copy)]
enum Location {
    Single,
    Instance(usize),
}

impl Location {
    fn root(self) -> String {
        match self {
            Location::Single => "features".to_owned(),
            Location::Instance(i) => format!("instances[{i}]"),
        }
    }

    fn at_index(self, i: usize) -> String {
        format!("{}[{i}]", self.root())
    }

    fn at_name(self, name: &str) -> String {
        format!("{}.{}", self.root(), echo(name))
    }
}

/// Fills `out` (one row, schema order) from a positional array or an object
/// keyed by feature name.
fn fill_row(
    value: &Json,
    schema: &Schema,
    at: Location,
    mut out: ArrayViewMut1<f64>,
) -> Result<(), InputError> {
    let width = schema.width();
    match value {
        Json::Array(items) => {
            if items.len() != width {
                return Err(InputError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "wrong number of features",
                )
                .field(at.root())
                .expected(width)
                .got(items.len()));
            }
            for (i, (item, slot)) in items.iter().zip(out.iter_mut()).enumerate() {
                *slot = number(item, || at.at_index(i))?;
            }
            Ok(())
        }
        Json::Object(entries) => {
            let mut seen = vec![false; width];
            for (name, item) in entries {
                let Some(&i) = schema.index.get(name) else {
                    return Err(InputError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "unknown feature",
                    )
                    .field(at.at_name(name))
                    .expected(json!(schema.names)));
                };
                if std::mem::replace(&mut seen[i], true) {
                    return Err(InputError::new(StatusCode::BAD_REQUEST, "duplicate key")
                        .field(at.at_name(name)));
                }
                if let Some(slot) = out.get_mut(i) {
                    *slot = number(item, || at.at_name(name))?;
                }
            }
            let missing: Vec<&str> = seen
                .iter()
                .zip(&schema.names)
                .filter(|(s, _)| !**s)
                .map(|(_, n)| n.as_str())
                .collect();
            match missing.first() {
                None => Ok(()),
                Some(first) => Err(InputError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "missing feature",
                )
                .field(at.at_name(first))
                .expected(json!(schema.names))
                .got(json!({ "missing": missing }))),
            }
        }
        other => Err(InputError::new(
            StatusCode::BAD_REQUEST,
            "features must be an array or an object",
        )
        .field(at.root())
        .expected(format!(
            "an array of {width} numbers or an object keyed by feature name"
        ))
        .got(other.kind())),
    }
}

/// One feature value: a finite JSON number and nothing else.
fn number(value: &Json, field: impl Fn() -> String) -> Result<f64, InputError> {
    match value {
        Json::Number(x) if x.is_finite() => Ok(*x),
        Json::Number(x) => Err(InputError::new(StatusCode::BAD_REQUEST, "non-finite value")
            .field(field())
            .expected("a finite number")
            .got(x.to_string())),
        Json::String(s) if names_non_finite(s) => {
            Err(InputError::new(StatusCode::BAD_REQUEST, "non-finite value")
                .field(field())
                .expected("a finite number")
                .got(echo(s)))
        }
        other => Err(
            InputError::new(StatusCode::BAD_REQUEST, "non-numeric value")
                .field(field())
                .expected("a number")
                .got(other.kind()),
        ),
    }
}

/// "NaN", "inf", "-Infinity" and friends, as Python and JavaScript write them.
fn names_non_finite(s: &str) -> bool {
    let t = s.trim().trim_start_matches(['+', '-']);
    ["nan", "inf", "infinity"]
        .iter()
        .any(|w| t.eq_ignore_ascii_case(w))
}

fn request_shape() -> &'static str {
    "{\"features\": [..] or {..}} or {\"instances\": [..]}"
}

/// User text as it may appear in an error body: at most [`ECHO_LIMIT`]
/// characters.
fn echo(s: &str) -> String {
    match s.char_indices().nth(ECHO_LIMIT) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// A parsed JSON document that keeps duplicate object keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The JSON type name, used as `got` in errors.
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "boolean",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Number(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            entries.push((key, value));
        }
        Ok(Json::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schema() -> Schema {
        Schema::new(&["age".to_owned(), "bmi".to_owned(), "bp".to_owned()])
    }

    fn decode_str(body: &str) -> Result<Decoded, InputError> {
        decode(body.as_bytes(), &schema(), 4)
    }

    fn rejection(body: &str) -> (u16, &'static str, Option<String>) {
        let e = decode_str(body).expect_err(body);
        (e.status.as_u16(), e.error, e.field.clone())
    }

    #[test]
    fn positional_named_and_batch_requests_decode_in_schema_order() {
        let single = decode_str(r#"{"features": [1, 2.5, -3e2]}"#).unwrap();
        assert_eq!(single.rows.row(0).to_vec(), vec![1.0, 2.5, -300.0]);
        assert!(!single.batch);
        let named = decode_str(r#"{"features": {"bp": 3, "age": 1, "bmi": 2}}"#).unwrap();
        assert_eq!(named.rows.row(0).to_vec(), vec![1.0, 2.0, 3.0]);
        let batch = decode_str(r#"{"instances": [[1,2,3], {"age":4,"bmi":5,"bp":6}]}"#).unwrap();
        assert!(batch.batch);
        assert_eq!(
            batch.rows,
            ndarray::array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
        );
    }

    #[test]
    fn every_bad_input_class_has_its_status_and_field() {
        assert_eq!(rejection(""), (400, "empty body", None));
        assert_eq!(rejection(" \n"), (400, "empty body", None));
        assert_eq!(
            rejection("{\"features\": [1,2"),
            (400, "malformed JSON", None)
        );
        assert_eq!(
            rejection("{\"features\": [NaN,1,2]}"),
            (400, "malformed JSON", None)
        );
        assert_eq!(
            rejection("[1,2,3]"),
            (400, "request must be a JSON object", None)
        );
        assert_eq!(
            rejection("{}"),
            (400, "missing field", Some("features".into()))
        );
        assert_eq!(
            rejection(r#"{"feature": [1,2,3]}"#),
            (400, "unknown field", Some("feature".into()))
        );
        assert_eq!(
            rejection(r#"{"features": [1,2,3], "features": [1,2,3]}"#),
            (400, "duplicate key", Some("features".into()))
        );
        assert_eq!(
            rejection(r#"{"features": [1,2,3], "instances": []}"#),
            (400, "ambiguous request", Some("instances".into()))
        );
        assert_eq!(
            rejection(r#"{"features": [1,2]}"#),
            (422, "wrong number of features", Some("features".into()))
        );
        assert_eq!(
            rejection(r#"{"features": 5}"#),
            (
                400,
                "features must be an array or an object",
                Some("features".into())
            )
        );
        assert_eq!(
            rejection(r#"{"features": {"age":1,"bmi":2,"bp":3,"sex":4}}"#),
            (422, "unknown feature", Some("features.sex".into()))
        );
        assert_eq!(
            rejection(r#"{"features": {"age":1,"bp":3}}"#),
            (422, "missing feature", Some("features.bmi".into()))
        );
        assert_eq!(
            rejection(r#"{"features": {"age":1,"bmi":2,"bp":3,"age":1}}"#),
            (400, "duplicate key", Some("features.age".into()))
        );
        for (value, error) in [
            ("\"1.5\"", "non-numeric value"),
            ("null", "non-numeric value"),
            ("true", "non-numeric value"),
            ("[1]", "non-numeric value"),
            ("{\"x\":1}", "non-numeric value"),
            ("\"NaN\"", "non-finite value"),
            ("\"-Infinity\"", "non-finite value"),
            ("\"inf\"", "non-finite value"),
        ] {
            let body = format!(r#"{{"features": [1, {value}, 3]}}"#);
            assert_eq!(
                rejection(&body),
                (400, error, Some("features[1]".into())),
                "{body}"
            );
        }
        assert_eq!(
            rejection(r#"{"features": [1, 1e400, 3]}"#),
            (400, "number out of range", None)
        );
        assert_eq!(
            rejection(r#"{"instances": []}"#),
            (400, "empty batch", Some("instances".into()))
        );
        assert_eq!(
            rejection(r#"{"instances": {}}"#),
            (400, "instances must be an array", Some("instances".into()))
        );
        assert_eq!(
            rejection(r#"{"instances": [[1,2,3],[1,2,3],[1,2,3],[1,2,3],[1,2,3]]}"#).0,
            413
        );
        assert_eq!(
            rejection(r#"{"instances": [[1,2,3],[1,"x",3]]}"#),
            (400, "non-numeric value", Some("instances[1][1]".into()))
        );
        assert_eq!(
            rejection(r#"{"instances": [[1,2,3],{"age":1,"bmi":2}]}"#),
            (422, "missing feature", Some("instances[1].bp".into()))
        );
        let deep = format!("{{\"features\": {}1{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(rejection(&deep), (400, "JSON nested too deeply", None));
    }

    #[test]
    fn json_errors_are_classified() {
        // The message prefixes InputError::from_json relies on.
        let overflow = serde_json::from_str::<Json>("1e400").unwrap_err();
        assert!(
            overflow.to_string().starts_with("number out of range"),
            "{overflow}"
        );
        let deep = serde_json::from_str::<Json>(&"[".repeat(500)).unwrap_err();
        assert!(
            deep.to_string().starts_with("recursion limit exceeded"),
            "{deep}"
        );
    }

    #[test]
    fn error_body_names_field_expected_and_got() {
        let e = decode_str(r#"{"features": [1, 2]}"#).unwrap_err();
        let body: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(
            body,
            json!({"error": "wrong number of features", "field": "features", "expected": 3, "got": 2})
        );
    }

    #[test]
    fn echoed_input_is_truncated() {
        let key = "k".repeat(1000);
        let e = decode_str(&format!(r#"{{"{key}": 1}}"#)).unwrap_err();
        assert!(e.field.as_ref().unwrap().chars().count() <= ECHO_LIMIT + 1);
    }

    #[test]
    fn content_type_must_be_json() {
        assert!(check_content_type(Some("application/json")).is_ok());
        assert!(check_content_type(Some("Application/JSON; charset=utf-8")).is_ok());
        let missing = check_content_type(None).unwrap_err();
        assert_eq!(
            (missing.status.as_u16(), missing.got.clone()),
            (415, Some(serde_json::Value::Null))
        );
        assert_eq!(
            check_content_type(Some("text/plain"))
                .unwrap_err()
                .status
                .as_u16(),
            415
        );
        assert_eq!(
            check_content_type(Some("application/jsonx"))
                .unwrap_err()
                .status
                .as_u16(),
            415
        );
    }

    fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)),
            any::<i64>().prop_map(|i| json!(i)),
            prop_oneof![
                Just("NaN".to_owned()),
                Just("features".to_owned()),
                Just("age".to_owned()),
                ".{0,8}"
            ]
            .prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("features".to_owned()),
                            Just("instances".to_owned()),
                            Just("bmi".to_owned()),
                            ".{0,6}"
                        ],
                        inner
                    ),
                    0..6
                )
                .prop_map(|entries| serde_json::Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    fn assert_client_error(result: Result<Decoded, InputError>) {
        if let Err(e) = result {
            assert!(e.status.is_client_error(), "{e}");
            assert!(serde_json::from_str::<serde_json::Value>(&e.body()).is_ok());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic_and_are_never_server_errors(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            assert_client_error(decode(&bytes, &schema(), 4));
        }

        #[test]
        fn arbitrary_json_never_panics_and_is_never_a_server_error(value in arbitrary_json()) {
            let wrapped = [json!({"features": value.clone()}), json!({"instances": value.clone()}), value];
            for body in wrapped {
                assert_client_error(decode(body.to_string().as_bytes(), &schema(), 4));
            }
        }

        #[test]
        fn finite_rows_round_trip_exactly(rows in prop::collection::vec(prop::array::uniform3(any::<f64>().prop_filter("finite", |f| f.is_finite())), 1..5)) {
            let body = json!({"instances": rows}).to_string();
            let decoded = decode(body.as_bytes(), &schema(), 4).unwrap();
            for (row, expected) in decoded.rows.rows().into_iter().zip(&rows) {
                prop_assert_eq!(row.to_vec(), expected.to_vec());
            }
        }
    }
}
