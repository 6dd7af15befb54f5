//! `update` (a running container's cgroup limits, from runc's `--resources` JSON or its flags)
//! and `events` (its cgroup statistics, once or every interval, with OOM kills), in runc's
//! formats.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::state::{Status, Store};
use crate::{Failure, UpdateArgs};

/// `update`: the limits of `--resources` (a file, or `-` for stdin), then the flags over them.
pub fn update(store: &Store, args: &UpdateArgs) -> Result<(), Failure> {
    let mut resources = match args.resources.as_deref() {
        None => json!({}),
        Some(path) => {
            let mut text = String::new();
            let read = if path == "-" {
                std::io::stdin().read_to_string(&mut text)
            } else {
                std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
            };
            read.map_err(|e| Failure::io("read the resources", std::path::Path::new(path), e))?;
            serde_json::from_str(&text).map_err(|e| {
                Failure::Usage(format!("--resources {path}: not a LinuxResources JSON object: {e}"))
            })?
        }
    };
    let size = |flag: &str, value: &str| -> Result<Value, Failure> { Ok(json!(parse_size(flag, value)?)) };
    let number = |flag: &str, value: &str| -> Result<Value, Failure> {
        value
            .parse::<i64>()
            .map(|v| json!(v))
            .map_err(|_| Failure::Usage(format!("--{flag} {value:?}: not a number")))
    };
    let flags: [(&str, &Option<String>, &[&str], bool); 10] = [
        ("memory", &args.memory, &["memory", "limit"], true),
        ("memory-swap", &args.memory_swap, &["memory", "swap"], true),
        ("memory-reservation", &args.memory_reservation, &["memory", "reservation"], true),
        ("pids-limit", &args.pids_limit, &["pids", "limit"], false),
        ("cpu-quota", &args.cpu_quota, &["cpu", "quota"], false),
        ("cpu-period", &args.cpu_period, &["cpu", "period"], false),
        ("cpu-share", &args.cpu_share, &["cpu", "shares"], false),
        ("cpuset-cpus", &args.cpuset_cpus, &["cpu", "cpus"], false),
        ("cpuset-mems", &args.cpuset_mems, &["cpu", "mems"], false),
        ("blkio-weight", &args.blkio_weight, &["blockIO", "weight"], false),
    ];
    for (flag, value, at, is_size) in flags {
        let Some(value) = value else { continue };
        let v = match (is_size, flag) {
            (true, _) => size(flag, value)?,
            (false, "cpuset-cpus" | "cpuset-mems") => json!(value),
            _ => number(flag, value)?,
        };
        set(&mut resources, at, v)?;
    }
    for (flag, value) in [("cpu-rt-period", &args.cpu_rt_period), ("cpu-rt-runtime", &args.cpu_rt_runtime)] {
        if value.is_some() {
            return Err(Failure::Unsupported(format!("--{flag} (real-time CPU limits)")));
        }
    }
    for (field, at) in [
        ("memory.limit", ["memory", "limit"]),
        ("memory.swap", ["memory", "swap"]),
        ("pids.limit", ["pids", "limit"]),
        ("cpu.quota", ["cpu", "quota"]),
    ] {
        if resources[at[0]][at[1]].as_i64().is_some_and(|v| v < 0) {
            return Err(Failure::Unsupported(format!(
                "{field} {} (removing a limit of a running container)",
                resources[at[0]][at[1]]
            )));
        }
    }
    let positive = |v: &Value| v.as_i64().is_some_and(|v| v > 0);
    if positive(&resources["cpu"]["period"]) && !positive(&resources["cpu"]["quota"]) {
        return Err(Failure::Unsupported(
            "cpu.period without cpu.quota (give both: the quota is per period)".into(),
        ));
    }
    let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(resources)
        .map_err(|e| Failure::Usage(format!("the resources are not a LinuxResources object: {e}")))?;
    let limits = stockade::oci::resource_limits(&resources)?;

    let _lock = store.lock(&args.id)?;
    let saved = store.load(&args.id)?;
    if saved.status() == Status::Stopped {
        return Err(Failure::State(format!("cannot update container {:?}: it is stopped", args.id)));
    }
    saved.detached().update_limits(&limits)?;
    Ok(())
}

