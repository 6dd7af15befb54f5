//! The `linux` object: namespaces, id maps, devices, cgroup resources, seccomp, masks; and the
//! fields refused for now.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{Hooks, Linux, LinuxDeviceCgroup, LinuxDeviceType, LinuxNamespaceType};

use super::BundleError;
use crate::{ClockOffsets, IdMap, IoLimit, Mount, Namespaces, SandboxBuilder, SyscallFilter};

/// The namespaces the container gets, new or joined by path (the builder is told which to
/// join; the set returned has both).
pub(super) fn namespaces(linux: &Linux, b: &mut SandboxBuilder) -> Result<Namespaces, BundleError> {
    let mut ns = Namespaces::empty();
    let mut joined = Namespaces::empty();
    for (i, n) in linux.namespaces().iter().flatten().enumerate() {
        let flag = match n.typ() {
            LinuxNamespaceType::Pid => Namespaces::PID,
            LinuxNamespaceType::Network => Namespaces::NET,
            LinuxNamespaceType::Mount => Namespaces::MOUNT,
            LinuxNamespaceType::Ipc => Namespaces::IPC,
            LinuxNamespaceType::Uts => Namespaces::UTS,
            LinuxNamespaceType::User => Namespaces::USER,
            LinuxNamespaceType::Cgroup => Namespaces::CGROUP,
            LinuxNamespaceType::Time => Namespaces::TIME,
        };
        if ns.contains(flag) {
            return Err(BundleError::invalid(
                format!("linux.namespaces[{i}].type"),
                n.typ().to_string(),
                "listed twice",
            ));
        }
        ns |= flag;
        let Some(path) = n.path() else { continue };
        let field = format!("linux.namespaces[{i}].path");
        let joinable =
            Namespaces::NET | Namespaces::IPC | Namespaces::UTS | Namespaces::CGROUP | Namespaces::PID;
        if !joinable.contains(flag) {
            return Err(BundleError::unsupported(
                field,
                path,
                format!(
                    "joining an existing {} namespace is not supported (network, ipc, uts, cgroup and pid \
                     namespaces can be joined); leave out the path for a new one",
                    n.typ()
                ),
            ));
        }
        if !path.is_absolute() {
            return Err(BundleError::invalid(field, path, "must be an absolute path"));
        }
        joined |= flag;
        b.join_namespace(flag, path);
    }
    if ns.contains(Namespaces::USER) && !joined.is_empty() {
        return Err(BundleError::unsupported(
            "linux.namespaces",
            joined.names().collect::<Vec<_>>(),
            "namespaces joined by path with a new user namespace: the new user namespace would hold \
             no privilege over them",
        ));
    }
    Ok(ns)
}

/// `uidMappings` and `gidMappings`: they need a user namespace.
pub(super) fn id_maps(linux: &Linux, ns: Namespaces, b: &mut SandboxBuilder) -> Result<(), BundleError> {
    for (field, maps) in
        [("linux.uidMappings", linux.uid_mappings()), ("linux.gidMappings", linux.gid_mappings())]
    {
        let Some(maps) = maps.as_deref().filter(|m| !m.is_empty()) else { continue };
        if !ns.contains(Namespaces::USER) {
            return Err(BundleError::invalid(field, maps.len(), "id mappings need a user namespace"));
        }
        let maps =
            maps.iter().map(|m| IdMap { inside: m.container_id(), outside: m.host_id(), count: m.size() });
        if field == "linux.uidMappings" {
            b.uid_map(maps);
        } else {
            b.gid_map(maps);
        }
    }
    Ok(())
}

/// `timeOffsets`: the monotonic and boot-time clocks of a time namespace.
pub(super) fn time_offsets(linux: &Linux, ns: Namespaces, b: &mut SandboxBuilder) -> Result<(), BundleError> {
    let Some(offsets) = linux.time_offsets().as_ref().filter(|o| !o.is_empty()) else { return Ok(()) };
    if !ns.contains(Namespaces::TIME) {
        return Err(BundleError::invalid(
            "linux.timeOffsets",
            offsets.len(),
            "clock offsets need a time namespace",
        ));
    }
    let mut clocks = ClockOffsets::new();
    for (clock, offset) in offsets {
        let field = format!("linux.timeOffsets.{clock}");
        let (secs, nanos) = (offset.secs().unwrap_or(0), offset.nanosecs().unwrap_or(0));
        let secs = u64::try_from(secs).map_err(|_| {
            BundleError::unsupported(&field, secs, "stockade sets clocks ahead only (a negative offset)")
        })?;
        if nanos >= 1_000_000_000 {
            return Err(BundleError::invalid(&field, nanos, "nanoseconds must be below 1000000000"));
        }
        let offset = Duration::new(secs, nanos);
        clocks = match clock.as_str() {
            "monotonic" => clocks.monotonic(offset),
            "boottime" => clocks.boottime(offset),
            _ => return Err(BundleError::invalid(field, clock, "the clocks are monotonic and boottime")),
        };
    }
    b.clock_offsets(clocks);
    Ok(())
}

