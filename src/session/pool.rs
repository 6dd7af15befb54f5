//! [`Pool`]: sessions started ahead, for callers that want a fresh sandbox per request at warm
//! latency.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::{Error, Sandbox, Session};

/// Keeps `size` [`Session`]s of one sandbox started ahead. [`get`](Pool::get) hands one out at
/// once (or starts one if none is ready); when the [`Pooled`] session is dropped, a background
/// thread [`reset`](Session::reset)s it (every process of it ended, its filesystem and mount,
/// ipc and uts namespaces made anew, its other namespaces and init kept) and puts it back, so
/// every caller gets a sandbox as new (measured: 0.81× a used session's stop and a new one's
/// start with a network namespace and cgroup limits, whose making and teardown a reset skips;
/// 1.11× without either, where the reset's extra steps outweigh that). A session
/// whose sandbox cannot be reset (see [`Session::reset`]) is stopped instead and a new one
/// started. The thread does that as sessions come back, off the path of the commands run in
/// them, and starts all the pool lacks at once when `get` leaves fewer than half the sessions
/// ready or follows a failed background start.
/// Dropping the pool stops the sessions it holds; its thread (whose end would end the sessions
/// it started, as their parent) stays until every session handed out has been dropped.
/// Commands cost what a [`Session`]'s do.
///
/// The pool starts each session's sandbox (its init and holder, for as long as they run), and
/// a reset session's new holder, on a thread of its own, which from its second start on is background work under `SCHED_IDLE`:
/// any other task preempts it at once, so a caller's command does not wait for the CPU behind
/// a session being started. The cost falls on busy machines: there the pool refills slowly
/// (and `get` starts sessions itself), a session's init reaps the orphans of its commands late
/// (their zombies count against a pids limit until then), stopping sessions takes longer, and a
/// lock the kernel gives such a session's setup (the mount table's, a cgroup's) is held longer.
/// Each session's server starts on the pool's other thread, under the scheduling policy of the
/// thread that made the pool, and its commands run under that policy (a session `get` starts
/// itself: under the caller's).
///
/// ```no_run
/// use stockade::{Namespaces, Pool, Sandbox};
/// # fn main() -> Result<(), stockade::Error> {
/// let sandbox = Sandbox::builder().namespaces(Namespaces::all()).build()?;
/// let pool = Pool::new(&sandbox, 4);
/// let session = pool.get()?;
/// let out = session.command("/bin/echo").arg("warm").output()?;
/// assert_eq!(out.stdout, b"warm\n");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    /// One more reference per session handed out: none left means the thread can be joined.
    out: Arc<()>,
    /// Used sessions go to the refiller, which stops them off the caller's path.
    returns: Option<Sender<Returned>>,
    refiller: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    sandbox: Sandbox,
    size: usize,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Session>,
    owed: Owed,
    /// The last error starting a session in the background: no more starts until a `get` or a
    /// session's return, after which the thread tries again (a `get` that finds none ready
    /// starts one itself, whose error says what holds now).
    failure: Option<Error>,
    closing: bool,
}

/// What the thread is to start, by these rules (kept apart from the sessions, to be tested
/// alone): a checkout that leaves fewer than half ready, or follows a failed start, owes all
/// the pool lacks; a session coming back owes its replacement; never more than the pool
/// lacks, counting the sessions being started; a failed start is owed again.
#[derive(Debug, Default)]
struct Owed {
    count: usize,
    /// Sessions being started (not yet ready).
    starting: usize,
}

impl Owed {
    /// What a pool of `size` with `ready` sessions ready lacks, counting those being started.
    fn lacking(&self, ready: usize, size: usize) -> usize {
        size.saturating_sub(ready + self.starting)
    }

    /// A checkout left `ready`; `failed`: a background start had failed. Returns whether the
    /// thread must start sessions now.
    fn taken(&mut self, ready: usize, size: usize, failed: bool) -> bool {
        let low = failed || ready < size.div_ceil(2);
        if low {
            self.count = self.count.max(self.lacking(ready, size));
        }
        low
    }

    /// A session came back to a pool with `ready` ready; returns whether it owes its
    /// replacement (a pool refilled meanwhile, as it ran low, owes nothing for it).
    fn returned(&mut self, ready: usize, size: usize) -> bool {
        let owes = self.count < self.lacking(ready, size);
        if owes {
            self.count += 1;
        }
        owes
    }

    /// Whether the thread starts a session now; if so it is counted as being started.
    fn start(&mut self, ready: usize, size: usize) -> bool {
        let now = self.count > 0 && self.lacking(ready, size) > 0;
        if now {
            self.count -= 1;
            self.starting += 1;
        }
        now
    }

