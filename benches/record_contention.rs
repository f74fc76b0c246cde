//! What the per-request recording costs when every core records at once:
//! each recording path of a /predict request, called by one thread, then
//! by one thread per core at the same time, in nanoseconds per call
//! (median of several rounds; both in the same run). The ratio of the two
//! is the price of sharing: a cache line that two cores write moves
//! between them on every write, which instruction counts
//! (benches/serve_profile.sh) do not show.
//!
//!     cargo bench --bench record_contention
//!
//! Paths: the drift window (`DriftWindow::record`, one 10-feature row);
//! a row's eleven bin-total adds (ten features and the prediction, bins
//! ten apart) as relaxed adds to shared counters (before) and to this
//! thread's `ShardedCounts` (what `DriftWindow` does now); an
//! OpenTelemetry bound histogram record (the SDK guards each series with a
//! mutex), an OpenTelemetry bound counter add and a relaxed atomic add on
//! one shared counter.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use mlwatch::model::{BinReference, DriftReference, FeatureReference, Prediction};
use mlwatch::serve::drift::DriftWindow;
use mlwatch::serve::sharded::ShardedCounts;
use ndarray::Array2;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};

const ROUNDS: usize = 7;
/// Each thread's run lasts about this long, so that the threads of one
/// measurement overlap for nearly all of it (a thread starts tens of
/// microseconds after the one before).
const RUN: Duration = Duration::from_millis(200);

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Nanoseconds per call of `record`, `calls` times on each of `threads`
/// threads started together, the slowest thread's.
fn per_call(threads: usize, calls: u32, record: &(dyn Fn(u32) + Sync)) -> f64 {
    let start = Barrier::new(threads);
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    let begun = Instant::now();
                    for i in 0..calls {
                        record(i);
                    }
                    begun.elapsed().as_nanos() as f64 / f64::from(calls)
                })
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().unwrap_or(f64::NAN))
            .fold(0.0, f64::max)
    })
}

fn report(name: &str, cores: usize, record: &(dyn Fn(u32) + Sync)) {
    // Calls per run: RUN's worth at the one-thread speed.
    let trial = per_call(1, 100_000, record);
    let calls = (RUN.as_nanos() as f64 / trial).clamp(100_000.0, 1e9) as u32;
    let (mut alone, mut together) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        alone.push(per_call(1, calls, record));
        together.push(per_call(cores, calls, record));
    }
    let (alone, together) = (median(alone), median(together));
    println!(
        "| {name} | {alone:.1} | {together:.1} | {:.2} |",
        together / alone
    );
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let values: Vec<f64> = (0..1000).map(|i| f64::from(i) / 1000.0).collect();
    let features: Vec<FeatureReference> = (0..10)
        .filter_map(|i| FeatureReference::from_values(&format!("f{i}"), &values))
        .collect();
    let Some(prediction) = BinReference::deciles(&values) else {
        eprintln!("no reference bins");
        std::process::exit(1);
    };
    let window = DriftWindow::new(
        &DriftReference {
            features,
            prediction,
        },
        1000,
    );
    let rows = Array2::from_shape_fn((1, 10), |(_, c)| 0.05 + c as f64 * 0.09);
    let predicted = [Prediction::Value(0.42)];

    let provider = SdkMeterProvider::builder()
        .with_reader(ManualReader::builder().build())
        .build();
    let meter = provider.meter("bench");
    let histogram = meter.f64_histogram("duration").build();
    let bound_histogram = histogram.bind(&[opentelemetry::KeyValue::new("model_version", "v1")]);
    let counter = meter.u64_counter("requests").build();
    let bound_counter = counter.bind(&[opentelemetry::KeyValue::new("model_version", "v1")]);
    let shared = std::sync::atomic::AtomicU64::new(0);
    let bins = 110;
    let shared_totals: Vec<std::sync::atomic::AtomicU64> = (0..bins)
        .map(|_| std::sync::atomic::AtomicU64::new(0))
        .collect();
    let sharded_totals = ShardedCounts::new(bins);

    println!(
        "machine: {cores} threads recording together, {} ms of calls each, median of {ROUNDS}",
        RUN.as_millis()
    );
    println!();
    println!("| path | ns per call, one thread | ns per call, {cores} threads at once | ratio |");
    println!("| --- | --- | --- | --- |");
    report("DriftWindow::record, one 10-feature row", cores, &|_| {
        window.record(black_box(rows.view()), black_box(&predicted))
    });
    report("11 bin-total adds, shared counters (before)", cores, &|i| {
        for track in 0..11 {
            let index = black_box(track * 10 + (i as usize % 10));
            shared_totals[index % bins].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    report("11 bin-total adds, ShardedCounts (now)", cores, &|i| {
        let local = sharded_totals.local();
        for track in 0..11 {
            local.add(black_box(track * 10 + (i as usize % 10)) % bins, 1);
        }
    });
    report("OpenTelemetry bound histogram record", cores, &|i| {
        bound_histogram.record(black_box(f64::from(i % 100) * 1e-4))
    });
    report("OpenTelemetry bound counter add", cores, &|_| {
        bound_counter.add(black_box(1))
    });
    report("relaxed fetch_add on one shared AtomicU64", cores, &|_| {
        shared.fetch_add(black_box(1), std::sync::atomic::Ordering::Relaxed);
    });
}
