//! The traffic mix: how many requests of each class (valid, invalid,
//! drifted, batch) the load generator sends, as integer weights.
//!
//! Classes are interleaved by smooth weighted round-robin rather than drawn
//! at random, so `valid=70,invalid=30` over 100 requests sends exactly 70
//! and 30, spread evenly through the run, whatever the seed.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// The kinds of request the load generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// One instance drawn from the training distribution: expects 200.
    Valid,
    /// One of the service's bad-input classes, in turn: expects its 4xx.
    Invalid,
    /// One instance with the drift features shifted by k std devs: expects 200.
    Drifted,
    /// `{"instances": [...]}` of `--batch-size` valid instances: expects 200.
    Batch,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Valid, Class::Invalid, Class::Drifted, Class::Batch];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Valid => "valid",
            Class::Invalid => "invalid",
            Class::Drifted => "drifted",
            Class::Batch => "batch",
        }
    }

    fn index(self) -> usize {
        match self {
            Class::Valid => 0,
            Class::Invalid => 1,
            Class::Drifted => 2,
            Class::Batch => 3,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Weights per class; at least one is positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 4],
}

impl Mix {
    /// Only valid traffic (`valid=100`, the CLI's default).
    fn valid_only() -> Self {
        Self {
            weights: [100, 0, 0, 0],
        }
    }

    /// A mix from `(class, weight)` pairs; classes left out weigh 0.
    pub fn new(weights: &[(Class, u32)]) -> Result<Self, MixError> {
        let mut mix = Self { weights: [0; 4] };
        for (class, weight) in weights {
            mix.weights[class.index()] = *weight;
        }
        if mix.weights.iter().all(|w| *w == 0) {
            return Err(MixError::AllZero);
        }
        Ok(mix)
    }

    pub fn weight(&self, class: Class) -> u32 {
        self.weights[class.index()]
    }

    /// A deterministic, evenly interleaved sequence of classes in these
    /// proportions.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            weights: self.weights.map(i64::from),
            current: [0; 4],
        }
    }
}

