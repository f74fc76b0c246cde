//! The bad-input table: every way a client request can be refused, each with
//! its HTTP status and the stable `error` phrase of the JSON body
//! (docs/service.md lists them). [`BadInput`] is the one place these facts
//! live: the decoder, the body reader, the server and the load generator's
//! expectations (`load::traffic`) all name a variant instead of repeating a
//! status or a phrase.
//!
//! [`InputError`] is one refusal: a [`BadInput`] plus where in the request
//! (`field`), what was expected, what was sent and extra detail.

use std::fmt;

use poem::http::StatusCode;
use serde::{Serialize, Serializer};

/// Echoed user input (keys, strings, headers) is cut to this many characters.
pub const ECHO_LIMIT: usize = 64;

/// serde_json refuses input nested deeper than this.
const MAX_NESTING: usize = 128;

/// One class of refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadInput {
    MethodNotAllowed,
    UnsupportedContentType,
    HeaderTimeout,
    BodyTimeout,
    BodyTooLarge,
    CannotReadBody,
    EmptyBody,
    MalformedJson,
    NestedTooDeeply,
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
    NonFiniteValue,
    WrongFeatureCount,
    UnknownFeature,
    MissingFeature,
}

impl BadInput {
    /// The status rule: 400 when the body is not a well-formed prediction
    /// request, 422 when it does not fit the model's features, 413 for size
    /// limits, 408 for time limits, 415 and 405 for the HTTP envelope.
    pub fn status(self) -> StatusCode {
        match self {
            BadInput::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            BadInput::UnsupportedContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BadInput::HeaderTimeout | BadInput::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            BadInput::BodyTooLarge | BadInput::BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BadInput::WrongFeatureCount | BadInput::UnknownFeature | BadInput::MissingFeature => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            BadInput::CannotReadBody
            | BadInput::EmptyBody
            | BadInput::MalformedJson
            | BadInput::NestedTooDeeply
            | BadInput::NumberOutOfRange
            | BadInput::NotAnObject
            | BadInput::MissingField
            | BadInput::AmbiguousRequest
            | BadInput::UnknownField
            | BadInput::DuplicateKey
            | BadInput::FeaturesNotArrayOrObject
            | BadInput::InstancesNotArray
            | BadInput::EmptyBatch
            | BadInput::NonNumericValue
            | BadInput::NonFiniteValue => StatusCode::BAD_REQUEST,
        }
    }

    /// The `error` member of the response body: a stable short phrase.
    pub fn phrase(self) -> &'static str {
        match self {
            BadInput::MethodNotAllowed => "method not allowed",
            BadInput::UnsupportedContentType => "unsupported content type",
            BadInput::HeaderTimeout => "request header timeout",
            BadInput::BodyTimeout => "request body timeout",
            BadInput::BodyTooLarge => "body too large",
            BadInput::CannotReadBody => "cannot read request body",
            BadInput::EmptyBody => "empty body",
            BadInput::MalformedJson => "malformed JSON",
            BadInput::NestedTooDeeply => "JSON nested too deeply",
            BadInput::NumberOutOfRange => "number out of range",
            BadInput::NotAnObject => "request must be a JSON object",
            BadInput::MissingField => "missing field",
            BadInput::AmbiguousRequest => "ambiguous request",
            BadInput::UnknownField => "unknown field",
            BadInput::DuplicateKey => "duplicate key",
            BadInput::FeaturesNotArrayOrObject => "features must be an array or an object",
            BadInput::InstancesNotArray => "instances must be an array",
            BadInput::EmptyBatch => "empty batch",
            BadInput::BatchTooLarge => "batch too large",
            BadInput::NonNumericValue => "non-numeric value",
            BadInput::NonFiniteValue => "non-finite value",
            BadInput::WrongFeatureCount => "wrong number of features",
            BadInput::UnknownFeature => "unknown feature",
            BadInput::MissingFeature => "missing feature",
        }
    }
}

impl Serialize for BadInput {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.phrase())
    }
}

/// A rejected request: what is wrong and the JSON body that explains it.
/// Boxed, so that the `Ok` path of every decoding step stays small.
#[derive(Debug, Clone, PartialEq)]
pub struct InputError(Box<Rejection>);

/// The content of an [`InputError`], serialised as the response body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// What is wrong: serialised as its stable phrase.
    #[serde(rename = "error")]
    pub problem: BadInput,
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

impl Rejection {
    pub fn status(&self) -> StatusCode {
        self.problem.status()
    }

    pub fn error(&self) -> &'static str {
        self.problem.phrase()
    }
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
    pub fn new(problem: BadInput) -> Self {
        Self(Box::new(Rejection {
            problem,
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
    pub fn from_json(error: &serde_json::Error) -> Self {
        let message = error.to_string();
        if message.starts_with("recursion limit exceeded") {
            InputError::new(BadInput::NestedTooDeeply)
                .expected(format!("at most {MAX_NESTING} levels of nesting"))
                .detail(message)
        } else if message.starts_with("number out of range") {
            InputError::new(BadInput::NumberOutOfRange)
                .expected("a number that fits a 64-bit float (|x| < 1.8e308)")
                .detail(message)
        } else {
            InputError::new(BadInput::MalformedJson).detail(message)
        }
    }

    /// The error as the JSON text of a response body.
    pub fn body(&self) -> String {
        // Serialising owned strings and JSON values cannot fail.
        serde_json::to_string(&*self.0)
            .unwrap_or_else(|_| format!("{{\"error\":\"{}\"}}", self.error()))
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.error(), self.status().as_u16())?;
        if let Some(field) = &self.field {
            write!(f, " at {field}")?;
        }
        Ok(())
    }
}

/// User text as it may appear in an error body: at most [`ECHO_LIMIT`]
/// characters.
pub fn echo(s: &str) -> String {
    match s.char_indices().nth(ECHO_LIMIT) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_the_phrase_as_error_first() {
        let e = InputError::new(BadInput::WrongFeatureCount)
            .field("features")
            .expected(3)
            .got(2);
        assert_eq!(
            e.body(),
            r#"{"error":"wrong number of features","field":"features","expected":3,"got":2}"#
        );
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.to_string(), "wrong number of features (422) at features");
    }

    #[test]
    fn every_refusal_is_a_client_error() {
        use BadInput::*;
        for problem in [
            MethodNotAllowed,
            UnsupportedContentType,
            HeaderTimeout,
            BodyTimeout,
            BodyTooLarge,
            CannotReadBody,
            EmptyBody,
            MalformedJson,
            NestedTooDeeply,
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
            NonFiniteValue,
            WrongFeatureCount,
            UnknownFeature,
            MissingFeature,
        ] {
            assert!(problem.status().is_client_error(), "{problem:?}");
            assert!(!problem.phrase().is_empty());
        }
    }
}