    /// A start has ended (`ok`: it gave a session); a failed one is owed again.
    fn started(&mut self, ok: bool) {
        self.starting -= 1;
        if !ok {
            self.count += 1;
        }
    }

    /// Whether a session that came back, reset, goes back to a pool with `ready` ready: only
    /// where it lacks one. If so it is counted ready, and the pool owes no more than it lacks
    /// with it (its return owed its replacement: this is it).
    fn reset_back(&mut self, ready: usize, size: usize) -> bool {
        let back = self.lacking(ready, size) > 0;
        self.settle(ready + usize::from(back), size);
        back
    }

    /// The pool owes no more than it lacks with `ready` ready (a session that came back owing
    /// its replacement found it refilled meanwhile).
    fn settle(&mut self, ready: usize, size: usize) {
        self.count = self.count.min(self.lacking(ready, size));
    }
}

impl Pool {
    /// A pool of `size` sessions of `sandbox`, started in the background from now on.
    pub fn new(sandbox: &Sandbox, size: usize) -> Pool {
        let shared = Arc::new(Shared {
            sandbox: sandbox.clone(),
            size,
            state: Mutex::new(State { owed: Owed { count: size, starting: 0 }, ..State::default() }),
            changed: Condvar::new(),
        });
        let (returns, used) = channel();
        let worker = shared.clone();
        let refiller = std::thread::Builder::new()
            .name("stockade-pool".into())
            .spawn(move || refill(&worker, &used))
            .ok();
        Pool { shared, out: Arc::new(()), returns: Some(returns), refiller }
    }

    /// A started session nobody has used: one started ahead, or a new one when none is ready.
    /// A session started here, on the calling thread, dies with that thread like any sandbox
    /// (its parent-death signal follows the thread that spawned it); those started ahead belong
    /// to the pool's thread.
    ///
    /// # Errors
    /// As [`Sandbox::start`].
    pub fn get(&self) -> Result<Pooled, Error> {
        let (taken, low) = {
            let mut state = lock(&self.shared.state);
            // A background failure is old news: the start below (and the thread's next try)
            // says what holds now.
            let failed = state.failure.take().is_some();
            let taken = state.ready.pop_front();
            let ready = state.ready.len();
            (taken, state.owed.taken(ready, self.shared.size, failed))
        };
        // With half or more still ready, the thread starts the replacement once this session
        // comes back, not while the caller's command runs beside it.
        if low {
            self.shared.changed.notify_all();
        }
        let (session, ahead) = match taken {
            Some(session) => (session, true),
            None => (self.shared.sandbox.start()?, false),
        };
        Ok(Pooled {
            session: Some(session),
            ahead,
            returns: self.returns.clone(),
            shared: self.shared.clone(),
            _out: self.out.clone(),
        })
    }

    /// How many sessions are started and waiting.
    pub fn ready(&self) -> usize {
        lock(&self.shared.state).ready.len()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared.state).closing = true;
        self.shared.changed.notify_all();
        drop(self.returns.take());
        // The thread stops the ready sessions, then waits for those handed out: wait for it
        // only if none is out (it then ends at once).
        if let Some(thread) = self.refiller.take()
            && Arc::strong_count(&self.out) == 1
        {
            let _ = thread.join();
        }
    }
}

/// The background thread: stops used sessions and starts what is owed (see [`Owed`]); once
/// the pool is dropped, stops the ready ones and stays until every session handed out has come
/// back.
fn refill(shared: &Shared, used: &Receiver<Returned>) {
    // Each session's sandbox (the bulk of a start) starts on a thread of its own, which runs
    // idle from its second start on: the caller's commands preempt it at once. Without this, a
    // command whose processes the scheduler put on the CPU where a session was being started
    // waited up to a whole tick (4 ms at 250 Hz) behind it. Not from the first: what this
    // process starts once for every sandbox (the cgroup reaper) would keep the policy. The
    // session's server starts here, under the policy this thread got from the pool's maker:
    // its commands take it (an idle policy could not be left again without CAP_SYS_NICE).
    // That thread lives as long as this one: its sessions' inits die with it.
    // A session that comes back is reset (its holder made anew on that thread too, its server
    // here), unless its sandbox cannot be: then it is stopped and a new one started.
    let (ask, asked) = std::sync::mpsc::channel::<Option<super::Renewal>>();
    let (give, given) = std::sync::mpsc::channel::<Made>();
    let sandbox = shared.sandbox.clone();
    let holds = std::thread::Builder::new().name("stockade-pool-hold".into()).spawn(move || {
        let mut idle = false;
        while let Ok(job) = asked.recv() {
            let made = match job {
                None => Made::Held(Session::hold(&sandbox)),
                Some(renewal) => Made::Renewed(renewal.holder()),
            };
            if !idle {
                idle = true;
                let _ = crate::sys::set_idle_policy();
            }
            if give.send(made).is_err() {
                break;
            }
        }
    });
    let ended = || Error::spawn("start a session", std::io::Error::other("the pool's thread ended"));
    let start = || match &holds {
        Ok(_) => match ask.send(None).ok().and_then(|()| given.recv().ok()) {
            Some(Made::Held(held)) => held.and_then(super::Held::serve),
            _ => Err(ended()),
        },
        // No second thread: both here, at this thread's policy.
        Err(_) => shared.sandbox.start(),
    };
    let reset = |session: &mut Session| match &holds {
        Ok(_) => session.reset_with(|renewal| {
            match ask.send(Some(renewal)).ok().and_then(|()| given.recv().ok()) {
                Some(Made::Renewed(made)) => made,
                _ => Err(ended()),
            }
        }),
        Err(_) => session.reset(),
    };
    refill_with(shared, used, start, reset);
    drop(ask);
    if let Ok(thread) = holds {
        let _ = thread.join();
    }
}

