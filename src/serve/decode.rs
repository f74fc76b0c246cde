//! Request decoding: from the raw bytes of a `POST /predict` body to a matrix
//! of feature rows, or an [`InputError`] that says exactly what was wrong.
//!
//! The body is decoded in one pass by serde `DeserializeSeed`s that carry
//! the model's [`Schema`] and `max_batch`: values go straight into the rows,
//! so no JSON tree is built and decoding needs O(width × batch) memory
//! beyond the body itself, whatever the body holds. Past feature `width` of a row or instance `max_batch` of a
//! batch, values are skipped (and only counted, for the error's `got`).
//! Duplicate keys are detected by the seeds themselves.
//!
//! The error contract is that of a parse-then-check decoder: a JSON error
//! anywhere (syntax, nesting, a number beyond f64) wins over a shape error,
//! a top-level key error (unknown or duplicate key) over a value error, a
//! wrong count over a bad element. So after the first problem the seeds keep
//! reading (skipping, but still validating) and the precedence is applied at
//! the end; the oracle test at the bottom of this file compares the result
//! with such a decoder on arbitrary input. Every failure is a client error
//! (4xx): nothing here can panic or classify bad input as a server error.

use std::collections::HashMap;
use std::fmt;

use ndarray::Array2;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::json;

use super::bad_input::echo;
pub use super::bad_input::{BadInput, InputError};

/// The Content-Type every request to /predict must carry.
const JSON_CONTENT_TYPE: &str = "application/json";

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
        InputError::new(BadInput::UnsupportedContentType)
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

/// A decoding step's own verdict; the outer `Result` is serde's (JSON) error.
type Verdict<T> = Result<T, InputError>;

/// Decodes a request body against `schema`, allowing at most `max_batch`
/// instances.
pub fn decode(body: &[u8], schema: &Schema, max_batch: usize) -> Result<Decoded, InputError> {
    if body.trim_ascii().is_empty() {
        return Err(InputError::new(BadInput::EmptyBody).expected(request_shape()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let verdict = RequestSeed { schema, max_batch }
        .deserialize(&mut deserializer)
        .and_then(|verdict| deserializer.end().map(|()| verdict))
        .map_err(|e| InputError::from_json(&e))?;
    let (rows, count, batch) = verdict?;
    let rows = Array2::from_shape_vec((count, schema.width()), rows).map_err(|e| {
        // Unreachable: every stored row has exactly `width` values.
        InputError::new(BadInput::MalformedJson).detail(e.to_string())
    })?;
    Ok(Decoded { rows, batch })
}

fn request_shape() -> &'static str {
    "{\"features\": [..] or {..}} or {\"instances\": [..]}"
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

/// Implements the scalar `visit_*` methods of a visitor as `self.other(kind)`
/// and arrays/objects as "skip the content, then `self.other(kind)`".
macro_rules! other_kinds {
    ($($skip:ident),*) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(self.other("boolean"))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(self.other("number"))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(self.other("number"))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(self.other("number"))
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(self.other("string"))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(self.other("null"))
        }
        $(other_kinds!(@ $skip);)*
    };
    (@ seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<Skip>()?.is_some() {}
            Ok(self.other("array"))
        }
    };
    (@ map) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<Skip, Skip>()?.is_some() {}
            Ok(self.other("object"))
        }
    };
}

/// Any JSON value, read and dropped. It goes through `deserialize_any`, as
/// a value that is kept does, so it is held to the same syntax, nesting and
/// number-range checks (serde's `IgnoredAny` would not check number ranges).
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl SkipVisitor {
    fn other(self, _kind: &'static str) -> Skip {
        Skip
    }
}

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    other_kinds!(seq, map);
}

/// The whole request: an object with `features` or `instances`. Yields the
/// rows (flat, row-major), how many, and whether it was a batch.
struct RequestSeed<'s> {
    schema: &'s Schema,
    max_batch: usize,
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = Verdict<(Vec<f64>, usize, bool)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl RequestSeed<'_> {
    fn other(self, kind: &'static str) -> Verdict<(Vec<f64>, usize, bool)> {
        Err(InputError::new(BadInput::NotAnObject)
            .expected(request_shape())
            .got(kind))
    }
}

