//! The CPU cost of a prediction id: signing one (what /predict adds per row
//! with `--feedback-key-file`) and verifying one (what /feedback does per
//! item, forged or not), in nanoseconds, median of several rounds. Compare
//! with the per-request time of benches/serve.sh (about 20 µs of a core).
//!
//!     cargo bench --bench prediction_id

use std::hint::black_box;
use std::time::Instant;

use mlwatch::serve::prediction_id::{verify, Issuer, Key, Predicted};

const IDS: u32 = 200_000;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let issuer = Issuer::new(Key::new(b"a benchmark key of at least 32 bytes"));
    let version = [0x49, 0x0e, 0x9c, 0x76, 0xff, 0x2c];
    let mut sign = Vec::new();
    let mut check = Vec::new();
    let mut forged = Vec::new();
    for _ in 0..7 {
        let mut ids = String::with_capacity(IDS as usize * 63);
        let start = Instant::now();
        for i in 0..IDS {
            ids.push(',');
            issuer.issue_into(
                version,
                1_767_225_600_000,
                Predicted::Value(f64::from(i)),
                &mut ids,
            );
        }
        sign.push(start.elapsed().as_nanos() as f64 / f64::from(IDS));
        let list: Vec<&str> = ids.split(',').skip(1).collect();
        let start = Instant::now();
        for id in &list {
            black_box(verify(issuer.key(), black_box(id)).is_ok());
        }
        check.push(start.elapsed().as_nanos() as f64 / list.len() as f64);
        let bad: Vec<String> = list.iter().map(|id| id.replacen('A', "B", 1)).collect();
        let start = Instant::now();
        for id in &bad {
            black_box(verify(issuer.key(), black_box(id)).is_ok());
        }
        forged.push(start.elapsed().as_nanos() as f64 / bad.len() as f64);
    }
    println!("| operation | ns per id (median of 7 × {IDS}) |");
    println!("| --- | --- |");
    println!("| sign and encode (issue_into) | {:.0} |", median(sign));
    println!("| decode and verify, genuine | {:.0} |", median(check));
    println!("| decode and verify, altered | {:.0} |", median(forged));
}
