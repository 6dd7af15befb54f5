//! OCI bundles in (feature `oci`): a runtime spec's `config.json` and its bundle directory
//! become a [`Command`] in a [`Sandbox`], as an OCI runtime (runc) would run it.
//!
//! Every field of the spec either maps onto the sandbox or is refused with a
//! [`BundleError`] naming it; none is silently dropped. Properties the spec does not define
//! are ignored, as the spec requires, and so are `annotations` (opaque to runtimes).
//!
//! | field | maps to |
//! |---|---|
//! | `ociVersion` | must be 1.x |
//! | `root.path`, `root.readonly` | [`Root::dir`] / [`Root::dir_sealed`]; a relative path is the bundle's and may not leave it |
//! | `mounts` | `bind`/`rbind` (with `ro`, `nosuid`, `noexec`, `private`/`rprivate`), `tmpfs` (`size`, `mode`, `nr_inodes`), `proc`, `sysfs` (read-only), `mqueue`, `devpts` (`newinstance`, `gid`), `cgroup`/`cgroup2` ([`Mount::cgroup`](crate::Mount::cgroup)), `overlay` (`lowerdir=` top first, with `upperdir=` and `workdir=` writable, without them read-only: [`Mount::overlay_writable`](crate::Mount::overlay_writable), [`Mount::overlay`](crate::Mount::overlay)); in order, nothing else mounted (`no_default_mounts`) |
//! | `process.args`, `env`, `cwd` | the command, its environment exactly (no `PATH` added), its working directory (created when missing, as runc does) |
//! | `process.user` | `uid`, `gid`, `additionalGids`, `umask` (default `0022`) |
//! | `process.capabilities` | the five sets ([`CapabilitySets`](crate::CapabilitySets)); absent: none; ambient ones not both permitted and inheritable left out, as runc does |
//! | `process.rlimits`, `noNewPrivileges`, `oomScoreAdj`, `terminal`, `consoleSize` | as named; `noNewPrivileges` absent or false allows new privileges |
//! | `hostname`, `domainname` | need a uts namespace |
//! | `linux.sysctl` | [`sysctl`](crate::SandboxBuilder::sysctl): namespaced parameters only (`net.*`, IPC's, `fs.mqueue.*`, `kernel.hostname`/`domainname`), as runc |
//! | `linux.namespaces` | new ones; `path` joins an existing network, ipc, uts, cgroup or pid namespace ([`join_namespace`](crate::SandboxBuilder::join_namespace)), as CNI and a Kubernetes pod give them |
//! | `uidMappings`, `gidMappings`, `timeOffsets` | as named |
//! | `linux.resources` | `memory.limit`/`swap` (0 and -1 are none, as runc reads them), `cpu.shares` ([`cpu_shares`](crate::SandboxBuilder::cpu_shares): exact on v1, the same share of the default weight on v2; 0 is none), `quota`/`period`, `cpus`/`mems`, `pids.limit`, `blockIO.weight` and throttles, `devices` (see below) |
//! | `linux.cgroupsPath` | absolute: the parent of the sandbox's cgroup ([`cgroup_parent`](crate::SandboxBuilder::cgroup_parent)) |
//! | `linux.seccomp` | [`SyscallFilter::from_oci`](crate::SyscallFilter::from_oci); absent: no filter |
//! | `linux.maskedPaths`, `readonlyPaths` | exactly these (stockade's own defaults off) |
//! | `linux.devices` | character devices bound from the host's node of the same path and number |
//!
//! Devices: every mount stockade makes is `nodev` (its root too) except the device nodes it
//! binds (the OCI default devices `/dev/null`, `zero`, `full`, `random`, `urandom`, `tty`,
//! and `linux.devices`), so a node the payload creates with `mknod`, or one an image brought,
//! cannot be opened; `linux.resources.devices` is then checked to allow every node bound
//! (runc enforces the same rules with the device cgroup).
//!
//! Refused for now, each with [`BundleError::Unsupported`]: joining an existing user, mount or
//! time namespace, or any with a new user namespace; `hooks` (the runtime binary runs
//! `prestart`, `createRuntime`, `startContainer`, `poststart` and `poststop` itself and refuses
//! `createContainer`; see `docs/runtime.md`), overlay options other than the layers, mount id
//! mappings, shared or slave propagation, AppArmor and SELinux
//! labels, `process.scheduler`, `ioPriority`, `execCPUAffinity`, memory reservations and
//! kernel limits (other than 0), real-time CPU, hugepage, network, RDMA and `unified` cgroup settings,
//! `intelRdt`, `personality`, `memoryPolicy`, `netDevices`, and block or FIFO devices.
//!
//! Differences from runc that remain: the payload is pid 2 under stockade's init (pid 1),
//! which reaps and forwards signals; atime mount options (`strictatime`, `noatime`, ...) are
//! accepted and not applied (mounts keep the kernel's `relatime`); with `cgroupsPath` the
//! sandbox's cgroup is a child of that path; a `cgroup` mount gives the container a cgroup
//! namespace when the spec has none (runc binds the container's own groups instead: either
//! way it sees only those), and its root is the sandbox's leaf, without the limits' files;
//! masked files read as unreadable rather than empty (stockade's `/dev/null` bind is `nodev`);
//! and without a `tmpfs` at `/dev` no default devices are added to the root's own `/dev`.
//!
//! ```no_run
//! # fn main() -> Result<(), stockade::oci::BundleError> {
//! let bundle = stockade::oci::Bundle::open("/srv/bundles/web")?;
//! let status = bundle.command()?.status()?;
//! # Ok(()) }
//! ```

