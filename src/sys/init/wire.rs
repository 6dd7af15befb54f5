//! What the library and a session's server (`program.rs`, serve mode) say to each other: one
//! definition, compiled into both (the program takes this file with `#[path]`).
//!
//! The server is a session's process outside its pid namespace: it joined the session's other
//! namespaces and root, and took the payload's credentials, syscall filter and Landlock rules,
//! before it exec'd the init program. Each request makes it fork a command (in the session's
//! pid namespace: its children are) that arranges its descriptors and execs.
//!
//! A request is one message on the session socket: [`REQUEST_WORDS`] native-endian `u32`s and,
//! as `SCM_RIGHTS`, the command's control channel, the write end of its status pipe, a memfd of
//! its strings, then one descriptor per move (stdio and passed descriptors, to the numbers in
//! the request).
//!
//! Each descriptor number and word here is part of both programs: change them together.

#![allow(dead_code)]

/// The server's end of the session socket.
pub const SERVER_FD: i32 = 3;
/// A pidfd of the session's holder: the server ends when the session does.
pub const HOLDER_FD: i32 = 4;
/// The payload's Landlock ruleset, with flag [`LANDLOCK`]: each command restricts itself
/// with it (a domain of its own, as a sandbox's payload has), after the steps it takes as the
/// payload's own setup would (its terminal, its working directory).
pub const LANDLOCK_FD: i32 = 5;

/// First word of every request.
pub const MAGIC: u32 = 0x5354_4b31;
/// Flag: wait for one byte (`g`) on the control channel before the last steps (the library
/// puts the command in its cgroup meanwhile). Such a command is a fork of the server: with
/// shared memory, the kernel would apply what the library changes to the server too.
pub const GO: u32 = 1;
/// Flag: open a terminal, send its master on the control channel, make it the controlling
/// terminal and put it on the descriptors of word [`W_TERMINAL_FDS`].
pub const TERMINAL: u32 = 2;
/// Flag: join a new session keyring.
pub const KEYRING: u32 = 4;
/// Flag: restrict the command with the ruleset at [`LANDLOCK_FD`].
pub const LANDLOCK: u32 = 8;
/// Flag: make the working directory, and missing parents (mode 0755), when it is missing
/// (after the command's Landlock restriction).
pub const CREATE_CWD: u32 = 16;

/// Word: [`MAGIC`].
pub const W_MAGIC: usize = 0;
/// Word: flags.
pub const W_FLAGS: usize = 1;
/// Word: the wall-clock limit in milliseconds, as an `i32` (-1: none).
pub const W_WALL_MS: usize = 2;
/// Word: the terminal's size, rows in the high 16 bits, columns in the low.
pub const W_SIZE: usize = 3;
/// Word: bit `n` set when the terminal goes on descriptor `n` (0 to 2).
pub const W_TERMINAL_FDS: usize = 4;
/// Word: the length of the strings memfd.
pub const W_STRINGS_LEN: usize = 5;
/// Word: the number of moves.
pub const W_MOVES: usize = 6;
/// Words: the target number of each move, in the order of its descriptor.
pub const W_TARGETS: usize = 7;
/// Most moves in one request.
pub const MAX_MOVES: usize = 240;
/// A request's length in words.
pub const REQUEST_WORDS: usize = W_TARGETS + MAX_MOVES;
/// Descriptors every request carries before its moves: control, status, strings.
pub const FIXED_FDS: usize = 3;

/// Strings memfd: a header of `u64` offsets into the memfd: the `argv` array, the `envp`
/// array, the array of paths to try, the working directory (0: none), the rlimits. Each of the
/// first three arrays is `u64` offsets of NUL-terminated strings, ended by a 0; the rlimits are
/// `u64` triples (resource, soft, hard) ended by a resource of `u64::MAX`. The memfd's last
/// byte is NUL.
pub const S_ARGV: usize = 0;
/// See [`S_ARGV`].
pub const S_ENVP: usize = 1;
/// See [`S_ARGV`].
pub const S_CANDIDATES: usize = 2;
/// See [`S_ARGV`].
pub const S_CWD: usize = 3;
/// See [`S_ARGV`].
pub const S_RLIMITS: usize = 4;
/// The header's length in `u64`s.
pub const S_HEADER: usize = 5;

/// Most commands one server runs at once; more are refused (`EAGAIN`).
pub const MAX_COMMANDS: usize = 512;

/// The server's first message on a command's control channel: `p` and the command's pid
/// (native-endian `i32`, in the library's pid namespace: the server's), with its pidfd.
pub const STARTED_LEN: usize = 5;

/// A failure record: step, errno and index, native-endian `u32`s (the library's `Step`
/// numbers: a test there checks these).
pub const FAILURE_LEN: usize = 12;
/// `Step::DeathSignal`.
pub const STEP_DEATH_SIGNAL: u32 = 2;
/// `Step::Fds`.
pub const STEP_FDS: u32 = 3;
/// `Step::SessionKeyring`.
pub const STEP_SESSION_KEYRING: u32 = 6;
/// `Step::NewSession`.
pub const STEP_NEW_SESSION: u32 = 8;
/// `Step::ForkPayload`.
pub const STEP_FORK: u32 = 18;
/// `Step::Rlimits`.
pub const STEP_RLIMITS: u32 = 22;
/// `Step::CreateWorkingDir`.
pub const STEP_CREATE_CWD: u32 = 25;
/// `Step::Chdir`.
pub const STEP_CHDIR: u32 = 26;
/// `Step::Exec`.
pub const STEP_EXEC: u32 = 27;
/// `Step::Landlock`.
pub const STEP_LANDLOCK: u32 = 28;
/// `Step::JoinSession`.
pub const STEP_JOIN_SESSION: u32 = 31;
/// `Step::Terminal`.
pub const STEP_TERMINAL: u32 = 32;

/// A status report on a command's status pipe: its wait status (`i32`), 1 if the wall-clock
/// limit ended it (`i32`), then its user and system CPU time in microseconds and its largest
/// resident set in KiB (`i64` each), native-endian.
pub const REPORT_LEN: usize = 32;
