//! Request generation: turns the traffic mix and the model's training
//! reference into concrete HTTP requests, each with the status the service
//! must answer (docs/service.md, "Errors from `/predict`").
//!
//! Valid values are drawn per feature from the training reference's decile
//! bins (a bin by its share, then a uniform value inside it), so valid
//! traffic has the training distribution and shows no drift, binary
//! features included. Without bins, a normal distribution with the reference
//! mean and standard deviation, clamped to [min, max], stands in. Drifted requests add k standard deviations to the chosen
//! features; invalid requests go round every bad-input class of the
//! service in turn, each built from a valid instance so that exactly one
//! thing is wrong with it.

use std::fmt;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde::Serialize;

use super::mix::{Class, Mix, Schedule};
use crate::serve::bad_input::BadInput;

/// The Content-Type of every request that is meant to get past the envelope.
pub const JSON: &str = "application/json";

/// Training statistics of one feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureStats {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl FeatureStats {
    /// Refuses statistics that cannot produce finite, in-range values.
    pub fn checked(self, name: &str) -> anyhow::Result<Self> {
        let Self {
            mean,
            std,
            min,
            max,
        } = self;
        anyhow::ensure!(
            [mean, std, min, max].iter().all(|v| v.is_finite()) && std >= 0.0 && min <= max,
            "the training reference of feature {name:?} is unusable (mean {mean}, std {std}, min {min}, max {max})"
        );
        Ok(self)
    }
}

/// What the generator knows about the model it sends to.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub model_version: String,
    pub feature_names: Vec<String>,
    /// One entry per feature, in `feature_names` order.
    pub stats: Vec<FeatureStats>,
    /// Decile bins per feature, when the artifact was read (empty: none).
    pub bins: Vec<Option<crate::model::BinReference>>,
}

/// Service limits the generator may rely on: when known, requests just over
/// them are part of the invalid rotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The service's `--max-body-bytes`.
    pub max_body_bytes: Option<usize>,
    /// The service's `--max-batch`.
    pub max_batch: Option<usize>,
}

/// The service's bad-input classes, one request shape each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidKind {
    WrongMethod,
    MissingContentType,
    WrongContentType,
    BodyTooLarge,
    EmptyBody,
    MalformedJson,
    InvalidUtf8,
    BareNan,
    DeeplyNested,
    NumberOutOfRange,
    NotAnObject,
    MissingField,
    AmbiguousRequest,
    UnknownField,
    DuplicateKey,
    FeaturesNotArrayOrObject,
    InstancesNotArray,
    EmptyBatch,
    BatchTooLarge,
    NonNumericValue,
    NanString,
    InfinityString,
    WrongFeatureCount,
    UnknownFeature,
    DuplicateFeature,
    MissingFeature,
}

