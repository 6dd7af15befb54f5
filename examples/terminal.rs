//! An interactive shell in a sandbox, on a terminal of its own (like `docker run -it`): every
//! namespace, an empty tmpfs root with the host's system directories read-only, a private
//! `/tmp`. Your terminal is put in raw mode and passed through; its size follows yours
//! (SIGWINCH). Works unprivileged. Exits with the shell's code.
//!
//! `cargo run --example terminal` (or `-- CMD ARGS...` for another program than `sh -i`)

use std::io::{Read, Write};
use std::os::fd::AsFd;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::termios::{self, SetArg, Termios};
use stockade::{Mount, Namespaces, Root, Sandbox, Terminal};

/// Restores the caller's terminal settings when dropped.
struct Raw(Option<Termios>);

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, saved);
        }
    }
}

/// Raw mode on stdin when it is a terminal (keys reach the sandbox as typed, ^C included).
fn raw_mode() -> Raw {
    let Ok(saved) = termios::tcgetattr(std::io::stdin()) else { return Raw(None) };
    let mut raw = saved.clone();
    termios::cfmakeraw(&mut raw);
    let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &raw);
    Raw(Some(saved))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (program, args) = match args.split_first() {
        Some((program, rest)) => (program.clone(), rest.to_vec()),
        None => ("/bin/sh".to_owned(), vec!["-i".to_owned()]),
    };
    // SIGWINCH is waited for by a thread of its own: blocked here, before any thread starts.
    let mut winch = SigSet::empty();
    winch.add(Signal::SIGWINCH);
    winch.thread_block()?;

    let sandbox = Sandbox::builder()
        .namespaces(Namespaces::all())
        .hostname("tty-box")
        .root(Root::tmpfs())
        .mounts(Mount::host_system())
        .mount(Mount::tmpfs("/tmp").size(64 << 20))
        .build()?;
    let (rows, cols) = Terminal::size_of(std::io::stdin().as_fd()).unwrap_or((24, 80));
    let mut child = sandbox
        .command(&program)
        .args(&args)
        .env("PATH", "/usr/bin:/bin")
        .env("TERM", std::env::var("TERM").unwrap_or_else(|_| "xterm".into()))
        .terminal(rows, cols)
        .spawn()?;
    let terminal = child.terminal.take().expect("asked for a terminal");
    let raw = raw_mode();

    // Keys to the sandbox; window size changes to the sandbox.
    let mut keys = terminal.try_clone()?;
    std::thread::spawn(move || std::io::copy(&mut std::io::stdin().lock(), &mut keys));
    let resized = terminal.try_clone()?;
    std::thread::spawn(move || {
        while winch.wait().is_ok() {
            if let Ok((rows, cols)) = Terminal::size_of(std::io::stdin().as_fd()) {
                let _ = resized.resize(rows, cols);
            }
        }
    });
    // The screen: until the payload's side is closed.
    let mut screen = std::io::stdout().lock();
    let mut buf = [0u8; 4096];
    let mut terminal = terminal;
    loop {
        match terminal.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                screen.write_all(&buf[..n])?;
                screen.flush()?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let status = child.wait()?;
    drop(raw);
    eprintln!("\r\nterminal: {status}");
    std::process::exit(status.code().unwrap_or(1));
}
