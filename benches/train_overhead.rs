//! Training with the metrics layer on vs. off: same seed, same data, same
//! process, runs interleaved so that machine noise hits both sides alike.
//! On: every iteration and batch recorded into the OTel instruments and the
//! registry rendered every 100 ms as a (frequent) scrape would. Off: the
//! same reporter with no metrics.
//!
//!     cargo bench --bench train_overhead [-- ROUNDS]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlwatch::telemetry::Telemetry;
use mlwatch::train::{fit, Algorithm, FitOptions, Reporter, TrainingMetrics};

fn run(algorithm: Algorithm, instrumented: bool) -> Duration {
    let mut options = FitOptions::new(algorithm);
    options.batch_size = 8;
    let telemetry = Arc::new(Telemetry::new().expect("telemetry"));
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = instrumented.then(|| {
        let (telemetry, stop) = (Arc::clone(&telemetry), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = telemetry.render();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });
    let metrics = instrumented.then(|| Arc::new(TrainingMetrics::new(&telemetry.meter())));
    let mut reporter = Reporter::new(metrics, None);
    let started = Instant::now();
    fit(&options, &mut reporter, &AtomicBool::new(false)).expect("training");
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = scraper {
        let _ = s.join();
    }
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(7);
    println!("| model | metrics off (median) | metrics on (median) | on / off |");
    println!("| --- | --- | --- | --- |");
    for algorithm in [
        Algorithm::Linear,
        Algorithm::Tree,
        Algorithm::Forest,
        Algorithm::Boost,
    ] {
        run(algorithm, false); // warm-up
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            off.push(run(algorithm, false));
            on.push(run(algorithm, true));
        }
        let (off, on) = (median(off), median(on));
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.3} |",
            algorithm.as_str(),
            off.as_secs_f64() * 1e3,
            on.as_secs_f64() * 1e3,
            on.as_secs_f64() / off.as_secs_f64()
        );
    }
}
