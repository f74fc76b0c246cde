//! Periodic sampling of process, host and GPU resources into gauges.
//!
//! Both binaries run one [`ResourceSampler`]; the trainer exports its gauges
//! with the `training_` prefix, the service with `app_` (the brief's names).
//! sysinfo computes CPU usage as a difference between two refreshes, so the
//! sampler refreshes once at start and the first recorded value is already a
//! real one. GPUs are read through NVML: without an NVIDIA driver the sampler
//! logs that once and records no GPU series at all.

use std::time::Duration;

use opentelemetry::metrics::{Gauge, Meter};
use opentelemetry::KeyValue;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Which binary is sampling: decides the metric prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Training,
    App,
}

impl Role {
    fn prefix(self) -> &'static str {
        match self {
            Role::Training => "training",
            Role::App => "app",
        }
    }
}

struct Gauges {
    cpu_percent: Gauge<f64>,
    memory_bytes: Gauge<f64>,
    system_used_bytes: Gauge<f64>,
    system_total_bytes: Gauge<f64>,
    gpu_utilization_percent: Gauge<f64>,
    gpu_memory_used_bytes: Gauge<f64>,
    gpu_memory_total_bytes: Gauge<f64>,
    gpu_temperature_celsius: Gauge<f64>,
    gpu_power_watts: Gauge<f64>,
}

impl Gauges {
    fn new(meter: &Meter, role: Role) -> Self {
        let p = role.prefix();
        let gauge = |name: String, unit: &'static str, description: &'static str| {
            meter
                .f64_gauge(name)
                .with_unit(unit)
                .with_description(description)
                .build()
        };
        Self {
            cpu_percent: gauge(
                format!("{p}_cpu_usage_percent"),
                "%",
                "Process CPU usage in percent of one core",
            ),
            memory_bytes: gauge(
                format!("{p}_memory_usage_bytes"),
                "By",
                "Process resident set size",
            ),
            system_used_bytes: gauge(
                "system_memory_used_bytes".into(),
                "By",
                "Host memory in use",
            ),
            system_total_bytes: gauge(
                "system_memory_total_bytes".into(),
                "By",
                "Host memory installed",
            ),
            gpu_utilization_percent: gauge(
                format!("{p}_gpu_utilization_percent"),
                "%",
                "GPU utilization",
            ),
            gpu_memory_used_bytes: gauge(
                format!("{p}_gpu_memory_used_bytes"),
                "By",
                "GPU memory in use",
            ),
            gpu_memory_total_bytes: gauge(
                format!("{p}_gpu_memory_total_bytes"),
                "By",
                "GPU memory installed",
            ),
            gpu_temperature_celsius: gauge(
                format!("{p}_gpu_temperature_celsius"),
                "Cel",
                "GPU temperature",
            ),
            gpu_power_watts: gauge(format!("{p}_gpu_power_watts"), "W", "GPU power draw"),
        }
    }
}

/// One reading of one GPU.
#[derive(Debug, Clone, PartialEq)]
struct GpuReading {
    pub index: u32,
    utilization_percent: f64,
    memory_used_bytes: f64,
    memory_total_bytes: f64,
    temperature_celsius: f64,
    power_watts: f64,
}

/// NVML when a driver is present; `None` otherwise, decided once.
struct Gpus {
    nvml: Option<nvml_wrapper::Nvml>,
    warned: bool,
}

impl Gpus {
    fn open() -> Self {
        match nvml_wrapper::Nvml::init() {
            Ok(nvml) => Self {
                nvml: Some(nvml),
                warned: false,
            },
            Err(e) => {
                tracing::info!(
                    "no NVIDIA GPU metrics: NVML unavailable ({e}); GPU series are not exported"
                );
                Self {
                    nvml: None,
                    warned: true,
                }
            }
        }
    }