impl InvalidKind {
    pub const ALL: [InvalidKind; 26] = [
        InvalidKind::WrongMethod,
        InvalidKind::MissingContentType,
        InvalidKind::WrongContentType,
        InvalidKind::BodyTooLarge,
        InvalidKind::EmptyBody,
        InvalidKind::MalformedJson,
        InvalidKind::InvalidUtf8,
        InvalidKind::BareNan,
        InvalidKind::DeeplyNested,
        InvalidKind::NumberOutOfRange,
        InvalidKind::NotAnObject,
        InvalidKind::MissingField,
        InvalidKind::AmbiguousRequest,
        InvalidKind::UnknownField,
        InvalidKind::DuplicateKey,
        InvalidKind::FeaturesNotArrayOrObject,
        InvalidKind::InstancesNotArray,
        InvalidKind::EmptyBatch,
        InvalidKind::BatchTooLarge,
        InvalidKind::NonNumericValue,
        InvalidKind::NanString,
        InvalidKind::InfinityString,
        InvalidKind::WrongFeatureCount,
        InvalidKind::UnknownFeature,
        InvalidKind::DuplicateFeature,
        InvalidKind::MissingFeature,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InvalidKind::WrongMethod => "wrong_method",
            InvalidKind::MissingContentType => "missing_content_type",
            InvalidKind::WrongContentType => "wrong_content_type",
            InvalidKind::BodyTooLarge => "body_too_large",
            InvalidKind::EmptyBody => "empty_body",
            InvalidKind::MalformedJson => "malformed_json",
            InvalidKind::InvalidUtf8 => "invalid_utf8",
            InvalidKind::BareNan => "bare_nan",
            InvalidKind::DeeplyNested => "deeply_nested",
            InvalidKind::NumberOutOfRange => "number_out_of_range",
            InvalidKind::NotAnObject => "not_an_object",
            InvalidKind::MissingField => "missing_field",
            InvalidKind::AmbiguousRequest => "ambiguous_request",
            InvalidKind::UnknownField => "unknown_field",
            InvalidKind::DuplicateKey => "duplicate_key",
            InvalidKind::FeaturesNotArrayOrObject => "features_not_array_or_object",
            InvalidKind::InstancesNotArray => "instances_not_array",
            InvalidKind::EmptyBatch => "empty_batch",
            InvalidKind::BatchTooLarge => "batch_too_large",
            InvalidKind::NonNumericValue => "non_numeric_value",
            InvalidKind::NanString => "nan_string",
            InvalidKind::InfinityString => "infinity_string",
            InvalidKind::WrongFeatureCount => "wrong_feature_count",
            InvalidKind::UnknownFeature => "unknown_feature",
            InvalidKind::DuplicateFeature => "duplicate_feature",
            InvalidKind::MissingFeature => "missing_feature",
        }
    }

    /// The refusal the service answers this class with (the bad-input
    /// table lives once, in `serve::bad_input`).
    pub fn bad_input(self) -> BadInput {
        match self {
            InvalidKind::WrongMethod => BadInput::MethodNotAllowed,
            InvalidKind::MissingContentType | InvalidKind::WrongContentType => {
                BadInput::UnsupportedContentType
            }
            InvalidKind::BodyTooLarge => BadInput::BodyTooLarge,
            InvalidKind::EmptyBody => BadInput::EmptyBody,
            InvalidKind::MalformedJson | InvalidKind::InvalidUtf8 | InvalidKind::BareNan => {
                BadInput::MalformedJson
            }
            InvalidKind::DeeplyNested => BadInput::NestedTooDeeply,
            InvalidKind::NumberOutOfRange => BadInput::NumberOutOfRange,
            InvalidKind::NotAnObject => BadInput::NotAnObject,
            InvalidKind::MissingField => BadInput::MissingField,
            InvalidKind::AmbiguousRequest => BadInput::AmbiguousRequest,
            InvalidKind::UnknownField => BadInput::UnknownField,
            InvalidKind::DuplicateKey | InvalidKind::DuplicateFeature => BadInput::DuplicateKey,
            InvalidKind::FeaturesNotArrayOrObject => BadInput::FeaturesNotArrayOrObject,
            InvalidKind::InstancesNotArray => BadInput::InstancesNotArray,
            InvalidKind::EmptyBatch => BadInput::EmptyBatch,
            InvalidKind::BatchTooLarge => BadInput::BatchTooLarge,
            InvalidKind::NonNumericValue => BadInput::NonNumericValue,
            InvalidKind::NanString | InvalidKind::InfinityString => BadInput::NonFiniteValue,
            InvalidKind::WrongFeatureCount => BadInput::WrongFeatureCount,
            InvalidKind::UnknownFeature => BadInput::UnknownFeature,
            InvalidKind::MissingFeature => BadInput::MissingFeature,
        }
    }

    /// The status the service answers this class with.
    pub fn status(self) -> u16 {
        self.bad_input().status().as_u16()
    }

    /// The `error` phrase of the service's response body.
    pub fn error(self) -> &'static str {
        self.bad_input().phrase()
    }

    /// The classes that can be sent with what is known of the service's
    /// limits: an oversized body or batch only when the limit was given.
    pub fn enabled(limits: &Limits) -> Vec<InvalidKind> {
        InvalidKind::ALL
            .into_iter()
            .filter(|kind| match kind {
                InvalidKind::BodyTooLarge => limits.max_body_bytes.is_some(),
                InvalidKind::BatchTooLarge => limits.max_batch.is_some(),
                _ => true,
            })
            .collect()
    }
}