/// A top-level key.
enum TopKey {
    Features,
    Instances,
    /// Anything else, already cut for echoing.
    Other(String),
}

struct TopKeySeed;

impl<'de> DeserializeSeed<'de> for TopKeySeed {
    type Value = TopKey;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<TopKey, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopKeySeed {
    type Value = TopKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<TopKey, E> {
        Ok(match key {
            "features" => TopKey::Features,
            "instances" => TopKey::Instances,
            other => TopKey::Other(echo(other)),
        })
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = Verdict<(Vec<f64>, usize, bool)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a prediction request object")
    }

    other_kinds!(seq);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // The first unknown or duplicate key answers, whatever the values.
        let mut key_error = None;
        let mut features = None;
        let mut instances = None;
        while let Some(key) = map.next_key_seed(TopKeySeed)? {
            if key_error.is_some() {
                map.next_value::<Skip>()?;
                continue;
            }
            match key {
                TopKey::Features if features.is_none() => {
                    features = Some(map.next_value_seed(RowSeed {
                        schema: self.schema,
                        at: Location::Single,
                    })?);
                }
                TopKey::Instances if instances.is_none() => {
                    instances = Some(map.next_value_seed(BatchSeed {
                        schema: self.schema,
                        max_batch: self.max_batch,
                    })?);
                }
                TopKey::Features | TopKey::Instances => {
                    let name = if matches!(key, TopKey::Features) {
                        "features"
                    } else {
                        "instances"
                    };
                    key_error = Some(InputError::new(BadInput::DuplicateKey).field(name));
                    map.next_value::<Skip>()?;
                }
                TopKey::Other(name) => {
                    key_error = Some(
                        InputError::new(BadInput::UnknownField)
                            .field(name)
                            .expected("\"features\" or \"instances\""),
                    );
                    map.next_value::<Skip>()?;
                }
            }
        }
        if let Some(error) = key_error {
            return Ok(Err(error));
        }
        Ok(match (features, instances) {
            (Some(row), None) => row.map(|row| (row, 1, false)),
            (None, Some(rows)) => rows.map(|(rows, count)| (rows, count, true)),
            (Some(_), Some(_)) => Err(InputError::new(BadInput::AmbiguousRequest)
                .field("instances")
                .expected("either \"features\" or \"instances\", not both")),
            (None, None) => Err(InputError::new(BadInput::MissingField)
                .field("features")
                .expected(request_shape())),
        })
    }
}

/// `instances`: an array of 1 to `max_batch` rows.
struct BatchSeed<'s> {
    schema: &'s Schema,
    max_batch: usize,
}

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = Verdict<(Vec<f64>, usize)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl BatchSeed<'_> {
    fn other(self, kind: &'static str) -> Verdict<(Vec<f64>, usize)> {
        Err(InputError::new(BadInput::InstancesNotArray)
            .field("instances")
            .expected("an array of instances")
            .got(kind))
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = Verdict<(Vec<f64>, usize)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of instances")
    }

    other_kinds!(map);

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let width = self.schema.width();
        let hint = seq.size_hint().unwrap_or(1).clamp(1, self.max_batch);
        let mut rows = Vec::with_capacity(hint.saturating_mul(width));
        let mut first_error = None;
        let mut count = 0usize;
        loop {
            // Rows are kept up to max_batch and until the first bad one;
            // the rest is only counted.
            let more = if count < self.max_batch && first_error.is_none() {
                let seed = RowSeed {
                    schema: self.schema,
                    at: Location::Instance(count),
                };
                match seq.next_element_seed(seed)? {
                    None => false,
                    Some(Ok(row)) => {
                        rows.extend(row);
                        true
                    }
                    Some(Err(e)) => {
                        first_error = Some(e);
                        true
                    }
                }
            } else {
                seq.next_element::<Skip>()?.is_some()
            };
            if !more {
                break;
            }
            count += 1;
        }
        let max_batch = self.max_batch;
        Ok(if count == 0 {
            Err(InputError::new(BadInput::EmptyBatch)
                .field("instances")
                .expected(format!("1 to {max_batch} instances"))
                .got(0))
        } else if count > max_batch {
            Err(InputError::new(BadInput::BatchTooLarge)
                .field("instances")
                .expected(format!("at most {max_batch} instances"))
                .got(count))
        } else if let Some(e) = first_error {
            Err(e)
        } else {
            Ok((rows, count))
        })
    }
}