    fn read(&mut self) -> Vec<GpuReading> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let mut first_error = None;
        let count = match nvml.device_count() {
            Ok(n) => n,
            Err(e) => {
                Self::warn_once(&mut self.warned, &e);
                return Vec::new();
            }
        };
        let mut readings = Vec::with_capacity(count as usize);
        for index in 0..count {
            let reading = nvml.device_by_index(index).and_then(|device| {
                let utilization = device.utilization_rates()?;
                let memory = device.memory_info()?;
                let temperature = device
                    .temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu)?;
                // Some boards do not report power; a missing power reading
                // should not hide the other four.
                let power_mw = device.power_usage().unwrap_or(0);
                Ok(GpuReading {
                    index,
                    utilization_percent: f64::from(utilization.gpu),
                    memory_used_bytes: memory.used as f64,
                    memory_total_bytes: memory.total as f64,
                    temperature_celsius: f64::from(temperature),
                    power_watts: f64::from(power_mw) / 1000.0,
                })
            });
            match reading {
                Ok(r) => readings.push(r),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        if let Some(e) = first_error {
            Self::warn_once(&mut self.warned, &e);
        }
        readings
    }

    fn warn_once(warned: &mut bool, error: &nvml_wrapper::error::NvmlError) {
        if !*warned {
            tracing::warn!("reading GPU metrics failed: {error}; further failures are not logged");
            *warned = true;
        }
    }
}

/// Samples resources on an interval and records them into gauges.
pub struct ResourceSampler {
    gauges: Gauges,
    system: System,
    pid: Option<Pid>,
    gpus: Gpus,
}

impl ResourceSampler {
    pub fn new(meter: &Meter, role: Role) -> Self {
        let pid = sysinfo::get_current_pid().ok();
        let mut sampler = Self {
            gauges: Gauges::new(meter, role),
            system: System::new(),
            pid,
            gpus: Gpus::open(),
        };
        // Prime the CPU counters so the first recorded sample is a real delta.
        sampler.refresh();
        sampler
    }

    fn refresh(&mut self) {
        if let Some(pid) = self.pid {
            self.system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_cpu().with_memory(),
            );
        }
        self.system.refresh_memory();
    }

    /// Takes one sample and records it.
    pub fn sample(&mut self) {
        self.refresh();
        if let Some(process) = self.pid.and_then(|pid| self.system.process(pid)) {
            self.gauges
                .cpu_percent
                .record(f64::from(process.cpu_usage()), &[]);
            self.gauges
                .memory_bytes
                .record(process.memory() as f64, &[]);
        }
        self.gauges
            .system_used_bytes
            .record(self.system.used_memory() as f64, &[]);
        self.gauges
            .system_total_bytes
            .record(self.system.total_memory() as f64, &[]);
        for gpu in self.gpus.read() {
            let labels = [KeyValue::new("gpu", i64::from(gpu.index).to_string())];
            self.gauges
                .gpu_utilization_percent
                .record(gpu.utilization_percent, &labels);
            self.gauges
                .gpu_memory_used_bytes
                .record(gpu.memory_used_bytes, &labels);
            self.gauges
                .gpu_memory_total_bytes
                .record(gpu.memory_total_bytes, &labels);
            self.gauges
                .gpu_temperature_celsius
                .record(gpu.temperature_celsius, &labels);
            self.gauges.gpu_power_watts.record(gpu.power_watts, &labels);
        }
    }

    /// Runs the sampler on the current tokio runtime until the handle is
    /// aborted. The first sample is taken after a short delay so that the CPU
    /// reading covers real work rather than a zero-length interval.
    pub fn spawn(mut self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let first = interval.min(Duration::from_millis(250));
        tokio::spawn(async move {
            tokio::time::sleep(first).await;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                // NVML calls block for milliseconds; keep them off the
                // request-serving worker threads.
                self = match tokio::task::spawn_blocking(move || {
                    self.sample();
                    self
                })
                .await
                {
                    Ok(sampler) => sampler,
                    Err(e) => {
                        tracing::error!("resource sampler stopped: {e}");
                        return;
                    }
                };
            }
        })
    }
}