mod error;
mod linux;
mod mounts;
mod process;

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

pub use error::BundleError;

/// The cgroup limits of an OCI `LinuxResources` object — what `runc update --resources` reads —
/// as a builder for [`Detached::update_limits`](crate::Detached::update_limits). Fields that
/// stockade does not carry out are a typed error naming them (as `linux.resources.*`), and so
/// are device rules, which cannot change after a container is created.
pub fn resource_limits(
    resources: &oci_spec::runtime::LinuxResources,
) -> Result<crate::SandboxBuilder, BundleError> {
    if resources.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(BundleError::unsupported(
            "linux.resources.devices",
            "present",
            "device rules are fixed when the container is created (stockade enforces them by which nodes exist)",
        ));
    }
    let mut linux = oci_spec::runtime::Linux::default();
    linux.set_cgroups_path(None);
    linux.set_resources(Some(resources.clone()));
    let mut b = Sandbox::builder();
    linux::resources(&linux, &mut b)?;
    Ok(b)
}

use crate::{Command, Namespaces, Root, Sandbox};

/// An OCI bundle: a directory with a `config.json` and (usually) the root filesystem it names.
#[derive(Clone, Debug)]
pub struct Bundle {
    dir: PathBuf,
    spec: Spec,
    outlive_parent: bool,
}