impl Default for Mix {
    fn default() -> Self {
        Self::valid_only()
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Class::ALL
            .iter()
            .map(|c| format!("{c}={}", self.weight(*c)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Why a `--mix` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    #[error("the mix is empty; write it as class=weight pairs, e.g. \"valid=70,invalid=20,drifted=10,batch=0\"")]
    Empty,
    #[error("\"{0}\" is not class=weight (e.g. \"valid=70\")")]
    NotAPair(String),
    #[error("unknown traffic class \"{0}\" (expected valid, invalid, drifted or batch)")]
    UnknownClass(String),
    #[error("traffic class \"{0}\" is given twice")]
    Duplicate(&'static str),
    #[error("the weight of \"{class}\" must be a whole number from 0 to {max}, got \"{got}\"", max = u32::MAX)]
    BadWeight { class: &'static str, got: String },
    #[error("every weight is 0; at least one class needs a positive weight")]
    AllZero,
}

impl FromStr for Mix {
    type Err = MixError;

    /// Parses `valid=70,invalid=20,drifted=10,batch=0` (spaces allowed around
    /// names, `=` and commas; classes left out weigh 0).
    fn from_str(s: &str) -> Result<Self, MixError> {
        if s.trim().is_empty() {
            return Err(MixError::Empty);
        }
        let mut pairs: Vec<(Class, u32)> = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((name, weight)) = part.split_once('=') else {
                return Err(MixError::NotAPair(part.to_owned()));
            };
            let class = match name.trim().to_ascii_lowercase().as_str() {
                "valid" => Class::Valid,
                "invalid" => Class::Invalid,
                "drifted" => Class::Drifted,
                "batch" => Class::Batch,
                _ => return Err(MixError::UnknownClass(name.trim().to_owned())),
            };
            if pairs.iter().any(|(c, _)| *c == class) {
                return Err(MixError::Duplicate(class.as_str()));
            }
            let weight = weight
                .trim()
                .parse::<u32>()
                .map_err(|_| MixError::BadWeight {
                    class: class.as_str(),
                    got: weight.trim().to_owned(),
                })?;
            pairs.push((class, weight));
        }
        if pairs.is_empty() {
            return Err(MixError::Empty);
        }
        Mix::new(&pairs)
    }
}

/// Smooth weighted round-robin (as nginx balances upstreams): each step adds
/// every weight to its class's credit, picks the class with the most credit
/// and charges it the total. Over any whole cycle each class is picked
/// exactly its weight times, and picks of one class are spread out.
#[derive(Debug, Clone)]
pub struct Schedule {
    weights: [i64; 4],
    current: [i64; 4],
}

impl Iterator for Schedule {
    type Item = Class;

    fn next(&mut self) -> Option<Class> {
        let total: i64 = self.weights.iter().sum();
        if total == 0 {
            return None;
        }
        let mut best = 0;
        for i in 0..4 {
            self.current[i] += self.weights[i];
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        Some(Class::ALL[best])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_all_four_classes_with_spaces_and_any_order() {
        let mix: Mix = " batch=1 , drifted = 10,invalid=20,valid=70 "
            .parse()
            .unwrap();
        assert_eq!(
            Class::ALL.map(|c| mix.weight(c)),
            [70, 20, 10, 1],
            "weights by class"
        );
        assert_eq!(mix.to_string(), "valid=70,invalid=20,drifted=10,batch=1");
    }

    #[test]
    fn classes_left_out_of_the_mix_weigh_zero() {
        let mix: Mix = "invalid=3".parse().unwrap();
        assert_eq!(Class::ALL.map(|c| mix.weight(c)), [0, 3, 0, 0]);
    }

    #[test]
    fn mix_parse_errors_name_the_offending_part() {
        let error = |s: &str| s.parse::<Mix>().unwrap_err();
        assert_eq!(error(""), MixError::Empty);
        assert_eq!(error(" , "), MixError::Empty);
        assert_eq!(error("valid"), MixError::NotAPair("valid".into()));
        assert_eq!(error("bogus=1"), MixError::UnknownClass("bogus".into()));
        assert_eq!(error("valid=1,valid=2"), MixError::Duplicate("valid"));
        assert_eq!(
            error("valid=-1"),
            MixError::BadWeight {
                class: "valid",
                got: "-1".into()
            }
        );
        assert_eq!(
            error("drifted=0.5"),
            MixError::BadWeight {
                class: "drifted",
                got: "0.5".into()
            }
        );
        assert_eq!(error("valid=0,batch=0"), MixError::AllZero);
        let message = error("valid=7,drift=3").to_string();
        assert!(
            message.contains("\"drift\"") && message.contains("drifted"),
            "the message names the bad class and the right ones: {message}"
        );
    }

    #[test]
    fn schedule_sends_exact_proportions_over_a_cycle() {
        let mix: Mix = "valid=70,invalid=20,drifted=10,batch=0".parse().unwrap();
        let picks: Vec<Class> = mix.schedule().take(100).collect();
        let count = |c| picks.iter().filter(|p| **p == c).count();
        assert_eq!(
            [
                count(Class::Valid),
                count(Class::Invalid),
                count(Class::Drifted),
                count(Class::Batch)
            ],
            [70, 20, 10, 0]
        );
    }

    #[test]
    fn schedule_interleaves_rather_than_sending_classes_in_blocks() {
        let mix: Mix = "valid=1,invalid=1".parse().unwrap();
        let picks: Vec<Class> = mix.schedule().take(6).collect();
        assert!(
            picks.windows(2).all(|w| w[0] != w[1]),
            "equal weights alternate: {picks:?}"
        );
        let mix: Mix = "valid=9,drifted=1".parse().unwrap();
        let first_ten: Vec<Class> = mix.schedule().take(10).collect();
        assert_eq!(
            first_ten.iter().filter(|c| **c == Class::Drifted).count(),
            1
        );
    }
}