/// A session given back, and whether it is to be its own replacement, reset: its return owes
/// one, and the pool's thread started it.
type Returned = (Session, bool);

/// What the pool's idle thread made: a session's sandbox, or a session's new holder.
enum Made {
    Held(Result<super::Held, Error>),
    Renewed(Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), Error>),
}

/// The loop of [`refill`], starting sessions with `start` and resetting those that come back
/// with `reset`.
fn refill_with(
    shared: &Shared,
    used: &Receiver<Returned>,
    start: impl Fn() -> Result<Session, Error>,
    reset: impl Fn(&mut Session) -> Result<(), Error>,
) {
    loop {
        while let Ok((mut session, own_replacement)) = used.try_recv() {
            // Reset where it is its own replacement and the pool still lacks one (a failed
            // reset has ended it: stopped below, and its replacement is owed still).
            let room = own_replacement && {
                let mut state = lock(&shared.state);
                let ready = state.ready.len();
                let room = !state.closing && state.owed.lacking(ready, shared.size) > 0;
                if !room {
                    state.owed.settle(ready, shared.size);
                }
                room
            };
            if room && reset(&mut session).is_ok() {
                let mut state = lock(&shared.state);
                let ready = state.ready.len();
                if !state.closing && state.owed.reset_back(ready, shared.size) {
                    state.ready.push_back(session);
                    continue;
                }
            }
            let _ = session.stop();
        }
        let mut state = lock(&shared.state);
        if state.closing {
            let ready = std::mem::take(&mut state.ready);
            drop(state);
            for session in ready {
                let _ = session.stop();
            }
            // Every sender gone (the pool's and each Pooled's): nothing started here is left.
            while let Ok((session, _)) = used.recv() {
                let _ = session.stop();
            }
            return;
        }
        let ready = state.ready.len();
        if state.failure.is_some() || !state.owed.start(ready, shared.size) {
            // Woken by a session coming back, the pool running low, or closing; looks at used
            // sessions now and then.
            state = shared
                .changed
                .wait_timeout(state, std::time::Duration::from_millis(50))
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
            drop(state);
            continue;
        }
        drop(state);
        let started = start();
        let mut state = lock(&shared.state);
        state.owed.started(started.is_ok());
        match started {
            Ok(session) if !state.closing => state.ready.push_back(session),
            Ok(session) => {
                drop(state);
                let _ = session.stop();
            }
            Err(e) => state.failure = Some(e),
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A session taken from a [`Pool`]; derefs to [`Session`]. Dropping it gives it back to the
/// pool's thread, which resets it for the next caller (or stops it, and starts a fresh one).
#[derive(Debug)]
pub struct Pooled {
    session: Option<Session>,
    /// Started by the pool's thread (not by `get`, on the caller's thread, with whose end it
    /// would end): it may be reset and handed out again.
    ahead: bool,
    returns: Option<Sender<Returned>>,
    shared: Arc<Shared>,
    _out: Arc<()>,
}

impl std::ops::Deref for Pooled {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session.as_ref().expect("a pooled session is present until dropped")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("a pooled session is present until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else { return };
        // Reset or stopped by the pool's thread; if the pool is gone, stopped here.
        let Some(returns) = &self.returns else { return drop(session.stop()) };
        // The thread resets it, or stops it and starts its replacement (trying again after a
        // failed start). Sent under the lock: the thread finds it when it sees what it owes.
        let mut state = lock(&self.shared.state);
        let ready = state.ready.len();
        let owes = state.owed.returned(ready, self.shared.size);
        state.failure = None;
        let unsent = returns.send((session, owes && self.ahead)).err();
        drop(state);
        match unsent {
            None => self.shared.changed.notify_all(),
            Some(unsent) => drop(unsent.0.0.stop()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Owed;

    /// Starts what the thread would start now for a pool of `size` with `ready` ready; returns
    /// how many (each counted as being started).
    fn starts(owed: &mut Owed, ready: usize, size: usize) -> usize {
        let mut n = 0;
        while owed.start(ready, size) {
            n += 1;
            assert!(n <= 64, "starts without end");
        }
        n
    }

    #[test]
    fn a_new_pool_owes_all_its_sessions_and_no_more() {
        let mut owed = Owed { count: 4, starting: 0 };
        assert_eq!(starts(&mut owed, 0, 4), 4);
        for _ in 0..4 {
            owed.started(true);
        }
        assert_eq!((owed.count, owed.starting), (0, 0));
        // Full: a checkout that leaves three ready starts nothing.
        assert!(!owed.taken(3, 4, false));
        assert_eq!(starts(&mut owed, 3, 4), 0);
    }

    #[test]
    fn a_checkout_that_leaves_half_ready_owes_nothing_until_its_session_comes_back() {
        let mut owed = Owed::default();
        assert!(!owed.taken(3, 4, false));
        assert!(!owed.taken(2, 4, false));
        assert_eq!(starts(&mut owed, 2, 4), 0);
        assert!(owed.returned(2, 4));
        assert_eq!(starts(&mut owed, 2, 4), 1);
    }

    #[test]
    fn a_checkout_that_leaves_fewer_than_half_ready_owes_all_the_pool_lacks() {
        let mut owed = Owed::default();
        assert!(owed.taken(1, 4, false));
        assert_eq!(starts(&mut owed, 1, 4), 3);
        // Size 1: every checkout is low.
        let mut one = Owed::default();
        assert!(one.taken(0, 1, false));
        assert_eq!(starts(&mut one, 0, 1), 1);
        // After a failed background start, even a checkout that leaves half ready.
        let mut after_failure = Owed::default();
        assert!(after_failure.taken(3, 4, true));
        assert_eq!(starts(&mut after_failure, 3, 4), 1);
    }

    #[test]
    fn sessions_coming_back_while_the_pool_refills_owe_only_what_it_still_lacks() {
        // Size 2, both taken: low, two owed; one being started when the first comes back.
        let mut owed = Owed::default();
        assert!(owed.taken(0, 2, false));
        assert!(owed.start(0, 2));
        owed.returned(0, 2);
        assert_eq!(owed.count, 1, "owed: what the pool lacks beside the one being started");
        assert_eq!(starts(&mut owed, 0, 2), 1);
        owed.started(true);
        owed.started(true);
        // Full again: the second coming back owes nothing, and the next checkout that leaves
        // half ready starts nothing beside its commands.
        owed.returned(2, 2);
        assert_eq!(owed.count, 0);
        assert!(!owed.taken(1, 2, false));
        assert_eq!(starts(&mut owed, 1, 2), 0);
    }

    #[test]
    fn a_reset_session_goes_back_only_where_the_pool_lacks_one_and_pays_what_its_return_owed() {
        // Size 2, one out: it comes back (owing its replacement) and is reset.
        let mut owed = Owed::default();
        owed.returned(1, 2);
        assert_eq!(owed.count, 1);
        assert!(owed.reset_back(1, 2));
        assert_eq!(starts(&mut owed, 2, 2), 0, "the reset session was its replacement");
        // Refilled meanwhile (a start was under way): the pool is full, it goes.
        let mut full = Owed::default();
        full.returned(1, 2);
        assert!(full.start(1, 2));
        assert!(!full.reset_back(1, 2), "one ready and one being started: nothing lacking");
        // Two out, both back: the first reset one leaves the second's replacement owed.
        let mut two = Owed::default();
        two.returned(0, 2);
        two.returned(0, 2);
        assert!(two.reset_back(0, 2));
        assert_eq!(two.count, 1);
        assert!(two.reset_back(1, 2));
        assert_eq!(two.count, 0);
    }

    #[test]
    fn a_failed_start_is_owed_again() {
        // Size 4 with two out: the first back owes one, whose start fails; the second back
        // owes its own, and the failed one is still owed.
        let mut owed = Owed::default();
        owed.returned(2, 4);
        assert!(owed.start(2, 4));
        owed.started(false);
        owed.returned(2, 4);
        assert_eq!(starts(&mut owed, 2, 4), 2);
    }
}
