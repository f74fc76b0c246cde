//! Value formatting by Grafana unit id.
//!
//! A panel's `fieldConfig.defaults.unit` (`s`, `bytes`, `percent`,
//! `percentunit`, `reqps`, `short`, `none`, ...) decides how its numbers read
//! on axes, in stat values and in table cells. This module reproduces the
//! Grafana formats the dashboards use, so a report and a dashboard show the
//! same "1.5 GiB" or "250 ms"; an unknown unit id is printed as a suffix.

/// `value` in `unit`, with `decimals` fixed or (None) chosen from its size.
pub fn format(value: f64, unit: &str, decimals: Option<u32>) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    match unit {
        "" | "none" => number(value, decimals),
        "short" => scaled(value, 1000.0, &["", " K", " Mil", " Bil", " Tri"], decimals),
        "percent" => format!("{}%", number(value, decimals)),
        "percentunit" => format!("{}%", number(value * 100.0, decimals)),
        "s" => seconds(value, decimals),
        "ms" => seconds(value / 1e3, decimals),
        "µs" | "us" => seconds(value / 1e6, decimals),
        "ns" => seconds(value / 1e9, decimals),
        "bytes" => scaled(
            value,
            1024.0,
            &[" B", " KiB", " MiB", " GiB", " TiB", " PiB"],
            decimals,
        ),
        "decbytes" => scaled(
            value,
            1000.0,
            &[" B", " kB", " MB", " GB", " TB", " PB"],
            decimals,
        ),
        "reqps" => count(value, " req/s", decimals),
        "ops" => count(value, " ops/s", decimals),
        "rps" => count(value, " reads/s", decimals),
        "wps" => count(value, " writes/s", decimals),
        "celsius" => format!("{}°C", number(value, decimals)),
        "fahrenheit" => format!("{}°F", number(value, decimals)),
        "watt" => si(value, "W", decimals),
        "hertz" => si(value, "Hz", decimals),
        "volt" => si(value, "V", decimals),
        other => format!("{} {other}", number(value, decimals)),
    }
}

/// Decimals that keep about three significant digits, trailing zeros trimmed.
fn number(value: f64, decimals: Option<u32>) -> String {
    if let Some(d) = decimals {
        return format!("{value:.prec$}", prec = d as usize);
    }
    if value == 0.0 {
        return "0".into();
    }
    let magnitude = value.abs().log10().floor() as i32;
    let auto = (2 - magnitude).clamp(0, 6) as usize;
    let text = format!("{value:.auto$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    if text == "-0" {
        "0".into()
    } else {
        text
    }
}

/// Divides by `base` until the value is below it, then appends the suffix.
fn scaled(value: f64, base: f64, suffixes: &[&str], decimals: Option<u32>) -> String {
    let mut v = value;
    let mut i = 0;
    while v.abs() >= base && i + 1 < suffixes.len() {
        v /= base;
        i += 1;
    }
    format!("{}{}", number(v, decimals), suffixes[i])
}

/// A count per second: scaled like `short`, then the unit.
fn count(value: f64, suffix: &str, decimals: Option<u32>) -> String {
    format!(
        "{}{suffix}",
        scaled(value, 1000.0, &["", "K", "M", "B", "T"], decimals)
    )
}

/// SI prefixes around a base unit (mW, W, kW).
fn si(value: f64, base: &str, decimals: Option<u32>) -> String {
    let a = value.abs();
    let (v, prefix) = if a == 0.0 {
        (value, "")
    } else if a < 1e-3 {
        (value * 1e6, "µ")
    } else if a < 1.0 {
        (value * 1e3, "m")
    } else if a < 1e3 {
        (value, "")
    } else if a < 1e6 {
        (value / 1e3, "k")
    } else if a < 1e9 {
        (value / 1e6, "M")
    } else {
        (value / 1e9, "G")
    };
    format!("{} {prefix}{base}", number(v, decimals))
}

/// Grafana's `s`: ns, µs and ms below a second, then s, min, hour, day, week, year.
fn seconds(value: f64, decimals: Option<u32>) -> String {
    let a = value.abs();
    let (v, suffix) = if a == 0.0 {
        (value, "s")
    } else if a < 1e-6 {
        (value * 1e9, "ns")
    } else if a < 1e-3 {
        (value * 1e6, "µs")
    } else if a < 1.0 {
        (value * 1e3, "ms")
    } else if a < 60.0 {
        (value, "s")
    } else if a < 3600.0 {
        (value / 60.0, "min")
    } else if a < 86400.0 {
        (value / 3600.0, "hour")
    } else if a < 604800.0 {
        (value / 86400.0, "day")
    } else if a < 31_536_000.0 {
        (value / 604800.0, "week")
    } else {
        (value / 31_536_000.0, "year")
    };
    format!("{} {suffix}", number(v, decimals))
}

#[cfg(test)]
mod tests {
    use super::format;

    #[test]
    fn seconds_switch_to_milliseconds_below_one_second() {
        assert_eq!(format(0.25, "s", None), "250 ms");
        assert_eq!(format(0.0012, "s", None), "1.2 ms");
        assert_eq!(format(0.000_004_5, "s", None), "4.5 µs");
        assert_eq!(format(12.345, "s", None), "12.3 s");
        assert_eq!(format(900.0, "s", None), "15 min");
        assert_eq!(format(7200.0, "s", None), "2 hour");
        assert_eq!(format(0.0, "s", None), "0 s");
    }

    #[test]
    fn bytes_are_binary_multiples() {
        assert_eq!(format(1_610_612_736.0, "bytes", None), "1.5 GiB");
        assert_eq!(format(52_428_800.0, "bytes", None), "50 MiB");
        assert_eq!(format(512.0, "bytes", None), "512 B");
        assert_eq!(format(1500.0, "decbytes", None), "1.5 kB");
    }

    #[test]
    fn percent_and_percentunit() {
        assert_eq!(format(87.5, "percent", None), "87.5%");
        assert_eq!(format(0.153, "percentunit", None), "15.3%");
        assert_eq!(format(0.1, "percentunit", Some(1)), "10.0%");
        assert_eq!(format(1.0, "percentunit", None), "100%");
    }

    #[test]
    fn short_and_rates_scale_by_thousands() {
        assert_eq!(format(1234.0, "short", None), "1.23 K");
        assert_eq!(format(2_500_000.0, "short", None), "2.5 Mil");
        assert_eq!(format(42.0, "short", None), "42");
        assert_eq!(format(3.25, "reqps", None), "3.25 req/s");
        assert_eq!(format(1500.0, "reqps", None), "1.5K req/s");
        assert_eq!(format(2.0, "short", Some(0)), "2");
    }

    #[test]
    fn none_keeps_three_significant_digits() {
        assert_eq!(format(0.123_456, "none", None), "0.123");
        assert_eq!(format(1234.6, "none", None), "1235");
        assert_eq!(format(-0.5, "none", None), "-0.5");
        assert_eq!(format(0.0, "none", None), "0");
        assert_eq!(format(f64::NAN, "none", None), "NaN");
        assert_eq!(format(f64::INFINITY, "s", None), "+Inf");
    }

    #[test]
    fn physical_units_and_unknown_suffix() {
        assert_eq!(format(65.0, "celsius", None), "65°C");
        assert_eq!(format(250.0, "watt", None), "250 W");
        assert_eq!(format(0.5, "watt", None), "500 mW");
        assert_eq!(format(3.0, "widgets", None), "3 widgets");
    }
}