/// The `linux` fields refused for now.
pub(super) fn unsupported(linux: &Linux) -> Result<(), BundleError> {
    if let Some(p) = linux.rootfs_propagation().as_deref().filter(|p| !matches!(*p, "private" | "rprivate")) {
        return Err(BundleError::unsupported(
            "linux.rootfsPropagation",
            p,
            "mounts in a stockade container are private: nothing propagates to or from the host",
        ));
    }
    let present = [
        ("linux.mountLabel", linux.mount_label().as_deref().is_some_and(|l| !l.is_empty())),
        ("linux.intelRdt", linux.intel_rdt().is_some()),
        ("linux.memoryPolicy", linux.memory_policy().is_some()),
        ("linux.personality", linux.personality().is_some()),
        ("linux.netDevices", linux.net_devices().as_ref().is_some_and(|d| !d.is_empty())),
    ];
    if let Some((field, _)) = present.iter().find(|(_, p)| *p) {
        return Err(BundleError::unsupported(*field, "present", "not implemented"));
    }
    Ok(())
}

/// `hooks`: refused unless empty.
pub(super) fn hooks(hooks: &Hooks) -> Result<(), BundleError> {
    #[allow(deprecated)]
    let lists = [
        ("hooks.prestart", hooks.prestart()),
        ("hooks.createRuntime", hooks.create_runtime()),
        ("hooks.createContainer", hooks.create_container()),
        ("hooks.startContainer", hooks.start_container()),
        ("hooks.poststart", hooks.poststart()),
        ("hooks.poststop", hooks.poststop()),
    ];
    for (field, list) in lists {
        if let Some(first) = list.as_ref().and_then(|l| l.first()) {
            return Err(BundleError::unsupported(field, first.path(), "hooks are not run yet"));
        }
    }
    Ok(())
}

/// A device node the container gets: the host's node at the same path.
pub(super) struct Device {
    pub(super) path: PathBuf,
    pub(super) major: i64,
    pub(super) minor: i64,
    /// An OCI default device, which runc allows whatever the device rules say.
    pub(super) default: bool,
}

/// The devices the container gets: with a `/dev` of its own, the OCI default devices (unless
/// `linux.devices` names the path); and each of `linux.devices`, bound from the host's node of
/// the same path, type and number.
pub(super) fn devices(linux: &Linux, dev_mounted: bool) -> Result<Vec<Device>, BundleError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let mut out = Vec::new();
    let listed = linux.devices().as_deref().unwrap_or_default();
    for (i, d) in listed.iter().enumerate() {
        let field = format!("linux.devices[{i}]");
        if d.typ() != LinuxDeviceType::C {
            return Err(BundleError::unsupported(
                format!("{field}.type"),
                d.typ().as_str(),
                "stockade binds character devices only",
            ));
        }
        let path = d.path();
        if !path.is_absolute() || !path.starts_with("/dev") {
            return Err(BundleError::invalid(
                format!("{field}.path"),
                path,
                "must be an absolute path under /dev",
            ));
        }
        let meta = std::fs::symlink_metadata(path).map_err(|e| {
            BundleError::unsupported(
                format!("{field}.path"),
                path,
                format!("stockade binds the host's node of the same path, and it cannot be read: {e}"),
            )
        })?;
        let (major, minor) = (libc::major(meta.rdev()) as i64, libc::minor(meta.rdev()) as i64);
        if !meta.file_type().is_char_device() || (major, minor) != (d.major(), d.minor()) {
            return Err(BundleError::unsupported(
                field,
                format!("c {}:{} at {}", d.major(), d.minor(), path.display()),
                format!(
                    "stockade binds the host's node of the same path, and the host has {} there",
                    if meta.file_type().is_char_device() {
                        format!("c {major}:{minor}")
                    } else {
                        "no character device".into()
                    }
                ),
            ));
        }
        let differs = [
            ("fileMode", d.file_mode().is_some_and(|m| m & 0o7777 != meta.permissions().mode() & 0o7777)),
            ("uid", d.uid().is_some_and(|u| u != meta.uid())),
            ("gid", d.gid().is_some_and(|g| g != meta.gid())),
        ];
        if let Some((name, _)) = differs.iter().find(|(_, differs)| *differs) {
            return Err(BundleError::unsupported(
                format!("{field}.{name}"),
                path,
                "the node is the host's, bound: its mode and owner are the host node's",
            ));
        }
        out.push(Device { path: path.clone(), major, minor, default: false });
    }
    if dev_mounted {
        for (name, major, minor) in crate::fs::DEFAULT_DEVICES {
            let path = Path::new("/dev").join(name);
            if !out.iter().any(|d| d.path == path) {
                out.push(Device { path, major: major.into(), minor: minor.into(), default: true });
            }
        }
    }
    Ok(out)
}