impl fmt::Display for InvalidKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request to send, with the answer it must get.
#[derive(Debug, Clone)]
pub struct PlannedRequest {
    pub class: Class,
    /// Which bad-input class, for [`Class::Invalid`].
    pub invalid: Option<InvalidKind>,
    pub method: Method,
    pub content_type: Option<&'static str>,
    /// Shared bytes: sending clones the handle, not an oversized body.
    pub body: Bytes,
    pub expected_status: u16,
    /// The `error` phrase an invalid request must get back.
    pub expected_error: Option<&'static str>,
}

/// How to build requests; see [`Generator::new`].
#[derive(Debug, Clone)]
pub struct TrafficOptions {
    pub mix: Mix,
    /// Indices into the profile's features.
    pub drift_features: Vec<usize>,
    pub drift_sigma: f64,
    pub batch_size: usize,
    pub seed: u64,
    pub limits: Limits,
}

/// Depth of the deeply-nested body: well over the service's 128 levels.
const NESTING: usize = 200;

/// The largest oversized body the generator is willing to build.
const MAX_OVERSIZED_BODY: usize = 64 * 1024 * 1024;

/// Produces the request sequence: deterministic for a given profile,
/// options and seed.
#[derive(Debug)]
pub struct Generator {
    profile: Profile,
    options: TrafficOptions,
    rng: StdRng,
    schedule: Schedule,
    invalid_kinds: Vec<InvalidKind>,
    next_invalid: usize,
    oversized: Option<Bytes>,
}

impl Generator {
    pub fn new(profile: Profile, options: TrafficOptions) -> anyhow::Result<Self> {
        let width = profile.feature_names.len();
        anyhow::ensure!(width > 0, "the model has no features");
        anyhow::ensure!(
            profile.stats.len() == width,
            "the training reference has {} features, the model {width}",
            profile.stats.len()
        );
        anyhow::ensure!(
            options.drift_features.iter().all(|i| *i < width),
            "a drift feature index is out of range"
        );
        anyhow::ensure!(
            options.drift_sigma.is_finite(),
            "--drift-sigma must be a finite number"
        );
        anyhow::ensure!(options.batch_size > 0, "--batch-size must be at least 1");
        if let Some(max_batch) = options.limits.max_batch {
            anyhow::ensure!(max_batch > 0, "--max-batch must be at least 1");
            anyhow::ensure!(
                options.mix.weight(Class::Batch) == 0 || options.batch_size <= max_batch,
                "--batch-size {} is over --max-batch {max_batch}: batch requests would all be refused",
                options.batch_size
            );
        }
        if let Some(limit) = options.limits.max_body_bytes {
            anyhow::ensure!(
                (1..MAX_OVERSIZED_BODY).contains(&limit),
                "--max-body-bytes must be between 1 and {} to build a body just over it",
                MAX_OVERSIZED_BODY - 1
            );
        }
        let mut generator = Self {
            rng: StdRng::seed_from_u64(options.seed),
            schedule: options.mix.schedule(),
            invalid_kinds: InvalidKind::enabled(&options.limits),
            next_invalid: 0,
            oversized: None,
            profile,
            options,
        };
        if let Some(limit) = generator.options.limits.max_body_bytes {
            let mut body = generator.single(&generator.profile.stats_means());
            // JSON allows trailing whitespace: were the limit larger than
            // given, this body would be a valid request (and a visible 200).
            body.resize(body.len().max(limit + 1), b' ');
            generator.oversized = Some(Bytes::from(body));
        }
        Ok(generator)
    }

    /// The bad-input classes this generator goes round.
    pub fn invalid_kinds(&self) -> &[InvalidKind] {
        &self.invalid_kinds
    }

