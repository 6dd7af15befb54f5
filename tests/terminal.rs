//! Payloads on a pseudo-terminal of the sandbox's own: an interactive shell with job control,
//! window size changes, the terminal only where the caller did not set stdio, and a typed error
//! where the sandbox has no /dev/pts. As root and as uid 65534 (with a user namespace).

mod common;

use std::io::{BufRead, BufReader, Write};

use common::*;
use stockade::{Error, Mount, Namespaces, Root, Stage, Stdio, Terminal};

/// Every namespace, a tmpfs root with the host's system directories and stockade's /dev.
fn terminal_sandbox() -> stockade::Sandbox {
    rooted(Namespaces::all() - Namespaces::USER, Root::tmpfs()).build().unwrap()
}

/// Entries of the host's /dev/pts.
fn host_ptys() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/pts")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The device number of the host's /dev/pts (as `stat -c %d` prints it).
fn host_pts_dev() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/dev/pts").unwrap().dev()
}

/// Reads what the terminal shows until a line containing `text` (the shell echoes what it is
/// sent, so wait for output the echo cannot contain: expanded variables).
fn read_to(screen: &mut BufReader<Terminal>, text: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = screen.read_line(&mut line).expect("read the terminal");
        assert!(n > 0, "the terminal ended before {text:?}; it showed:\n{seen}");
        seen.push_str(&line);
        if line.contains(text) {
            return seen;
        }
    }
}