impl Bundle {
    /// Reads `dir/config.json`. `dir` is resolved (symlinks followed) now: the bundle is the
    /// caller's.
    ///
    /// # Errors
    /// [`BundleError::Read`] when the directory or file cannot be read, [`BundleError::Json`]
    /// or [`BundleError::Invalid`] when it is not a runtime spec.
    pub fn open(dir: impl AsRef<Path>) -> Result<Bundle, BundleError> {
        let dir = dir.as_ref();
        let dir = std::fs::canonicalize(dir)
            .map_err(|source| BundleError::Read { path: dir.to_owned(), source })?;
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|source| BundleError::Read { path: path.clone(), source })?;
        let spec = parse(&path, &text)?;
        Ok(Bundle { dir, spec, outlive_parent: false })
    }

    /// A bundle from a spec already in memory; `dir` is where relative paths in it (the root,
    /// bind sources) are resolved.
    pub fn from_spec(dir: impl Into<PathBuf>, spec: Spec) -> Bundle {
        Bundle { dir: dir.into(), spec, outlive_parent: false }
    }

    /// The container outlives the process that spawns it, as a runtime's `create` leaves it
    /// ([`SandboxBuilder::outlive_parent`](crate::SandboxBuilder::outlive_parent)).
    pub fn outlive_parent(&mut self) -> &mut Self {
        self.outlive_parent = true;
        self
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The runtime spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The sandbox the spec describes, and in it the command of `process`, ready to spawn
    /// (stdio as [`Command`]'s defaults; the caller may change them, and everything else
    /// `Command` allows).
    ///
    /// # Errors
    /// A field refused ([`BundleError::Invalid`], [`BundleError::Unsupported`]) or a sandbox
    /// the host cannot give ([`BundleError::Sandbox`]). Nothing has been created then.
    pub fn command(&self) -> Result<Command, BundleError> {
        let spec = &self.spec;
        version(spec.version())?;
        for (field, present) in [
            ("solaris", spec.solaris().is_some()),
            ("windows", spec.windows().is_some()),
            ("vm", spec.vm().is_some()),
            ("zos", spec.zos().is_some()),
        ] {
            if present {
                return Err(BundleError::unsupported(
                    field,
                    "present",
                    "stockade runs Linux containers only",
                ));
            }
        }
        if let Some(hooks) = spec.hooks() {
            linux::hooks(hooks)?;
        }
        let linux = spec.linux().as_ref().ok_or_else(|| {
            BundleError::invalid("linux", "absent", "a Linux container needs the linux object")
        })?;
        let process = spec.process().as_ref().ok_or_else(|| {
            BundleError::invalid("process", "absent", "the container needs a process to run")
        })?;

        let mut b = Sandbox::builder();
        if self.outlive_parent {
            b.outlive_parent();
        }
        let namespaces = linux::namespaces(linux, &mut b)?;
        b.namespaces(namespaces).no_default_mounts().unmask_proc_and_sys();
        linux::id_maps(linux, namespaces, &mut b)?;
        linux::time_offsets(linux, namespaces, &mut b)?;
        linux::unsupported(linux)?;
        let mut sysctls: Vec<_> = linux.sysctl().iter().flatten().collect();
        sysctls.sort();
        for (key, value) in sysctls {
            b.sysctl(key, value);
        }

        let root = spec.root().as_ref().ok_or_else(|| {
            BundleError::invalid("root", "absent", "a Linux container needs its root filesystem")
        })?;
        if !namespaces.contains(Namespaces::MOUNT) {
            return Err(BundleError::invalid(
                "linux.namespaces",
                "no mount namespace",
                "the root filesystem is set up in a mount namespace of the container's own: add {\"type\": \"mount\"}",
            ));
        }
        let root_path = root_dir(&self.dir, root.path())?;
        b.root(if root.readonly() == Some(true) {
            Root::dir_sealed(&root_path)
        } else {
            Root::dir(&root_path)
        });

        for (field, name) in [("hostname", spec.hostname()), ("domainname", spec.domainname())] {
            let Some(name) = name.as_deref().filter(|n| !n.is_empty()) else { continue };
            if !namespaces.contains(Namespaces::UTS) {
                return Err(BundleError::invalid(
                    field,
                    name,
                    "needs a uts namespace of the container's own",
                ));
            }
            if field == "hostname" {
                b.hostname(name);
            } else {
                b.domainname(name);
            }
        }

        let devpts = mounts::mounts(
            spec.mounts().as_deref().unwrap_or_default(),
            &self.dir,
            &root_path,
            namespaces,
            &mut b,
        )?;
        if devpts.cgroup && !namespaces.contains(Namespaces::CGROUP) {
            // The container sees its own cgroups only (see the module docs).
            b.namespaces(namespaces | Namespaces::CGROUP);
        }
        let devices = linux::devices(linux, devpts.dev_mounted)?;
        let rules = linux.resources().as_ref().and_then(|r| r.devices().as_deref()).unwrap_or_default();
        linux::check_device_rules(rules, &devices)?;
        // Device rules hold by which nodes exist, and every mount being nodev. Without a user
        // namespace, CAP_SYS_ADMIN could mount a file system that is not (devtmpfs, a tmpfs
        // to mknod in): the rules would not hold.
        let bounding = process.capabilities().as_ref().and_then(|c| c.bounding().as_ref());
        let admin = bounding.is_some_and(|b| b.contains(&oci_spec::runtime::Capability::SysAdmin));
        if admin && !namespaces.contains(Namespaces::USER) && rules.iter().any(|r| !r.allow()) {
            return Err(BundleError::unsupported(
                "process.capabilities.bounding",
                "CAP_SYS_ADMIN",
                "with CAP_SYS_ADMIN and no user namespace the payload could mount a file system where \
                 device nodes work, and stockade enforces linux.resources.devices by which nodes exist \
                 (no device cgroup): add a user namespace or drop CAP_SYS_ADMIN",
            ));
        }
        for device in &devices {
            b.mount(crate::Mount::device(&device.path, &device.path));
        }
        if devpts.dev_mounted {
            mounts::dev_links(devpts.pts, &mut b);
        }
        if root.readonly() == Some(true) {
            // The working directory is made (when missing) before the root turns read-only,
            // as runc makes it.
            let cwd = process.cwd();
            let mounted = spec.mounts().iter().flatten().any(|m| m.destination() == cwd);
            if cwd.is_absolute() && cwd != Path::new("/") && !mounted {
                b.mount(crate::Mount::dir(cwd));
            }
        }
        linux::masks(linux, &mut b);
        linux::resources(linux, &mut b)?;
        linux::seccomp(linux, &mut b)?;
        process::credentials(process, namespaces, &mut b)?;
        let home = process::home(process, &b)?;

        let sandbox = b.build()?;
        process::command(process, &sandbox, home.as_deref())
    }
}