/// Sets `resources[at[0]][at[1]]`, refusing a `resources` (or a section of it) that is not a
/// JSON object.
fn set(resources: &mut Value, at: &[&str], v: Value) -> Result<(), Failure> {
    let not_object = |what: &str| Failure::Usage(format!("--resources: {what} is not a JSON object"));
    let section = resources
        .as_object_mut()
        .ok_or_else(|| not_object("the resources"))?
        .entry(at[0])
        .or_insert_with(|| json!({}));
    section.as_object_mut().ok_or_else(|| not_object(at[0]))?.insert(at[1].to_owned(), v);
    Ok(())
}

/// A size as runc's flags take it: bytes, or a number with a k, m, g or t suffix (powers of
/// 1024, an optional trailing "b"); -1 for unlimited.
fn parse_size(flag: &str, value: &str) -> Result<i64, Failure> {
    let bad =
        || Failure::Usage(format!("--{flag} {value:?}: not a size (bytes, or a number with k, m, g or t)"));
    let lower = value.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, unit) = match lower.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => lower.split_at(at),
        None => (lower, ""),
    };
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    if n < 0 {
        return if n == -1 && shift == 0 { Ok(-1) } else { Err(bad()) };
    }
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// `events`: with `stats`, one statistics event; otherwise one every `interval` and an `oom`
/// event for each new OOM kill, until the container stops.
pub fn events(store: &Store, id: &str, stats: bool, interval: &str) -> Result<(), Failure> {
    let interval = parse_duration(interval)?;
    let saved = store.load(id)?;
    if saved.status() == Status::Stopped {
        return Err(Failure::State(format!("container {id:?} is stopped")));
    }
    let detached = saved.detached();
    // A reader that went away ends the stream (no panic on a closed pipe).
    let print = |event: Value| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{event}")
            .and_then(|()| out.flush())
            .map_err(|e| Failure::io("write an event", Path::new("-"), e))
    };
    if stats {
        return print(stats_event(id, &detached.stats()));
    }
    let mut ooms = detached.stats().oom_kills.unwrap_or(0);
    while saved.status() != Status::Stopped {
        let now = detached.stats();
        for _ in ooms..now.oom_kills.unwrap_or(0) {
            print(json!({"type": "oom", "id": id}))?;
        }
        ooms = ooms.max(now.oom_kills.unwrap_or(0));
        print(stats_event(id, &now))?;
        std::thread::sleep(interval);
    }
    Ok(())
}

/// runc's statistics event (the fields stockade reads; absent counters are left out).
fn stats_event(id: &str, s: &stockade::CgroupStats) -> Value {
    let ns = |d: Option<Duration>| d.map(|d| d.as_nanos() as u64);
    let mut data = json!({
        "cpu": {"usage": {"total": ns(s.cpu_total), "kernel": ns(s.cpu_system), "user": ns(s.cpu_user)}},
        "memory": {"usage": {"usage": s.memory_current, "max": s.memory_peak, "limit": s.memory_limit}},
        "pids": {"current": s.pids_current, "limit": s.pids_limit},
    });
    if let Some(kills) = s.oom_kills {
        data["memory"]["oom_kill"] = json!(kills);
    }
    strip_nulls(&mut data);
    json!({"type": "stats", "id": id, "data": data})
}

fn strip_nulls(v: &mut Value) {
    if let Value::Object(map) = v {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

/// A duration as Go writes it: "5s", "500ms", "1m", "1m30s".
fn parse_duration(text: &str) -> Result<Duration, Failure> {
    let bad = || Failure::Usage(format!("--interval {text:?}: not a duration (e.g. 5s, 500ms, 1m)"));
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (n, tail) = rest.split_at(digits);
        let unit = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit);
        let n: f64 = n.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "ns" => n / 1e9,
            "us" | "µs" => n / 1e6,
            "ms" => n / 1e3,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(bad()),
        };
        total =
            total.checked_add(Duration::try_from_secs_f64(seconds).map_err(|_| bad())?).ok_or_else(bad)?;
        rest = tail;
    }
    if total.is_zero() {
        return Err(bad());
    }
    Ok(total)
}
