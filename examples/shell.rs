//! Runs a shell command in a minimal sandbox: an empty tmpfs root with the host's `/usr` (and
//! `/bin`, `/lib*`) bound read-only, a private 64 MiB `/tmp`, a fresh `/proc` and a minimal
//! `/dev`, in every namespace, as root inside a user namespace. Works unprivileged.
//!
//! `cargo run --example shell -- 'ls /; echo hello > /tmp/x; cat /tmp/x; touch /usr/x'`

use stockade::{Mount, Namespaces, Root, Sandbox};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let script = std::env::args().nth(1).unwrap_or_else(|| "echo hello from $(hostname); ls /".into());
    let sandbox = Sandbox::builder()
        .namespaces(Namespaces::all())
        .hostname("shell-box")
        .root(Root::tmpfs())
        .mounts(Mount::host_system())
        .mount(Mount::tmpfs("/tmp").size(64 << 20))
        .build()?;
    let status = sandbox.command("/bin/sh").args(["-c", &script]).env("PATH", "/usr/bin:/bin").status()?;
    eprintln!("shell: {status}");
    std::process::exit(status.code().unwrap_or(1));
}
