//! Landlock system calls, allocation-free, for the child (and the ABI probe of the parent).

use std::ffi::CStr;
use std::os::fd::RawFd;

use super::SysResult;

/// `struct landlock_ruleset_attr` as of ABI 6; older kernels accept it when the fields they do
/// not know are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RulesetAttr {
    pub(crate) handled_access_fs: u64,
    pub(crate) handled_access_net: u64,
    pub(crate) scoped: u64,
}

/// `struct landlock_path_beneath_attr` (packed in the kernel's header).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// `struct landlock_net_port_attr`.
#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_long = 1;
const RULE_NET_PORT: libc::c_long = 2;

/// The Landlock ABI version of the running kernel; 0 without Landlock.
pub(crate) fn abi_version() -> i32 {
    // SAFETY: with a null attribute and size 0 the kernel reads no memory.
    let ret = unsafe { raw!(libc::SYS_landlock_create_ruleset, 0usize, 0usize, CREATE_RULESET_VERSION) };
    ret.map_or(0, |v| v as i32)
}

pub(crate) fn create_ruleset(attr: &RulesetAttr) -> SysResult<RawFd> {
    // SAFETY: `attr` is a valid ruleset attribute of the size passed.
    (unsafe {
        raw!(
            libc::SYS_landlock_create_ruleset,
            attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    })
    .map(|fd| fd as RawFd)
}

/// Allows `access` beneath `path` (resolved from the current root, through no symlink: one
/// planted by an earlier payload must not widen the rule, `ELOOP`); for a file only the rights
/// a file can have are kept (`file_rights`), as the kernel refuses directory rights on one. A
/// rule left with no rights grants nothing and is not added.
pub(crate) fn add_path_rule(ruleset: RawFd, path: &CStr, access: u64, file_rights: u64) -> SysResult<()> {
    let resolve = super::RESOLVE_NO_SYMLINKS | super::RESOLVE_NO_MAGICLINKS;
    let fd = super::openat2(libc::AT_FDCWD, path, libc::O_PATH | libc::O_CLOEXEC, resolve)?;
    let access = match is_dir(fd) {
        Ok(true) => access,
        Ok(false) => access & file_rights,
        Err(e) => {
            super::close(fd);
            return Err(e);
        }
    };
    if access == 0 {
        super::close(fd);
        return Ok(());
    }
    let attr = PathBeneathAttr { allowed_access: access, parent_fd: fd };
    // SAFETY: `attr` is a valid path-beneath attribute; `fd` is open.
    let ret = unsafe {
        raw!(libc::SYS_landlock_add_rule, ruleset, RULE_PATH_BENEATH, &attr as *const PathBeneathAttr, 0u32,)
    };
    super::close(fd);
    ret.map(drop)
}

pub(crate) fn add_port_rule(ruleset: RawFd, access: u64, port: u16) -> SysResult<()> {
    let attr = NetPortAttr { allowed_access: access, port: port as u64 };
    // SAFETY: `attr` is a valid net-port attribute.
    (unsafe { raw!(libc::SYS_landlock_add_rule, ruleset, RULE_NET_PORT, &attr as *const NetPortAttr, 0u32) })
        .map(drop)
}

pub(crate) fn restrict_self(ruleset: RawFd) -> SysResult<()> {
    // SAFETY: plain integer arguments.
    (unsafe { raw!(libc::SYS_landlock_restrict_self, ruleset, 0u32) }).map(drop)
}

fn is_dir(fd: RawFd) -> SysResult<bool> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid buffer for fstat.
    unsafe { raw!(libc::SYS_fstat, fd, &mut st as *mut libc::stat) }?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}