    /// The next request of the sequence.
    pub fn next_request(&mut self) -> PlannedRequest {
        let class = self.schedule.next().unwrap_or(Class::Valid);
        match class {
            Class::Valid => {
                let row = self.sample();
                ok(class, self.single(&row))
            }
            Class::Drifted => {
                let mut row = self.sample();
                for &i in &self.options.drift_features {
                    row[i] += self.options.drift_sigma * self.profile.stats[i].std;
                }
                ok(class, self.single(&row))
            }
            Class::Batch => {
                let rows: Vec<Vec<f64>> = (0..self.options.batch_size)
                    .map(|_| self.sample())
                    .collect();
                ok(class, batch(&rows))
            }
            Class::Invalid => {
                let kind = self.invalid_kinds[self.next_invalid % self.invalid_kinds.len()];
                self.next_invalid += 1;
                self.invalid(kind)
            }
        }
    }

    /// One instance from the training distribution: per feature
    /// normal(mean, std) clamped to [min, max].
    fn sample(&mut self) -> Vec<f64> {
        let mut row = Vec::with_capacity(self.profile.stats.len());
        for (i, s) in self.profile.stats.iter().enumerate() {
            let value = match self.profile.bins.get(i).and_then(Option::as_ref) {
                Some(bins) => sample_bin(&mut self.rng, bins, s),
                None => s.mean + s.std * standard_normal(&mut self.rng),
            };
            row.push(value.clamp(s.min, s.max));
        }
        row
    }

    fn single(&self, row: &[f64]) -> Vec<u8> {
        format!("{{\"features\":{}}}", array(row)).into_bytes()
    }

    fn named(&self, row: &[f64], skip_last: bool, extra: Option<String>) -> String {
        let names = &self.profile.feature_names;
        let take = if skip_last {
            names.len() - 1
        } else {
            names.len()
        };
        let mut entries: Vec<String> = names
            .iter()
            .zip(row)
            .take(take)
            .map(|(name, value)| format!("{}:{}", string(name), number(*value)))
            .collect();
        entries.extend(extra);
        format!("{{{}}}", entries.join(","))
    }

