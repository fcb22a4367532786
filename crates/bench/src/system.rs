//! What machine the run measured.

use crate::report::SystemInfo;

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn command(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The first `key : value` line of `/proc/cpuinfo`-style text.
pub fn cpuinfo_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// Physical cores from `/proc/cpuinfo`: distinct (physical id, core id) pairs.
pub fn physical_cores(text: &str) -> Option<usize> {
    let mut pairs = std::collections::BTreeSet::new();
    let mut phys = String::new();
    for l in text.lines() {
        if let Some((k, v)) = l.split_once(':') {
            match k.trim() {
                "physical id" => phys = v.trim().to_string(),
                "core id" => {
                    pairs.insert((phys.clone(), v.trim().to_string()));
                }
                _ => {}
            }
        }
    }
    (!pairs.is_empty()).then_some(pairs.len())
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn meminfo_total(text: &str) -> Option<u64> {
    let v = cpuinfo_field(text, "MemTotal")?;
    let kb: u64 = v.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

fn os_release() -> Option<String> {
    let text = read("/etc/os-release")?;
    text.lines().find_map(|l| {
        l.strip_prefix("PRETTY_NAME=")
            .map(|v| v.trim_matches('"').to_string())
    })
}

fn load_average() -> Option<[f64; 3]> {
    let text = read("/proc/loadavg").or_else(|| command("sysctl", &["-n", "vm.loadavg"]))?;
    let nums: Vec<f64> = text
        .split_whitespace()
        .filter_map(|t| t.trim_matches(|c| c == '{' || c == '}').parse().ok())
        .take(3)
        .collect();
    (nums.len() == 3).then(|| [nums[0], nums[1], nums[2]])
}

fn candle_features() -> Vec<String> {
    use candle_core::utils;
    let mut f = Vec::new();
    for (on, name) in [
        (utils::with_avx(), "avx"),
        (utils::with_f16c(), "f16c"),
        (utils::with_neon(), "neon"),
        (utils::with_simd128(), "simd128"),
        (utils::has_mkl(), "mkl"),
        (utils::has_accelerate(), "accelerate"),
    ] {
        if on {
            f.push(name.to_string());
        }
    }
    f
}

/// Collects system information (never fails: unknown fields are `None`).
pub fn collect() -> SystemInfo {
    let os = std::env::consts::OS.to_string();
    let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
    let (cpu_model, physical, memory, os_version, kernel) = if os == "macos" {
        (
            command("sysctl", &["-n", "machdep.cpu.brand_string"]),
            command("sysctl", &["-n", "hw.physicalcpu"]).and_then(|s| s.parse().ok()),
            command("sysctl", &["-n", "hw.memsize"]).and_then(|s| s.parse().ok()),
            command("sw_vers", &["-productVersion"]).map(|v| format!("macOS {v}")),
            command("uname", &["-r"]),
        )
    } else {
        (
            cpuinfo_field(&cpuinfo, "model name")
                .or_else(|| cpuinfo_field(&cpuinfo, "Model"))
                .or_else(|| cpuinfo_field(&cpuinfo, "Hardware")),
            physical_cores(&cpuinfo),
            read("/proc/meminfo").and_then(|t| meminfo_total(&t)),
            os_release(),
            read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()),
        )
    };
    SystemInfo {
        os,
        os_version,
        kernel,
        arch: std::env::consts::ARCH.to_string(),
        cpu_model,
        logical_cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        physical_cores: physical,
        memory_bytes: memory,
        load_average: load_average(),
        candle_version: env!("ANECTX_BENCH_CANDLE_VERSION").to_string(),
        candle_threads: candle_core::utils::get_num_threads(),
        candle_features: candle_features(),
        rustc_version: env!("ANECTX_BENCH_RUSTC_VERSION").to_string(),
        build_profile: if cfg!(debug_assertions) {
            "debug".into()
        } else {
            "release".into()
        },
        coreml_available: cfg!(target_vendor = "apple"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpu = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t: 0\n\n\
                   processor\t: 1\nmodel name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t: 0\n\n\
                   processor\t: 2\nphysical id\t: 0\ncore id\t: 1\n";
        assert_eq!(
            cpuinfo_field(cpu, "model name").as_deref(),
            Some("AMD EPYC 7B13")
        );
        assert_eq!(physical_cores(cpu), Some(2));
        assert_eq!(
            meminfo_total("MemTotal:       24000000 kB\nMemFree: 1 kB\n"),
            Some(24_000_000 * 1024)
        );
        assert_eq!(meminfo_total("nothing"), None);
    }
}