/// One instance: a positional array or an object keyed by feature name,
/// yielded as one row in schema order.
struct RowSeed<'s> {
    schema: &'s Schema,
    at: Location,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Verdict<Vec<f64>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl RowSeed<'_> {
    fn other(self, kind: &'static str) -> Verdict<Vec<f64>> {
        let width = self.schema.width();
        Err(InputError::new(BadInput::FeaturesNotArrayOrObject)
            .field(self.at.root())
            .expected(format!(
                "an array of {width} numbers or an object keyed by feature name"
            ))
            .got(kind))
    }
}

/// A key of an instance object: a feature's index, or an unknown name.
enum FeatureKey {
    Known(usize),
    Unknown(String),
}

struct FeatureKeySeed<'s>(&'s Schema);

impl<'de> DeserializeSeed<'de> for FeatureKeySeed<'_> {
    type Value = FeatureKey;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<FeatureKey, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FeatureKeySeed<'_> {
    type Value = FeatureKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a feature name")
    }

    fn visit_str<E>(self, name: &str) -> Result<FeatureKey, E> {
        Ok(match self.0.index.get(name) {
            Some(&i) => FeatureKey::Known(i),
            // Cut now: only the echo can appear in an error.
            None => FeatureKey::Unknown(echo(name)),
        })
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Verdict<Vec<f64>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array or an object of features")
    }

    other_kinds!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let width = self.schema.width();
        let mut row = Vec::with_capacity(width);
        let mut first_error = None;
        let mut count = 0usize;
        loop {
            // Values are kept up to the width and until the first bad one;
            // a wrong count answers before a bad value, so the rest is counted.
            let more = if count < width && first_error.is_none() {
                match seq.next_element_seed(NumberSeed)? {
                    None => false,
                    Some(Ok(x)) => {
                        row.push(x);
                        true
                    }
                    Some(Err(e)) => {
                        first_error = Some(e.field(self.at.at_index(count)));
                        true
                    }
                }
            } else {
                seq.next_element::<Skip>()?.is_some()
            };
            if !more {
                break;
            }
            count += 1;
        }
        Ok(if count != width {
            Err(InputError::new(BadInput::WrongFeatureCount)
                .field(self.at.root())
                .expected(width)
                .got(count))
        } else if let Some(e) = first_error {
            Err(e)
        } else {
            Ok(row)
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let schema = self.schema;
        let mut row = vec![0.0; schema.width()];
        let mut seen = vec![false; schema.width()];
        let mut first_error = None;
        while let Some(key) = map.next_key_seed(FeatureKeySeed(schema))? {
            if first_error.is_some() {
                map.next_value::<Skip>()?;
                continue;
            }
            let (i, name) = match key {
                FeatureKey::Unknown(echoed) => {
                    first_error = Some(
                        InputError::new(BadInput::UnknownFeature)
                            .field(format!("{}.{echoed}", self.at.root()))
                            .expected(json!(schema.names)),
                    );
                    map.next_value::<Skip>()?;
                    continue;
                }
                FeatureKey::Known(i) => (i, &schema.names[i]),
            };
            if std::mem::replace(&mut seen[i], true) {
                first_error =
                    Some(InputError::new(BadInput::DuplicateKey).field(self.at.at_name(name)));
                map.next_value::<Skip>()?;
                continue;
            }
            match map.next_value_seed(NumberSeed)? {
                Ok(x) => row[i] = x,
                Err(e) => first_error = Some(e.field(self.at.at_name(name))),
            }
        }
        if let Some(e) = first_error {
            return Ok(Err(e));
        }
        let missing: Vec<&str> = seen
            .iter()
            .zip(&schema.names)
            .filter(|(s, _)| !**s)
            .map(|(_, n)| n.as_str())
            .collect();
        Ok(match missing.first() {
            None => Ok(row),
            Some(first) => Err(InputError::new(BadInput::MissingFeature)
                .field(self.at.at_name(first))
                .expected(json!(schema.names))
                .got(json!({ "missing": missing }))),
        })
    }
}