    fn invalid(&mut self, kind: InvalidKind) -> PlannedRequest {
        let row = self.sample();
        let width = row.len();
        let valid = self.single(&row);
        let text = |s: String| s.into_bytes();
        // The value position to spoil: the second feature when there is one.
        let at = 1.min(width - 1);
        let with_value = |value: &str| {
            let items: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    if i == at {
                        value.to_owned()
                    } else {
                        number(*v)
                    }
                })
                .collect();
            format!("{{\"features\":[{}]}}", items.join(",")).into_bytes()
        };
        let mut request = PlannedRequest {
            class: Class::Invalid,
            invalid: Some(kind),
            method: Method::POST,
            content_type: Some(JSON),
            body: Bytes::new(),
            expected_status: kind.status(),
            expected_error: Some(kind.error()),
        };
        if let (InvalidKind::BodyTooLarge, Some(oversized)) = (kind, &self.oversized) {
            request.body = oversized.clone();
            return request;
        }
        let body = match kind {
            InvalidKind::WrongMethod => {
                request.method = Method::GET;
                request.content_type = None;
                Vec::new()
            }
            InvalidKind::MissingContentType => {
                request.content_type = None;
                valid
            }
            InvalidKind::WrongContentType => {
                request.content_type = Some("text/plain");
                valid
            }
            InvalidKind::BodyTooLarge => valid,
            InvalidKind::EmptyBody => Vec::new(),
            InvalidKind::MalformedJson => {
                // Truncated: the closing "]}" is missing.
                let mut body = valid;
                body.truncate(body.len().saturating_sub(2));
                body
            }
            InvalidKind::InvalidUtf8 => {
                let mut body = b"{\"features\":[\"".to_vec();
                body.extend_from_slice(&[0xff, 0xfe]);
                body.extend_from_slice(b"\"]}");
                body
            }
            InvalidKind::BareNan => with_value("NaN"),
            InvalidKind::DeeplyNested => text(format!(
                "{{\"features\":{}{}{}}}",
                "[".repeat(NESTING),
                number(row[0]),
                "]".repeat(NESTING)
            )),
            InvalidKind::NumberOutOfRange => with_value("1e400"),
            InvalidKind::NotAnObject => text(array(&row)),
            InvalidKind::MissingField => b"{}".to_vec(),
            InvalidKind::AmbiguousRequest => text(format!(
                "{{\"features\":{a},\"instances\":[{a}]}}",
                a = array(&row)
            )),
            InvalidKind::UnknownField => text(format!("{{\"feature\":{}}}", array(&row))),
            InvalidKind::DuplicateKey => text(format!(
                "{{\"features\":{a},\"features\":{a}}}",
                a = array(&row)
            )),
            InvalidKind::FeaturesNotArrayOrObject => {
                text(format!("{{\"features\":{}}}", number(row[0])))
            }
            InvalidKind::InstancesNotArray => text(format!(
                "{{\"instances\":{}}}",
                self.named(&row, false, None)
            )),
            InvalidKind::EmptyBatch => b"{\"instances\":[]}".to_vec(),
            InvalidKind::BatchTooLarge => {
                let rows = self.options.limits.max_batch.unwrap_or(0) + 1;
                let rows: Vec<Vec<f64>> = (0..rows).map(|_| self.sample()).collect();
                batch(&rows)
            }
            InvalidKind::NonNumericValue => with_value(&string(&number(row[at]))),
            InvalidKind::NanString => with_value("\"NaN\""),
            InvalidKind::InfinityString => with_value("\"Infinity\""),
            InvalidKind::WrongFeatureCount => {
                let mut longer = row.clone();
                longer.push(row[0]);
                self.single(&longer)
            }
            InvalidKind::UnknownFeature => {
                let name = self.unknown_name();
                let extra = format!("{}:{}", string(&name), number(row[0]));
                text(format!(
                    "{{\"features\":{}}}",
                    self.named(&row, false, Some(extra))
                ))
            }
            InvalidKind::DuplicateFeature => {
                let first = &self.profile.feature_names[0];
                let extra = format!("{}:{}", string(first), number(row[0]));
                text(format!(
                    "{{\"features\":{}}}",
                    self.named(&row, false, Some(extra))
                ))
            }
            InvalidKind::MissingFeature => {
                text(format!("{{\"features\":{}}}", self.named(&row, true, None)))
            }
        };
        request.body = Bytes::from(body);
        request
    }

    /// A feature name the model does not have.
    fn unknown_name(&self) -> String {
        let mut name = "not_a_feature".to_owned();
        while self.profile.feature_names.contains(&name) {
            name.push('_');
        }
        name
    }
}

impl Profile {
    fn stats_means(&self) -> Vec<f64> {
        self.stats
            .iter()
            .map(|s| s.mean.clamp(s.min, s.max))
            .collect()
    }
}

fn ok(class: Class, body: Vec<u8>) -> PlannedRequest {
    PlannedRequest {
        class,
        invalid: None,
        method: Method::POST,
        content_type: Some(JSON),
        body: Bytes::from(body),
        expected_status: 200,
        expected_error: None,
    }
}

fn batch(rows: &[Vec<f64>]) -> Vec<u8> {
    let items: Vec<String> = rows.iter().map(|r| array(r)).collect();
    format!("{{\"instances\":[{}]}}", items.join(",")).into_bytes()
}

/// A finite number as JSON, exactly (serde_json round-trips f64).
fn number(value: f64) -> String {
    serde_json::to_string(&value).unwrap_or_else(|_| "0".to_owned())
}

fn array(row: &[f64]) -> String {
    let items: Vec<String> = row.iter().map(|v| number(*v)).collect();
    format!("[{}]", items.join(","))
}