#[test]
fn an_interactive_shell_gets_a_terminal_of_the_sandboxs_own_with_job_control_and_resizing() {
    let _serial = serial();
    let sandbox = terminal_sandbox();
    let mut child = sandbox.command("/bin/sh").arg("-i").terminal(24, 80).spawn().unwrap();
    let terminal = child.terminal.take().expect("a terminal");
    let mut input = terminal.try_clone().unwrap();
    let mut screen = BufReader::new(terminal);

    // Its terminal is the first of a devpts instance nobody else uses (another device than
    // the host's /dev/pts), 24 × 80.
    input.write_all(b"tty; ls -1 /dev/pts; stty size; echo dev-$(stat -c %d /dev/pts)-$((40+2))\n").unwrap();
    let seen = read_to(&mut screen, "-42");
    assert!(seen.contains("/dev/pts/0\r\n"), "{seen}");
    assert!(seen.contains("\r\n0\r\nptmx\r\n"), "{seen}");
    assert!(seen.contains("24 80\r\n"), "{seen}");
    assert!(!seen.contains(&format!("dev-{}-42", host_pts_dev())), "the host's devpts: {seen}");

    // Resizing reaches the shell as SIGWINCH (its trap runs at the latest after the next
    // command) and changes what it sees.
    input.write_all(b"trap 'echo winch-$((1+1))' WINCH; echo trap-$((2+3))\n").unwrap();
    read_to(&mut screen, "trap-5");
    screen.get_ref().resize(40, 100).unwrap();
    assert_eq!(screen.get_ref().size().unwrap(), (40, 100));
    input.write_all(b"stty size; echo one-$((1+0))\n").unwrap();
    let mut seen = read_to(&mut screen, "one-1");
    if !seen.contains("winch-2") {
        input.write_all(b"echo two-$((1+1))\n").unwrap();
        seen.push_str(&read_to(&mut screen, "two-2"));
    }
    assert!(seen.contains("winch-2"), "no SIGWINCH reached the shell: {seen}");
    assert!(seen.contains("40 100\r\n"), "{seen}");

    // Job control: ^C interrupts the foreground job, not the shell (nor this process).
    input.write_all(b"sleep 1000\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let sleeper = loop {
        let found = tree_of(child.id() as i32).into_iter().find(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        if let Some(pid) = found {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "the shell never started sleep");
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    wait_until_sleeping(sleeper);
    input.write_all(b"\x03").unwrap();
    assert!(wait_gone(sleeper, std::time::Duration::from_secs(60)), "^C did not end the job");
    input.write_all(b"echo status $(($? + 1000))\n").unwrap();
    let seen = read_to(&mut screen, "status 1");
    assert!(seen.contains("status 1130"), "the job did not end by SIGINT: {seen}");

    input.write_all(b"exit 7\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut screen, &mut rest).unwrap(); // end of file, not EIO
    assert_eq!(child.wait().unwrap().code(), Some(7));
}

#[test]
fn the_terminal_is_only_the_stdio_the_caller_did_not_set() {
    let _serial = serial();
    let sandbox = terminal_sandbox();
    let mut child = sandbox
        .command("/bin/sh")
        .args(["-c", "tty; echo on-the-terminal >&2; test -t 1 || echo stdout-is-a-pipe"])
        .terminal(24, 80)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut screen = BufReader::new(child.terminal.take().unwrap());
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert_eq!(stdout, "/dev/pts/0\nstdout-is-a-pipe\n");
    let seen = read_to(&mut screen, "on-the-terminal");
    assert!(seen.starts_with("on-the-terminal"), "{seen}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_session_command_gets_a_terminal_in_the_sessions_devpts() {
    let _serial = serial();
    let sandbox = terminal_sandbox();
    let session = sandbox.start().unwrap();
    for _ in 0..2 {
        let script = "tty; stat -c dev-%d /dev/pts; stty size";
        let mut child = session.command("/bin/sh").args(["-c", script]).terminal(30, 90).spawn().unwrap();
        let mut screen = BufReader::new(child.terminal.take().unwrap());
        let seen = read_to(&mut screen, "30 90");
        assert!(seen.starts_with("/dev/pts/"), "{seen}");
        assert!(seen.contains("dev-") && !seen.contains(&format!("dev-{}\r\n", host_pts_dev())), "{seen}");
        assert!(child.wait().unwrap().success());
    }
    session.stop().unwrap();
}

#[test]
fn a_sandbox_without_a_devpts_of_its_own_gets_no_terminal_and_nothing_is_left() {
    let _serial = serial();
    let (fds, children) = (fd_count(), own_children());
    let host_before = host_ptys();
    // No mount namespace (the host's /dev), and a /dev that is a plain tmpfs: refused before
    // any process, never a terminal in the host's devpts.
    let mut covered = rooted(Namespaces::PID | Namespaces::MOUNT, Root::tmpfs());
    covered.mount(Mount::tmpfs("/dev"));
    for sandbox in [builder(Namespaces::UTS).build().unwrap(), covered.build().unwrap()] {
        let err = sandbox.command("/bin/true").terminal(24, 80).spawn().unwrap_err();
        assert!(matches!(&err, Error::InvalidValue { what: "terminal", .. }), "{err:?}");
        assert!(err.to_string().contains("/dev/pts of its own"), "{err}");
    }
    assert_eq!(host_ptys(), host_before);
    assert_eq!(own_children(), children);
    assert_eq!(fd_count(), fds);
}

#[test]
fn a_terminal_that_cannot_be_made_is_a_typed_setup_error() {
    let _serial = serial();
    // The terminal is made with the payload's credentials, before no_new_privs; a filter
    // installed earlier (new privileges allowed) that refuses ioctl makes it fail.
    let mut b = rooted(Namespaces::PID, Root::tmpfs());
    b.allow_new_privileges().syscall_filter(stockade::SyscallFilter::default_profile().refuse("ioctl"));
    let err = b.build().unwrap().command("/bin/true").terminal(24, 80).spawn().unwrap_err();
    match &err {
        Error::Setup { stage: Stage::Terminal, source } => {
            assert_eq!(source.raw_os_error(), Some(libc::EPERM), "{err}")
        }
        other => panic!("unexpected error: {other:?}"),
    }
    assert!(err.to_string().contains("terminal"), "{err}");
}

#[test]
fn the_terminal_example_runs_an_interactive_shell_from_piped_keys() {
    let _serial = serial();
    let example = run_example().with_file_name("terminal");
    assert!(example.exists(), "{} missing: `cargo test` builds the examples", example.display());
    let mut shell = std::process::Command::new(example)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    shell.stdin.take().unwrap().write_all(b"echo hi from $(hostname) $((1+1)); exit 4\n").unwrap();
    let out = shell.wait_with_output().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("hi from tty-box 2"),
        "{screen}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
}