/// The spec in `text` (from `path`). Namespace types are checked first, so that an unknown
/// one is named by its field rather than by its line.
fn parse(path: &Path, text: &str) -> Result<Spec, BundleError> {
    let json = |e: serde_json::Error| BundleError::Json { path: path.to_owned(), reason: e.to_string() };
    let value: serde_json::Value = serde_json::from_str(text).map_err(json)?;
    let namespaces = value.pointer("/linux/namespaces").and_then(|n| n.as_array());
    for (i, ns) in namespaces.into_iter().flatten().enumerate() {
        let typ = ns.get("type");
        let known = ["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"];
        if !typ.and_then(|t| t.as_str()).is_some_and(|t| known.contains(&t)) {
            return Err(BundleError::invalid(
                format!("linux.namespaces[{i}].type"),
                typ.cloned().unwrap_or(serde_json::Value::Null),
                format!("not a namespace type; the runtime spec knows {}", known.join(", ")),
            ));
        }
    }
    serde_json::from_str(text).map_err(json)
}

/// Accepts runtime spec versions 1.x.
fn version(version: &str) -> Result<(), BundleError> {
    match version.split('.').next() {
        Some("1") => Ok(()),
        _ => Err(BundleError::invalid("ociVersion", version, "stockade follows runtime spec 1.x")),
    }
}

/// The root directory: `path` itself when absolute, else inside the bundle, where it must stay
/// (after symlinks, which are the bundle's).
fn root_dir(bundle: &Path, path: &Path) -> Result<PathBuf, BundleError> {
    let field = "root.path";
    if path.as_os_str().is_empty() {
        return Err(BundleError::invalid(field, path, "empty"));
    }
    let joined = bundle.join(path);
    let resolved = std::fs::canonicalize(&joined)
        .map_err(|e| BundleError::invalid(field, path, format!("{}: {e}", joined.display())))?;
    if path.is_relative() && !resolved.starts_with(bundle) {
        return Err(BundleError::invalid(
            field,
            path,
            format!(
                "a relative root must lie inside the bundle {}, and this one is {}",
                bundle.display(),
                resolved.display()
            ),
        ));
    }
    if !resolved.is_dir() {
        return Err(BundleError::invalid(field, path, format!("{} is not a directory", resolved.display())));
    }
    Ok(resolved)
}