fn string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A bin chosen by its reference share, then a uniform value inside it
/// (the outer bins end at the training min and max).
fn sample_bin(rng: &mut StdRng, bins: &crate::model::BinReference, s: &FeatureStats) -> f64 {
    let mut pick: f64 = rng.gen::<f64>() * bins.proportions.iter().sum::<f64>();
    let mut bin = bins.proportions.len().saturating_sub(1);
    for (i, share) in bins.proportions.iter().enumerate() {
        if pick < *share {
            bin = i;
            break;
        }
        pick -= share;
    }
    let low = if bin == 0 { s.min } else { bins.edges[bin - 1] };
    let high = bins.edges.get(bin).copied().unwrap_or(s.max);
    if high <= low {
        return high;
    }
    // (low, high]: the service bins with `edge < value`, so the lower edge
    // itself belongs to the bin below.
    high - rng.gen::<f64>() * (high - low)
}

/// Box–Muller: a standard normal draw from two uniform ones.
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]: ln is finite
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile {
            model_version: "v1".into(),
            feature_names: vec!["age".into(), "body mass index".into(), "bp".into()],
            stats: vec![
                FeatureStats {
                    mean: 0.0,
                    std: 1.0,
                    min: -2.0,
                    max: 2.0,
                },
                FeatureStats {
                    mean: 10.0,
                    std: 0.5,
                    min: 9.0,
                    max: 11.0,
                },
                FeatureStats {
                    mean: 100.0,
                    std: 5.0,
                    min: 80.0,
                    max: 120.0,
                },
            ],
            bins: Vec::new(),
        }
    }

    fn options(mix: &str) -> TrafficOptions {
        TrafficOptions {
            mix: mix.parse().unwrap(),
            drift_features: vec![1],
            drift_sigma: 3.0,
            batch_size: 4,
            seed: 7,
            limits: Limits::default(),
        }
    }

    fn body_json(request: &PlannedRequest) -> serde_json::Value {
        serde_json::from_slice(&request.body).expect("valid JSON body")
    }

    #[test]
    fn valid_values_from_bins_reproduce_the_reference_shares() {
        let values: Vec<f64> = (0..1000)
            .map(|i| if i % 4 == 0 { 1.0 } else { 0.0 })
            .collect();
        let bins = crate::model::BinReference::deciles(&values).unwrap();
        let mut p = profile();
        p.stats.truncate(1);
        p.feature_names.truncate(1);
        p.stats[0] = FeatureStats {
            mean: 0.25,
            std: 0.43,
            min: 0.0,
            max: 1.0,
        };
        p.bins = vec![Some(bins.clone())];
        let mut single = options("valid=1");
        single.drift_features = vec![0];
        let mut generator = Generator::new(p, single).unwrap();
        let mut counts = vec![0u64; bins.bins()];
        for _ in 0..2000 {
            counts[bins.bin(generator.sample()[0])] += 1;
        }
        let psi = bins.psi(&counts).unwrap();
        assert!(
            psi < 0.01,
            "binary feature sampled with PSI {psi}: {counts:?}"
        );
    }

    #[test]
    fn valid_values_stay_within_the_training_range() {
        let mut generator = Generator::new(profile(), options("valid=1")).unwrap();
        for _ in 0..500 {
            let request = generator.next_request();
            assert_eq!(
                (request.class, request.expected_status),
                (Class::Valid, 200)
            );
            let body = body_json(&request);
            let values = body["features"].as_array().unwrap();
            for (value, stats) in values.iter().zip(&profile().stats) {
                let v = value.as_f64().unwrap();
                assert!(stats.min <= v && v <= stats.max, "{v} outside {stats:?}");
            }
        }
    }

    #[test]
    fn drifted_requests_shift_only_the_drift_features_by_sigma_std() {
        let mean_of = |mix: &str, feature: usize| {
            let mut generator = Generator::new(profile(), options(mix)).unwrap();
            let n = 2000;
            (0..n)
                .map(|_| {
                    body_json(&generator.next_request())["features"][feature]
                        .as_f64()
                        .unwrap()
                })
                .sum::<f64>()
                / n as f64
        };
        // Feature 1: mean 10, std 0.5 → shifted by 1.5 (clamping trims a little).
        let shift = mean_of("drifted=1", 1) - mean_of("valid=1", 1);
        assert!(
            (shift - 1.5).abs() < 0.1,
            "shift of the drift feature: {shift}"
        );
        let other = mean_of("drifted=1", 2) - mean_of("valid=1", 2);
        assert!(other.abs() < 1e-9, "other features are untouched: {other}");
    }

    #[test]
    fn batch_requests_hold_batch_size_instances() {
        let mut generator = Generator::new(profile(), options("batch=1")).unwrap();
        let request = generator.next_request();
        assert_eq!(request.class, Class::Batch);
        assert_eq!(
            body_json(&request)["instances"].as_array().unwrap().len(),
            4
        );
    }

    #[test]
    fn every_class_expects_the_documented_status_and_phrase() {
        // Literal copy of the table in docs/service.md: the oracle of
        // serve::bad_input, from the client's side.
        let expected = [
            ("wrong_method", 405, "method not allowed"),
            ("missing_content_type", 415, "unsupported content type"),
            ("wrong_content_type", 415, "unsupported content type"),
            ("body_too_large", 413, "body too large"),
            ("empty_body", 400, "empty body"),
            ("malformed_json", 400, "malformed JSON"),
            ("invalid_utf8", 400, "malformed JSON"),
            ("bare_nan", 400, "malformed JSON"),
            ("deeply_nested", 400, "JSON nested too deeply"),
            ("number_out_of_range", 400, "number out of range"),
            ("not_an_object", 400, "request must be a JSON object"),
            ("missing_field", 400, "missing field"),
            ("ambiguous_request", 400, "ambiguous request"),
            ("unknown_field", 400, "unknown field"),
            ("duplicate_key", 400, "duplicate key"),
            (
                "features_not_array_or_object",
                400,
                "features must be an array or an object",
            ),
            ("instances_not_array", 400, "instances must be an array"),
            ("empty_batch", 400, "empty batch"),
            ("batch_too_large", 413, "batch too large"),
            ("non_numeric_value", 400, "non-numeric value"),
            ("nan_string", 400, "non-finite value"),
            ("infinity_string", 400, "non-finite value"),
            ("wrong_feature_count", 422, "wrong number of features"),
            ("unknown_feature", 422, "unknown feature"),
            ("duplicate_feature", 400, "duplicate key"),
            ("missing_feature", 422, "missing feature"),
        ];
        let actual: Vec<(&str, u16, &str)> = InvalidKind::ALL
            .into_iter()
            .map(|k| (k.as_str(), k.status(), k.error()))
            .collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn invalid_requests_go_round_every_enabled_bad_input_class() {
        let mut generator = Generator::new(profile(), options("invalid=1")).unwrap();
        let kinds: Vec<InvalidKind> = (0..24)
            .map(|_| generator.next_request().invalid.unwrap())
            .collect();
        let expected: Vec<InvalidKind> = InvalidKind::ALL
            .into_iter()
            .filter(|k| !matches!(k, InvalidKind::BodyTooLarge | InvalidKind::BatchTooLarge))
            .collect();
        assert_eq!(
            kinds, expected,
            "without known limits the two size classes are skipped"
        );
        assert_eq!(
            generator.next_request().invalid,
            Some(expected[0]),
            "then it starts over"
        );
    }

    #[test]
    fn size_classes_are_sent_just_over_the_given_limits() {
        let mut opts = options("invalid=1");
        opts.limits = Limits {
            max_body_bytes: Some(2000),
            max_batch: Some(3),
        };
        let mut generator = Generator::new(profile(), opts).unwrap();
        assert_eq!(generator.invalid_kinds().len(), InvalidKind::ALL.len());
        let requests: Vec<PlannedRequest> = (0..26).map(|_| generator.next_request()).collect();
        let find = |kind| requests.iter().find(|r| r.invalid == Some(kind)).unwrap();
        let oversized = find(InvalidKind::BodyTooLarge);
        assert_eq!(oversized.body.len(), 2001);
        assert!(
            body_json(oversized)["features"].is_array(),
            "padded, still a request"
        );
        let big_batch = find(InvalidKind::BatchTooLarge);
        assert_eq!(
            body_json(big_batch)["instances"].as_array().unwrap().len(),
            4
        );
        assert_eq!(
            (oversized.expected_status, big_batch.expected_status),
            (413, 413)
        );
    }

    #[test]
    fn each_invalid_body_has_exactly_the_flaw_its_class_names() {
        let mut generator = Generator::new(profile(), options("invalid=1")).unwrap();
        for _ in 0..24 {
            let r = generator.next_request();
            let kind = r.invalid.unwrap();
            let text = String::from_utf8_lossy(&r.body).into_owned();
            let parsed = serde_json::from_slice::<serde_json::Value>(&r.body);
            match kind {
                InvalidKind::WrongMethod => assert_eq!(r.method, Method::GET),
                InvalidKind::MissingContentType => assert_eq!(r.content_type, None),
                InvalidKind::WrongContentType => assert_eq!(r.content_type, Some("text/plain")),
                InvalidKind::EmptyBody => assert!(r.body.is_empty()),
                InvalidKind::MalformedJson | InvalidKind::BareNan => {
                    assert!(parsed.is_err(), "{kind}: {text}")
                }
                InvalidKind::InvalidUtf8 => assert!(std::str::from_utf8(&r.body).is_err()),
                InvalidKind::NumberOutOfRange => assert!(text.contains("1e400"), "{text}"),
                InvalidKind::WrongFeatureCount => {
                    assert_eq!(parsed.unwrap()["features"].as_array().unwrap().len(), 4)
                }
                InvalidKind::MissingFeature => {
                    let features = parsed.unwrap()["features"].clone();
                    assert_eq!(features.as_object().unwrap().len(), 2);
                    assert!(features.get("bp").is_none(), "{text}");
                }
                InvalidKind::UnknownFeature => {
                    assert!(parsed.unwrap()["features"]["not_a_feature"].is_number())
                }
                InvalidKind::DuplicateFeature => {
                    assert_eq!(text.matches("\"age\"").count(), 2, "{text}")
                }
                InvalidKind::DuplicateKey => {
                    assert_eq!(text.matches("\"features\"").count(), 2, "{text}")
                }
                InvalidKind::NanString => assert!(text.contains("\"NaN\""), "{text}"),
                InvalidKind::InfinityString => assert!(text.contains("\"Infinity\""), "{text}"),
                InvalidKind::NonNumericValue => {
                    assert!(parsed.unwrap()["features"][1].is_string(), "{text}")
                }
                InvalidKind::DeeplyNested => {
                    assert!(text.starts_with(&format!("{{\"features\":{}", "[".repeat(NESTING))))
                }
                _ => {}
            }
            assert_eq!(r.expected_status, kind.status());
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_requests() {
        let bodies = |seed| {
            let mut opts = options("valid=2,invalid=1,drifted=1,batch=1");
            opts.seed = seed;
            let mut generator = Generator::new(profile(), opts).unwrap();
            (0..50)
                .map(|_| generator.next_request().body)
                .collect::<Vec<_>>()
        };
        assert_eq!(bodies(1), bodies(1));
        assert_ne!(bodies(1), bodies(2));
    }

    #[test]
    fn a_batch_size_over_the_known_batch_limit_is_refused() {
        let mut opts = options("batch=1");
        opts.batch_size = 10;
        opts.limits.max_batch = Some(8);
        let error = Generator::new(profile(), opts).unwrap_err().to_string();
        assert!(
            error.contains("--batch-size 10") && error.contains("--max-batch 8"),
            "{error}"
        );
    }

    #[test]
    fn unusable_reference_statistics_are_refused() {
        let stats = FeatureStats {
            mean: f64::NAN,
            std: 1.0,
            min: 0.0,
            max: 1.0,
        };
        assert!(stats.checked("x").is_err());
        let stats = FeatureStats {
            mean: 0.5,
            std: 1.0,
            min: 2.0,
            max: 1.0,
        };
        assert!(stats.checked("x").is_err());
    }
}
