//! Prints what this host offers sandboxes (`stockade::probe()`), each missing feature with its
//! reason and what to change, then tries a few configurations and says which run here and,
//! for those that do not, the typed error they get.
//!
//! `cargo run --example doctor`

use stockade::{Mount, Namespaces, Root, Sandbox};

/// A configuration to try, by name.
type Try = (&'static str, fn() -> Result<Sandbox, stockade::Error>);

fn main() {
    let report = stockade::probe();
    print!("{report}");
    let tries: [Try; 4] = [
        ("no namespaces", || Sandbox::builder().build()),
        ("user namespace only", || Sandbox::builder().namespaces(Namespaces::USER).build()),
        ("every namespace, tmpfs root with the system directories", || {
            Sandbox::builder()
                .namespaces(Namespaces::all())
                .root(Root::tmpfs())
                .mounts(Mount::host_system())
                .build()
        }),
        ("the untrusted preset", || Sandbox::untrusted().build()),
    ];
    println!();
    for (name, build) in tries {
        let outcome = build().and_then(|sandbox| sandbox.command("/bin/true").status());
        match outcome {
            Ok(status) if status.success() => println!("runs: {name}"),
            Ok(status) => println!("FAILS: {name}: /bin/true ended with {status}"),
            Err(e) => println!("FAILS: {name}: {e}"),
        }
    }
    let missing = report.missing().count();
    println!("\n{missing} of {} features missing", report.features.len());
}