/// One feature value: a finite JSON number and nothing else. The error has
/// no `field` yet; the caller knows where the value sits.
struct NumberSeed;

impl<'de> DeserializeSeed<'de> for NumberSeed {
    type Value = Verdict<f64>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl NumberSeed {
    fn other(self, kind: &'static str) -> Verdict<f64> {
        Err(InputError::new(BadInput::NonNumericValue)
            .expected("a number")
            .got(kind))
    }

    fn number(self, x: f64) -> Verdict<f64> {
        if x.is_finite() {
            Ok(x)
        } else {
            Err(InputError::new(BadInput::NonFiniteValue)
                .expected("a finite number")
                .got(x.to_string()))
        }
    }
}

impl<'de> Visitor<'de> for NumberSeed {
    type Value = Verdict<f64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(self.other("boolean"))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.other("null"))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.number(v as f64))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.number(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(self.number(v))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(if names_non_finite(s) {
            Err(InputError::new(BadInput::NonFiniteValue)
                .expected("a finite number")
                .got(echo(s)))
        } else {
            self.other("string")
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(self.other("array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(self.other("object"))
    }
}

/// "NaN", "inf", "-Infinity" and friends, as Python and JavaScript write them.
fn names_non_finite(s: &str) -> bool {
    let t = s.trim().trim_start_matches(['+', '-']);
    ["nan", "inf", "infinity"]
        .iter()
        .any(|w| t.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::bad_input::ECHO_LIMIT;
    use proptest::prelude::*;

    fn schema() -> Schema {
        Schema::new(&["age".to_owned(), "bmi".to_owned(), "bp".to_owned()])
    }

    fn decode_str(body: &str) -> Result<Decoded, InputError> {
        decode(body.as_bytes(), &schema(), 4)
    }

    fn rejection(body: &str) -> (u16, &'static str, Option<String>) {
        let e = decode_str(body).expect_err(body);
        (e.status().as_u16(), e.error(), e.field.clone())
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
        let overflow = serde_json::from_str::<serde_json::Value>("1e400").unwrap_err();
        assert!(
            overflow.to_string().starts_with("number out of range"),
            "{overflow}"
        );
        let deep = serde_json::from_str::<serde_json::Value>(&"[".repeat(500)).unwrap_err();
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
            (missing.status().as_u16(), missing.got.clone()),
            (415, Some(serde_json::Value::Null))
        );
        assert_eq!(
            check_content_type(Some("text/plain"))
                .unwrap_err()
                .status()
                .as_u16(),
            415
        );
        assert_eq!(
            check_content_type(Some("application/jsonx"))
                .unwrap_err()
                .status()
                .as_u16(),
            415
        );
    }

    #[test]
    fn precedence_matches_a_parse_then_check_decoder() {
        // Each pair: the first problem met in the bytes is not the answer.
        for (body, expected) in [
            // A JSON error anywhere wins over an earlier shape error.
            (
                r#"{"feature": [1,2,3], "x": 1e400}"#,
                (400, "number out of range", None),
            ),
            (
                r#"{"features": [1,"x",3], "y": [1,2"#,
                (400, "malformed JSON", None),
            ),
            (
                r#"{"features": [1,2,3]} trailing"#,
                (400, "malformed JSON", None),
            ),
            // A top-level key error wins over an earlier bad value.
            (
                r#"{"features": [1,"x",3], "bogus": 1}"#,
                (400, "unknown field", Some("bogus".into())),
            ),
            (
                r#"{"features": 5, "features": [1,2,3]}"#,
                (400, "duplicate key", Some("features".into())),
            ),
            // Ambiguity wins over bad values.
            (
                r#"{"features": [1], "instances": 5}"#,
                (400, "ambiguous request", Some("instances".into())),
            ),
            // A wrong count wins over an earlier bad element.
            (
                r#"{"features": ["x", 2]}"#,
                (422, "wrong number of features", Some("features".into())),
            ),
            // A too-large batch wins over an earlier bad instance.
            (
                r#"{"instances": [["x"],[1,2,3],[1,2,3],[1,2,3],[1,2,3]]}"#,
                (413, "batch too large", Some("instances".into())),
            ),
        ] {
            assert_eq!(rejection(body), expected, "{body}");
            assert_eq!(
                decode_str(body),
                oracle::decode(body.as_bytes(), &schema(), 4),
                "{body}"
            );
        }
    }

    #[test]
    fn counts_past_the_limits_are_exact_without_keeping_the_values() {
        let many = format!("{{\"features\": [{}0]}}", "0,".repeat(100_000));
        let e = decode_str(&many).unwrap_err();
        assert_eq!(
            (e.error(), e.got.clone()),
            ("wrong number of features", Some(json!(100_001)))
        );
        let batch = format!("{{\"instances\": [{}[1,2,3]]}}", "[1,2,3],".repeat(999));
        let e = decode_str(&batch).unwrap_err();
        assert_eq!(
            (e.error(), e.got.clone()),
            ("batch too large", Some(json!(1000)))
        );
    }

    /// The decoder this module replaced: parse the whole body into a tree
    /// that keeps duplicate keys, then check it. Kept as the oracle of the
    /// error contract.
    mod oracle {
        use super::super::{request_shape, Decoded, Location, Schema};
        use crate::serve::bad_input::{echo, BadInput, InputError};
        use ndarray::{Array2, ArrayViewMut1};
        use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
        use serde_json::json;
        use std::fmt;

        pub fn decode(
            body: &[u8],
            schema: &Schema,
            max_batch: usize,
        ) -> Result<Decoded, InputError> {
            if body.trim_ascii().is_empty() {
                return Err(InputError::new(BadInput::EmptyBody).expected(request_shape()));
            }
            let json: Json = serde_json::from_slice(body).map_err(|e| InputError::from_json(&e))?;
            let Json::Object(entries) = json else {
                return Err(InputError::new(BadInput::NotAnObject)
                    .expected(request_shape())
                    .got(json.kind()));
            };
            let mut features = None;
            let mut instances = None;
            for (key, value) in entries {
                let slot = match key.as_str() {
                    "features" => &mut features,
                    "instances" => &mut instances,
                    _ => {
                        return Err(InputError::new(BadInput::UnknownField)
                            .field(echo(&key))
                            .expected("\"features\" or \"instances\""))
                    }
                };
                if slot.is_some() {
                    return Err(InputError::new(BadInput::DuplicateKey).field(key));
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
                (Some(_), Some(_)) => Err(InputError::new(BadInput::AmbiguousRequest)
                    .field("instances")
                    .expected("either \"features\" or \"instances\", not both")),
                (None, None) => Err(InputError::new(BadInput::MissingField)
                    .field("features")
                    .expected(request_shape())),
            }
        }

        fn decode_batch(
            instances: Json,
            schema: &Schema,
            max_batch: usize,
        ) -> Result<Decoded, InputError> {
            let Json::Array(items) = instances else {
                return Err(InputError::new(BadInput::InstancesNotArray)
                    .field("instances")
                    .expected("an array of instances")
                    .got(instances.kind()));
            };
            if items.is_empty() {
                return Err(InputError::new(BadInput::EmptyBatch)
                    .field("instances")
                    .expected(format!("1 to {max_batch} instances"))
                    .got(0));
            }
            if items.len() > max_batch {
                return Err(InputError::new(BadInput::BatchTooLarge)
                    .field("instances")
                    .expected(format!("at most {max_batch} instances"))
                    .got(items.len()));
            }
            let mut rows = Array2::zeros((items.len(), schema.width()));
            for (index, (item, out)) in items.iter().zip(rows.rows_mut()).enumerate() {
                fill_row(item, schema, Location::Instance(index), out)?;
            }
            Ok(Decoded { rows, batch: true })
        }

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
                        return Err(InputError::new(BadInput::WrongFeatureCount)
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
                            return Err(InputError::new(BadInput::UnknownFeature)
                                .field(at.at_name(name))
                                .expected(json!(schema.names)));
                        };
                        if std::mem::replace(&mut seen[i], true) {
                            return Err(
                                InputError::new(BadInput::DuplicateKey).field(at.at_name(name))
                            );
                        }
                        out[i] = number(item, || at.at_name(name))?;
                    }
                    let missing: Vec<&str> = seen
                        .iter()
                        .zip(&schema.names)
                        .filter(|(s, _)| !**s)
                        .map(|(_, n)| n.as_str())
                        .collect();
                    match missing.first() {
                        None => Ok(()),
                        Some(first) => Err(InputError::new(BadInput::MissingFeature)
                            .field(at.at_name(first))
                            .expected(json!(schema.names))
                            .got(json!({ "missing": missing }))),
                    }
                }
                other => Err(InputError::new(BadInput::FeaturesNotArrayOrObject)
                    .field(at.root())
                    .expected(format!(
                        "an array of {width} numbers or an object keyed by feature name"
                    ))
                    .got(other.kind())),
            }
        }

        fn number(value: &Json, field: impl Fn() -> String) -> Result<f64, InputError> {
            match value {
                Json::Number(x) if x.is_finite() => Ok(*x),
                Json::Number(x) => Err(InputError::new(BadInput::NonFiniteValue)
                    .field(field())
                    .expected("a finite number")
                    .got(x.to_string())),
                Json::String(s) if super::super::names_non_finite(s) => {
                    Err(InputError::new(BadInput::NonFiniteValue)
                        .field(field())
                        .expected("a finite number")
                        .got(echo(s)))
                }
                other => Err(InputError::new(BadInput::NonNumericValue)
                    .field(field())
                    .expected("a number")
                    .got(other.kind())),
            }
        }

        #[derive(Debug)]
        enum Json {
            Null,
            Bool,
            Number(f64),
            String(String),
            Array(Vec<Json>),
            Object(Vec<(String, Json)>),
        }

        impl Json {
            fn kind(&self) -> &'static str {
                match self {
                    Json::Null => "null",
                    Json::Bool => "boolean",
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
            fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
                Ok(Json::Bool)
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
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Json>()? {
                    entries.push((key, value));
                }
                Ok(Json::Object(entries))
            }
        }
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
                            Just("age".to_owned()),
                            Just("bp".to_owned()),
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
            assert!(e.status().is_client_error(), "{e}");
            assert!(serde_json::from_str::<serde_json::Value>(&e.body()).is_ok());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic_and_are_never_server_errors(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let decoded = decode(&bytes, &schema(), 4);
            prop_assert_eq!(&decoded, &oracle::decode(&bytes, &schema(), 4));
            assert_client_error(decoded);
        }

        #[test]
        fn arbitrary_json_never_panics_and_is_never_a_server_error(value in arbitrary_json()) {
            let wrapped = [json!({"features": value.clone()}), json!({"instances": value.clone()}), value];
            for body in wrapped {
                let text = body.to_string();
                let decoded = decode(text.as_bytes(), &schema(), 4);
                prop_assert_eq!(&decoded, &oracle::decode(text.as_bytes(), &schema(), 4), "{}", text);
                assert_client_error(decoded);
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