/// `linux.resources.devices`: the device cgroup rules, an allowlist read as runc reads it (the
/// last rule matching a device decides each access; with none, access is denied). Every node of
/// `linux.devices` must be allowed reading and writing (the default devices are, whatever the
/// rules say, as runc adds them to the rules): other devices cannot be reached (no mount is
/// `dev`), so the rules hold as runc's device cgroup would hold them.
pub(super) fn check_device_rules(rules: &[LinuxDeviceCgroup], devices: &[Device]) -> Result<(), BundleError> {
    for (i, r) in rules.iter().enumerate() {
        let access = r.access().as_deref().unwrap_or("rwm");
        if access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(BundleError::invalid(
                format!("linux.resources.devices[{i}].access"),
                access,
                "a combination of r, w and m",
            ));
        }
    }
    for d in devices.iter().filter(|d| !d.default) {
        for access in ['r', 'w'] {
            // An allowlist (runc starts from deny and adds only the default devices).
            let mut allowed = false;
            for r in rules {
                let typ_matches = matches!(r.typ(), None | Some(LinuxDeviceType::A | LinuxDeviceType::C));
                let matches = typ_matches
                    && r.major().is_none_or(|m| m == d.major)
                    && r.minor().is_none_or(|m| m == d.minor)
                    && r.access().as_deref().unwrap_or("rwm").contains(access);
                if matches {
                    allowed = r.allow();
                }
            }
            if !allowed {
                return Err(BundleError::unsupported(
                    "linux.resources.devices",
                    format!("c {}:{} {access}", d.major, d.minor),
                    format!(
                        "the rules deny {} which the container gets as a node (a default device or linux.devices); \
                         stockade enforces device rules by which nodes exist, and cannot take away part of one",
                        d.path.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `maskedPaths` and `readonlyPaths`, exactly.
pub(super) fn masks(linux: &Linux, b: &mut SandboxBuilder) {
    for p in linux.masked_paths().iter().flatten() {
        b.mount(Mount::mask(p));
    }
    for p in linux.readonly_paths().iter().flatten() {
        b.mount(Mount::read_only_path(p));
    }
}

/// `linux.resources` and `linux.cgroupsPath`.
pub(super) fn resources(linux: &Linux, b: &mut SandboxBuilder) -> Result<(), BundleError> {
    if let Some(path) = linux.cgroups_path() {
        let relative = path.strip_prefix("/").map_err(|_| {
            BundleError::unsupported(
                "linux.cgroupsPath",
                path,
                "a relative path (or a systemd slice:prefix:name) is not implemented yet; give an absolute one",
            )
        })?;
        b.cgroup_parent(relative);
    }
    let Some(r) = linux.resources() else { return Ok(()) };
    let refuse = |field: &str, value: &dyn std::fmt::Debug| {
        Err(BundleError::unsupported(format!("linux.resources.{field}"), value, "not implemented"))
    };
    if let Some(m) = r.memory() {
        // 0 and -1 are no limit, as runc reads them.
        if let Some(limit) = m.limit().filter(|l| *l > 0) {
            b.memory_limit(limit as u64);
        }
        if let Some(swap) = m.swap().filter(|s| *s > 0) {
            b.memory_swap_limit(swap as u64);
        }
        let others: [(&str, Option<String>); 7] = [
            // 0 is no reservation, the kernel's default (Docker's update sends it).
            ("memory.reservation", m.reservation().filter(|v| *v != 0).map(|v| v.to_string())),
            // Kernel memory limits (deprecated in the kernel and in runc): 0 is none.
            ("memory.kernel", m.kernel().filter(|v| *v != 0).map(|v| v.to_string())),
            ("memory.kernelTCP", m.kernel_tcp().filter(|v| *v != 0).map(|v| v.to_string())),
            ("memory.swappiness", m.swappiness().map(|v| v.to_string())),
            ("memory.disableOOMKiller", m.disable_oom_killer().filter(|d| *d).map(|v| v.to_string())),
            ("memory.useHierarchy", m.use_hierarchy().filter(|d| !*d).map(|v| v.to_string())),
            ("memory.checkBeforeUpdate", m.check_before_update().filter(|d| *d).map(|v| v.to_string())),
        ];
        if let Some((field, Some(value))) = others.into_iter().find(|(_, v)| v.is_some()) {
            return refuse(field, &value);
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(shares) = c.shares().filter(|s| *s > 0) {
            // Exactly these shares on v1; on v2 the same share of the default weight.
            b.cpu_shares(shares.clamp(2, 262_144));
        }
        if let Some(quota) = c.quota().filter(|q| *q > 0) {
            let period = c.period().filter(|p| *p > 0).unwrap_or(100_000);
            b.cpu_quota(Duration::from_micros(quota as u64), Duration::from_micros(period));
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            b.cpuset_cpus(cpus);
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            b.cpuset_mems(mems);
        }
        let others: [(&str, Option<String>); 4] = [
            ("cpu.realtimeRuntime", c.realtime_runtime().filter(|v| *v != 0).map(|v| v.to_string())),
            ("cpu.realtimePeriod", c.realtime_period().filter(|v| *v != 0).map(|v| v.to_string())),
            ("cpu.idle", c.idle().filter(|v| *v != 0).map(|v| v.to_string())),
            ("cpu.burst", c.burst().filter(|v| *v != 0).map(|v| v.to_string())),
        ];
        if let Some((field, Some(value))) = others.into_iter().find(|(_, v)| v.is_some()) {
            return refuse(field, &value);
        }
    }
    if let Some(limit) = r.pids().as_ref().map(|p| p.limit()).filter(|l| *l > 0) {
        b.pids_limit(limit as u64);
    }
    if let Some(io) = r.block_io() {
        if let Some(weight) = io.weight().filter(|w| *w > 0) {
            // The spec's blkio scale (10 to 1000, default 500) on stockade's (1 to 10000,
            // default 100; 5 blkio per unit on cgroup v1).
            b.io_weight((weight / 5).clamp(1, 10000));
        }
        if io.leaf_weight().is_some() {
            return refuse("blockIO.leafWeight", &io.leaf_weight());
        }
        if io.weight_device().as_ref().is_some_and(|w| !w.is_empty()) {
            return refuse("blockIO.weightDevice", &"present");
        }
        let mut limits: Vec<IoLimit> = Vec::new();
        let throttles = [
            (
                "blockIO.throttleReadBpsDevice",
                io.throttle_read_bps_device(),
                IoLimit::read_bps as fn(IoLimit, u64) -> IoLimit,
            ),
            ("blockIO.throttleWriteBpsDevice", io.throttle_write_bps_device(), IoLimit::write_bps),
            ("blockIO.throttleReadIOPSDevice", io.throttle_read_iops_device(), IoLimit::read_iops),
            ("blockIO.throttleWriteIOPSDevice", io.throttle_write_iops_device(), IoLimit::write_iops),
        ];
        for (field, list, set) in throttles {
            for (i, t) in list.iter().flatten().enumerate() {
                let (major, minor) = (u32::try_from(t.major()), u32::try_from(t.minor()));
                let (Ok(major), Ok(minor)) = (major, minor) else {
                    return Err(BundleError::invalid(
                        format!("linux.resources.{field}[{i}]"),
                        (t.major(), t.minor()),
                        "a device number",
                    ));
                };
                let at = limits.iter().position(|l| (l.major, l.minor) == (major, minor));
                let limit = at.map_or_else(|| IoLimit::new(major, minor), |at| limits.remove(at));
                limits.push(set(limit, t.rate()));
            }
        }
        for limit in limits {
            b.io_limit(limit);
        }
    }
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        return refuse("hugepageLimits", &"present");
    }
    if r.network().is_some() {
        return refuse("network", &"present");
    }
    if r.rdma().as_ref().is_some_and(|h| !h.is_empty()) {
        return refuse("rdma", &"present");
    }
    if let Some(unified) = r.unified().as_ref().filter(|u| !u.is_empty()) {
        return refuse("unified", &unified.keys().min());
    }
    Ok(())
}

/// `linux.seccomp`: the filter it describes; without one, none (as runc).
pub(super) fn seccomp(linux: &Linux, b: &mut SandboxBuilder) -> Result<(), BundleError> {
    let Some(seccomp) = linux.seccomp() else {
        b.no_syscall_filter();
        return Ok(());
    };
    if let Some(flag) = seccomp.flags().as_ref().and_then(|f| f.first()) {
        return Err(BundleError::unsupported(
            "linux.seccomp.flags",
            flag,
            "filter flags are not implemented",
        ));
    }
    if let Some(path) = seccomp.listener_path() {
        return Err(BundleError::unsupported(
            "linux.seccomp.listenerPath",
            path,
            "stockade does not hand seccomp notifications to an agent",
        ));
    }
    let filter = SyscallFilter::from_oci(seccomp).map_err(|e| match e {
        crate::Error::InvalidValue { what, value, reason } => {
            BundleError::invalid("linux.seccomp", format!("{what} {value}"), reason)
        }
        crate::Error::Unsupported { feature, reason, .. } => {
            BundleError::unsupported("linux.seccomp", feature, reason)
        }
        other => BundleError::Sandbox(other),
    })?;
    b.syscall_filter(filter);
    Ok(())
}
