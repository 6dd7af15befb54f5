//! `stockade::probe()` says what this host does: each answer is compared with what actually
//! happens when a sandbox needs the feature (in every lane of tests/run-all: root, uid 65534,
//! without openat2 and clone3, the 6.1 guest with and without user namespaces).

mod common;

use common::*;
use stockade::{Error, Namespaces, Root, Sandbox, SandboxBuilder};

/// Whether a sandbox from `b` builds and runs `/bin/true`, or the error that stopped it.
fn runs(b: &SandboxBuilder) -> Result<(), Error> {
    let sandbox = b.build()?;
    let status = sandbox.command("/bin/true").status()?;
    assert!(status.success(), "{status}");
    Ok(())
}

/// Checks that `outcome` agrees with the probe's answer for `name`: it ran where the feature
/// is available, and ended in `Unsupported` naming it where not.
fn agrees(report: &stockade::HostReport, name: &str, outcome: Result<(), Error>) {
    let feature = report.feature(name).unwrap_or_else(|| panic!("the probe reports {name}"));
    match outcome {
        Ok(()) => {
            assert!(feature.available, "{name}: the probe says {feature:?}, but a sandbox needing it ran")
        }
        Err(Error::Unsupported { feature: missing, .. }) if missing == name => {
            assert!(!feature.available, "{name}: the probe says available, but build() says missing")
        }
        Err(e) => panic!("{name}: the probe says {feature:?}; the sandbox failed otherwise: {e:?}"),
    }
}

#[test]
fn the_probe_report_matches_what_sandboxes_needing_each_feature_do() {
    let report = stockade::probe();
    let userns = report.feature("user namespaces").expect("reported").available;
    agrees(&report, "user namespaces", runs(Sandbox::builder().namespaces(Namespaces::USER)));
    if !is_root() && !userns {
        // Every other check needs a user namespace here: they would only repeat this one.
        return skip(
            "the_probe_report_matches_what_sandboxes_needing_each_feature_do (beyond user namespaces)",
            "unprivileged without user namespaces, no sandbox with namespaces can run",
        );
    }
    // Without USER as root, or with it (and the caller mapped) unprivileged.
    let with = |ns: Namespaces| if is_root() { ns } else { ns | Namespaces::USER };
    for (kind, name) in [
        (Namespaces::MOUNT, "mount namespace"),
        (Namespaces::PID | Namespaces::MOUNT, "pid namespace"),
        (Namespaces::NET, "network namespace"),
        (Namespaces::UTS, "uts namespace"),
        (Namespaces::IPC, "ipc namespace"),
        (Namespaces::CGROUP, "cgroup namespace"),
        // With a pid namespace: its init forks the payload into it (see the time namespace
        // check of build() on kernels before 6.2).
        (Namespaces::TIME | Namespaces::PID | Namespaces::MOUNT, "time namespace"),
    ] {
        let outcome = runs(Sandbox::builder().namespaces(with(kind)));
        // A mount namespace needs openat2 and the new mount API too: those answer for
        // themselves below.
        let outcome = match outcome {
            Err(Error::Unsupported { feature, .. }) if feature == "openat2" || feature == "new mount API" => {
                continue;
            }
            other => other,
        };
        agrees(&report, name, outcome);
    }
    // Roots hold the host's system directories, bound read-only (see common::rooted).
    let tmpfs_root = || rooted(Namespaces::PID, Root::tmpfs());
    agrees(&report, "openat2", runs(&tmpfs_root()));
    if !report.feature("openat2").expect("reported").available {
        return skip(
            "the_probe_report_matches_what_sandboxes_needing_each_feature_do (overlay roots)",
            "without openat2 no root but the host's can be built",
        );
    }
    let lower = tempdir();
    let overlay = || rooted(Namespaces::PID, Root::overlay([lower.path().to_owned()]));
    agrees(&report, "overlayfs lowerdir+", runs(&overlay()));
    // The explicit weaker mode works where lowerdir+ does not (and where it does).
    let mut legacy = overlay();
    legacy.legacy_overlay();
    runs(&legacy).expect("legacy_overlay() runs where overlayfs exists");
}
