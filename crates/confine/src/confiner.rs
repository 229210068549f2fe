//! The confinement process: wharf starts it once per run (`wharf __confine`, on its
//! standard input a socket), and it forks every program the run starts.
//!
//! Why a process of its own: the namespaces a program lives in cost about a millisecond to
//! make (a network namespace alone half of it), more than a program of a step may add to
//! its start; made once here and inherited by every fork, they cost nothing a program. And
//! forking from a small single-threaded process is cheap and safe, where forking wharf (a
//! large multi-threaded process) is neither: the child here may allocate, build its
//! Landlock layer and seccomp filter, and say precisely what failed.
//!
//! It holds: at `Level::Full` a mount namespace whose root is made of what the run's
//! programs may reach (wharf's `.wharf` hidden), a network namespace with only a loopback,
//! and (when wharf is not root) a user namespace; at `Landlock` and `Full` its own Landlock
//! layer. A program gets its own process namespace (unless it may signal the host's), its
//! own network namespace with a proxy socket when it may reach the network, its step's
//! Landlock layer, a seccomp filter, limits, no capabilities, and `PR_SET_PDEATHSIG`: it
//! dies with this process, which dies when wharf's end of the socket closes, however wharf
//! ends.

use crate::layers;
use crate::policy::{Level, Network, PROXY_PORT, Program, Setup};
use crate::support::{self, Report};
use crate::wire::{self, FromConfiner, MAX_MESSAGE, ToConfiner};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use seccompiler::BpfProgram;
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;

/// Set in every program's environment: processes that detach from it keep it, and are
/// found by it (at `Level::Landlock`, where no process namespace holds them).
pub const MARK: &str = "WHARF_CONFINED";

/// Serve wharf on standard input until it closes, then end every program and exit.
pub fn serve() -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("wharf: the confinement process failed: {e}");
            1
        }
    };
    std::process::exit(code)
}

struct Running {
    /// The program, a child of this process.
    child: libc::pid_t,
    /// It is the first process of a process namespace: killing it ends everything it started.
    own_namespace: bool,
    /// In an audit: what it opens, seen.
    watch: Option<crate::watch::Watch>,
}

struct Confiner {
    socket: OwnedFd,
    setup: Setup,
    level: Level,
    root: bool,
    running: HashMap<u64, Running>,
    /// Made once, used by every program: what its Landlock layer always holds, its seccomp
    /// filters (without and with a network), its standard input.
    base: Option<layers::Base>,
    filters: [Option<BpfProgram>; 2],
    null: OwnedFd,
    stack: Stack,
    /// The host's root, in an audit.
    host: Option<OwnedFd>,
}

fn run() -> io::Result<()> {
    // SAFETY: fd 0 is the socket wharf handed over as standard input; this process owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(0) };
    let mut buffer = vec![0u8; MAX_MESSAGE];
    let Some((ToConfiner::Setup(setup), _)) = wire::recv::<ToConfiner>(socket.as_fd(), &mut buffer)? else {
        return Err(io::Error::other("wharf did not send the setup first"));
    };
    // In an audit, what a program asks for is looked up on the host, not in its root.
    let host = setup
        .audit
        .then(|| rustix::fs::open("/", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()))
        .transpose()?;
    let report = prepare(&setup);
    wire::send(socket.as_fd(), &FromConfiner::Ready(report.clone()), &[])?;
    let level = report.level;
    let filter = |network: &Network| {
        if level < Level::Landlock {
            return Ok(None);
        }
        crate::filter::program(level, network)
            .map(Some)
            .map_err(|e| io::Error::other(format!("seccomp: {e}")))
    };
    let mut confiner = Confiner {
        socket,
        level,
        root: report.root,
        base: (level >= Level::Landlock).then(|| layers::Base::open(&setup, report.landlock.unwrap_or(0))),
        filters: [filter(&Network::None)?, filter(&Network::Granted { ports: None })?],
        // Stdin is the socket here; a program's is /dev/null.
        null: rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?,
        stack: Stack::new()?,
        host,
        setup,
        running: HashMap::new(),
    };
    confiner.serve(&mut buffer)
}

/// Make what the whole run holds, as far as the kernel lets: the level reached and why not
/// more.
fn prepare(setup: &Setup) -> Report {
    let mut report = Report {
        level: Level::None,
        landlock: support::landlock_abi(),
        no_namespaces: None,
        seccomp: support::seccomp(),
        root: support::root(),
    };
    // Orphans of programs come here, not to the host's init, to be ended.
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    if setup.wanted == Level::None || report.landlock.is_none() {
        return report;
    }
    let mut level = Level::Landlock;
    if setup.wanted == Level::Full {
        match crate::namespaces::enter(setup, report.root) {
            Ok(()) => level = Level::Full,
            Err(e) => report.no_namespaces = Some(e.to_string()),
        }
    }
    match layers::restrict_confiner(setup, report.landlock.unwrap_or(0)) {
        Ok(()) => report.level = level,
        Err(e) => report.no_namespaces = Some(format!("Landlock refused the rules: {e}")),
    }
    if report.root && report.level > Level::None {
        // Once for every program: no exec of a child gives root's powers back.
        if let Err(e) = drop_bounding_set() {
            report.level = Level::None;
            report.no_namespaces = Some(format!("root's capabilities could not be dropped: {e}"));
        }
    }
    report
}

impl Confiner {
    /// Serve wharf until it is gone, however it ended: its socket closed, or a message to
    /// it refused (a program's exit found in the same wake-up as wharf's end). Then so is
    /// everything it started.
    fn serve(&mut self, buffer: &mut [u8]) -> io::Result<()> {
        let served = self.serve_requests(buffer);
        self.end_all();
        match served {
            Err(e) if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) => Ok(()),
            other => other,
        }
    }

    fn serve_requests(&mut self, buffer: &mut [u8]) -> io::Result<()> {
        let children = child_signals()?;
        loop {
            let watched: Vec<u64> = self
                .running
                .iter()
                .filter(|(_, r)| r.watch.as_ref().is_some_and(|w| w.open))
                .map(|(id, _)| *id)
                .collect();
            let mut fds = vec![
                rustix::event::PollFd::new(&self.socket, rustix::event::PollFlags::IN),
                rustix::event::PollFd::new(&children, rustix::event::PollFlags::IN),
            ];
            for id in &watched {
                let watch = self.running[id].watch.as_ref().expect("watched");
                fds.push(rustix::event::PollFd::new(
                    &watch.listener,
                    rustix::event::PollFlags::IN,
                ));
            }
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let (message, child) = (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
            let seen: Vec<(u64, rustix::event::PollFlags)> = watched
                .iter()
                .zip(&fds[2..])
                .map(|(id, fd)| (*id, fd.revents()))
                .collect();
            drop(fds);
            for (id, events) in seen {
                let Some(watch) = self.running.get_mut(&id).and_then(|r| r.watch.as_mut()) else {
                    continue;
                };
                if events.contains(rustix::event::PollFlags::IN)
                    && let Some(host) = &self.host
                {
                    watch.serve_one(&self.setup, host.as_fd());
                } else if !events.is_empty() {
                    // Every process that could stop on it has ended.
                    watch.open = false;
                }
            }
            if child {
                drain_signals(&children);
                self.reap()?;
            }
            if message {
                match wire::recv::<ToConfiner>(self.socket.as_fd(), buffer) {
                    Ok(Some((request, fds))) => self.handle(request, fds)?,
                    Ok(None) | Err(_) => return Ok(()),
                }
            }
        }
    }

    fn handle(&mut self, request: ToConfiner, fds: Vec<OwnedFd>) -> io::Result<()> {
        match request {
            ToConfiner::Setup(_) => Ok(()),
            ToConfiner::Spawn { id, program } => {
                let [stdout, stderr]: [OwnedFd; 2] = fds
                    .try_into()
                    .map_err(|_| io::Error::other("a program comes with its stdout and stderr"))?;
                match self.spawn(id, &program, stdout, stderr) {
                    Ok((running, pidfd, proxy)) => {
                        self.running.insert(id, running);
                        let mut sent: Vec<BorrowedFd<'_>> = vec![pidfd.as_fd()];
                        if let Some(proxy) = &proxy {
                            sent.push(proxy.as_fd());
                        }
                        wire::send(self.socket.as_fd(), &FromConfiner::Started { id }, &sent)
                    }
                    Err(e) => {
                        let missing = e.kind() == io::ErrorKind::NotFound;
                        let message = FromConfiner::Failed {
                            id,
                            error: e.to_string(),
                            missing,
                        };
                        wire::send(self.socket.as_fd(), &message, &[])
                    }
                }
            }
            ToConfiner::Kill { id } => {
                if let Some(running) = self.running.get(&id) {
                    self.end(id, running);
                }
                Ok(())
            }
        }
    }

    /// Collect ended children: a program's end is told to wharf, and what it left behind is
    /// ended; an orphan that came here is simply reaped.
    fn reap(&mut self) -> io::Result<()> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG on any child; `status` is a local.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return Ok(());
            }
            let Some(id) = self.running.iter().find(|(_, r)| r.child == pid).map(|(id, _)| *id) else {
                continue;
            };
            let running = self.running.remove(&id).expect("found above");
            self.end(id, &running);
            let beyond = running.watch.map(|w| w.beyond()).unwrap_or_default();
            let (code, signal) = if libc::WIFEXITED(status) {
                (Some(libc::WEXITSTATUS(status)), None)
            } else if libc::WIFSIGNALED(status) {
                (None, Some(libc::WTERMSIG(status)))
            } else {
                (None, None)
            };
            let exited = FromConfiner::Exited {
                id,
                code,
                signal,
                beyond,
            };
            wire::send(self.socket.as_fd(), &exited, &[])?;
        }
    }

    /// End a program and whatever it started: its process namespace; else its process
    /// group, and the detached processes that came here with its mark.
    fn end(&self, id: u64, running: &Running) {
        // SAFETY: signalling pids this process started; a stale one only fails.
        unsafe {
            if running.own_namespace {
                libc::kill(running.child, libc::SIGKILL);
                return;
            }
            libc::kill(-running.child, libc::SIGKILL);
        }
        // Detached processes come here when the one they left ends, which may be after the
        // program: every marked process of this tree goes, wherever it hangs now.
        for orphan in descendants() {
            if orphan != running.child && marked(orphan, id) {
                // SAFETY: as above.
                unsafe { libc::kill(orphan, libc::SIGKILL) };
            }
        }
    }

    fn end_all(&mut self) {
        for (id, running) in &self.running {
            self.end(*id, running);
        }
        // Whatever is still below this process came from a program.
        for process in descendants() {
            // SAFETY: as above.
            unsafe { libc::kill(process, libc::SIGKILL) };
        }
    }

    /// Fork `program` as its step allows: returns what to keep of it, its pidfd, and its
    /// proxy's listening socket.
    fn spawn(
        &self,
        id: u64,
        program: &Program,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> io::Result<(Running, OwnedFd, Option<OwnedFd>)> {
        let prepared = Prepared::new(program, id)?;
        let own_namespace = self.level == Level::Full && !program.signals;
        let proxied = self.level == Level::Full && program.network != Network::None;
        let watched = self.setup.audit && self.level >= Level::Landlock;
        let (failure_read, failure_write) = pipe()?;
        // What the child made and this process keeps comes back through this socket: its
        // proxy's listening socket, then its watch's listener.
        let (handover_here, handover_there) = if proxied || watched {
            let (a, b) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::SEQPACKET,
                rustix::net::SocketFlags::CLOEXEC,
                None,
            )?;
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        // The child shares this process's memory and runs on a stack of its own until it
        // execs (or fails), while this process waits: no page table is copied, which is
        // most of what a fork of this process costs. It is the first process of a process
        // namespace of its own when it gets one, and the clone also returns its pidfd.
        let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
        if own_namespace {
            flags |= libc::CLONE_NEWPID;
        }
        let mut pidfd: libc::c_int = -1;
        let mut task = Task {
            confiner: self,
            program,
            prepared: &prepared,
            stdout: &stdout,
            stderr: &stderr,
            failure: &failure_write,
            proxy: handover_there.as_ref().filter(|_| proxied),
            watch: handover_there.as_ref().filter(|_| watched),
            own_namespace,
        };
        let stack = self.stack.top();
        // SAFETY: `task` and the stack outlive the child's use of them: CLONE_VFORK holds
        // this (single-threaded) process until the child has exec'd or exited.
        let child = unsafe {
            libc::clone(
                become_child,
                stack,
                flags,
                std::ptr::addr_of_mut!(task).cast(),
                std::ptr::addr_of_mut!(pidfd),
            )
        };
        if child < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel wrote a new descriptor there, ours alone.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        drop((failure_write, handover_there, stdout, stderr));
        // The child has exec'd or ended (CLONE_VFORK): its failure, if any, is all there.
        let failure = read_all(&failure_read)?;
        if !failure.is_empty() {
            let (errno, message) = failure.split_once(':').unwrap_or(("5", &failure));
            let errno: i32 = errno.parse().unwrap_or(libc::EIO);
            // SAFETY: reaping our own child, which exits at once.
            unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
            return Err(io::Error::new(
                io::Error::from_raw_os_error(errno).kind(),
                message.to_string(),
            ));
        }
        let handover = handover_here.as_ref();
        let received = || {
            handover
                .ok_or_else(|| io::Error::other("no handover"))
                .and_then(receive_fd)
        };
        let proxy = if proxied { Some(received()?) } else { None };
        let watch = if watched {
            Some(crate::watch::Watch::new(received()?, program.clone()))
        } else {
            None
        };
        Ok((
            Running {
                child,
                own_namespace,
                watch,
            },
            pidfd,
            proxy,
        ))
    }
}

/// What the child of a spawn needs, passed through `clone`.
struct Task<'a> {
    confiner: &'a Confiner,
    program: &'a Program,
    prepared: &'a Prepared,
    stdout: &'a OwnedFd,
    stderr: &'a OwnedFd,
    failure: &'a OwnedFd,
    /// Where the child hands its proxy's listening socket, and its watch's listener, when
    /// it has them (one socket).
    proxy: Option<&'a OwnedFd>,
    watch: Option<&'a OwnedFd>,
    own_namespace: bool,
}

/// The child's start: become the program, or say why not on the failure pipe and exit.
extern "C" fn become_child(task: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn` passes a live `Task` and waits (CLONE_VFORK) until we exec or exit.
    let task = unsafe { &*task.cast::<Task<'_>>() };
    let error = task.start();
    let errno = error.raw_os_error().unwrap_or(libc::EIO);
    let message = format!("{errno}:{error}");
    // SAFETY: writing to the failure pipe, then leaving without running destructors (the
    // memory is the confinement process's).
    unsafe {
        libc::write(task.failure.as_raw_fd(), message.as_ptr().cast(), message.len());
        libc::_exit(127)
    }
}

impl Task<'_> {
    /// Become the program. Returns only what went wrong.
    fn start(&self) -> io::Error {
        let steps = || -> io::Result<std::convert::Infallible> {
            // Dies with this process (its parent, single-threaded: no thread to outlive).
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // This process reads SIGCHLD through a descriptor, blocked; a program gets it.
            unblock_signals()?;
            if self.own_namespace {
                // SAFETY: plain system call.
                check(unsafe { libc::setsid() })?;
            } else {
                rustix::process::setpgid(None, None)?;
            }
            if let Some(handover) = self.proxy {
                // A network of its own: only a loopback, where wharf's proxy listens.
                // SAFETY: plain system call in a single-threaded child.
                check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
                crate::namespaces::loopback_up()?;
                let listener = std::net::TcpListener::bind(("127.0.0.1", PROXY_PORT))?;
                send_fd(handover, listener.as_fd())?;
            }
            self.become_program()
        };
        match steps() {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    /// Stdio, directory, limits, Landlock, seccomp, capabilities, then exec.
    fn become_program(&self) -> io::Result<std::convert::Infallible> {
        let (program, prepared) = (self.program, self.prepared);
        // SAFETY: duplicating descriptors this process owns onto 0, 1 and 2.
        unsafe {
            check(libc::dup2(self.confiner.null.as_raw_fd(), 0))?;
            check(libc::dup2(self.stdout.as_raw_fd(), 1))?;
            check(libc::dup2(self.stderr.as_raw_fd(), 2))?;
        }
        rustix::process::chdir(&program.cwd)?;
        limit(program)?;
        rustix::thread::set_no_new_privs(true)?;
        if let Some(base) = &self.confiner.base {
            // An audit lets a program at the whole workspace, to see what it needs of it.
            let widened;
            let layer = if self.confiner.setup.audit {
                widened = Program {
                    write: [vec![self.confiner.setup.workspace.clone()], program.write.clone()].concat(),
                    ..program.clone()
                };
                &widened
            } else {
                program
            };
            layers::restrict_program(base, &self.confiner.setup, layer, self.confiner.level)
                .map_err(|e| io::Error::other(format!("Landlock: {e}")))?;
        }
        if let Some(filter) = &self.confiner.filters[usize::from(program.network != Network::None)] {
            seccompiler::apply_filter(filter).map_err(|e| io::Error::other(format!("seccomp: {e}")))?;
        }
        if self.confiner.root && self.confiner.level > Level::None {
            drop_capabilities()?;
        }
        if let Some(handover) = self.watch {
            // Last: from here on, each call that names a path waits for this process.
            let listener = crate::watch::install()?;
            send_fd(handover, listener.as_fd())?;
        }
        // SAFETY: the arrays are null-terminated and outlive the call, which returns only
        // on failure.
        unsafe {
            libc::execve(
                prepared.path.as_ptr(),
                prepared.argv_ptrs.as_ptr(),
                prepared.envp_ptrs.as_ptr(),
            );
        }
        Err(io::Error::last_os_error())
    }
}

/// The stack children run on until they exec: one at a time (CLONE_VFORK), so one stack.
struct Stack {
    base: *mut libc::c_void,
    size: usize,
}

impl Stack {
    const SIZE: usize = 1 << 20;

    fn new() -> io::Result<Stack> {
        // SAFETY: a fresh private mapping; its lowest page is made a guard.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                Self::SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            libc::mprotect(base, 4096, libc::PROT_NONE);
            Ok(Stack { base, size: Self::SIZE })
        }
    }

    /// Stacks grow down: the child starts at the top, 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of our own mapping, as clone expects.
        unsafe { self.base.cast::<u8>().add(self.size).cast() }
    }
}

/// What `execve` takes, made before the fork.
struct Prepared {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl Prepared {
    fn new(program: &Program, id: u64) -> io::Result<Prepared> {
        let c = |s: &[u8]| CString::new(s).map_err(|_| io::Error::other("a NUL byte in an argument or variable"));
        let path = c(program.path.as_os_str().as_bytes())?;
        let mut argv = vec![c(program.name.as_bytes())?];
        for arg in &program.args {
            argv.push(c(arg.as_bytes())?);
        }
        let mut envp = Vec::new();
        for (key, value) in &program.env {
            envp.push(c(format!("{key}={value}").as_bytes())?);
        }
        envp.push(c(format!("{MARK}={id}").as_bytes())?);
        let argv_ptrs = argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
        let envp_ptrs = envp.iter().map(|e| e.as_ptr()).chain([std::ptr::null()]).collect();
        Ok(Prepared {
            path,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
        })
    }
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

fn read_all(fd: &OwnedFd) -> io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::from(fd.try_clone()?).read_to_string(&mut text)?;
    Ok(text)
}

fn send_fd(socket: &OwnedFd, fd: BorrowedFd<'_>) -> io::Result<()> {
    wire::send(socket.as_fd(), &(), &[fd])
}

fn receive_fd(socket: &OwnedFd) -> io::Result<OwnedFd> {
    let mut buffer = [0u8; 16];
    match wire::recv::<()>(socket.as_fd(), &mut buffer)? {
        Some((_, mut fds)) if !fds.is_empty() => Ok(fds.remove(0)),
        _ => Err(io::Error::other("the program's proxy socket did not come")),
    }
}

/// Its limits, as the kernel keeps them per process.
fn limit(program: &Program) -> io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let set = |resource, value: Option<u64>| match value {
        Some(v) => setrlimit(
            resource,
            Rlimit {
                current: Some(v),
                maximum: Some(v),
            },
        ),
        None => Ok(()),
    };
    set(Resource::As, program.limits.memory)?;
    set(Resource::Nproc, program.limits.processes)?;
    set(Resource::Fsize, program.limits.file_size)?;
    set(Resource::Core, Some(0))?;
    Ok(())
}

/// Empty the bounding set, once for the confinement process and all it forks: no exec
/// gives a root program root's powers back. The process keeps its own, to make namespaces.
fn drop_bounding_set() -> io::Result<()> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse::<libc::c_int>().ok())
        .unwrap_or(40);
    for cap in 0..=last {
        // SAFETY: prctl with integer arguments.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if ret < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A root program keeps uid 0 (files it owns) but none of root's powers: with the bounding
/// set empty, clearing its ambient and inheritable sets leaves exec nothing to give.
fn drop_capabilities() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    let header = libc_cap_header();
    let data = [libc_cap_data(); 2];
    // SAFETY: capset with a version-3 header and two zeroed data blocks.
    check(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as libc::c_int })?;
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn libc_cap_header() -> CapHeader {
    CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    }
}

fn libc_cap_data() -> CapData {
    CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }
}

/// A descriptor that turns readable when a child ends (SIGCHLD, blocked and read here).
fn child_signals() -> io::Result<OwnedFd> {
    // SAFETY: sigset manipulation on locals; signalfd returns a new descriptor.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        check(libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()))?;
        let fd = check(libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// A program starts with no signal blocked.
fn unblock_signals() -> io::Result<()> {
    // SAFETY: an empty set, made on the stack.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        check(libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()))?;
    }
    Ok(())
}

fn drain_signals(fd: &OwnedFd) {
    let mut info = [0u8; 128];
    // SAFETY: reading whole signalfd_siginfo records into a local buffer.
    while unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) } > 0 {}
}

/// The children of `pid`, as the kernel lists them for each of its threads.
fn children_of(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        found.extend(text.split_whitespace().filter_map(|p| p.parse::<libc::pid_t>().ok()));
    }
    found
}

/// This process's children.
fn children() -> Vec<libc::pid_t> {
    children_of(std::process::id() as libc::pid_t)
}

/// Every process below this one (bounded: a fork bomb is held by the process limit).
fn descendants() -> Vec<libc::pid_t> {
    const MOST: usize = 65_536;
    let mut found = children();
    let mut next = 0;
    while next < found.len() && found.len() < MOST {
        let more = children_of(found[next]);
        found.extend(more);
        next += 1;
    }
    found
}

/// Whether process `pid` carries program `id`'s mark in its environment.
fn marked(pid: libc::pid_t, id: u64) -> bool {
    let wanted = format!("{MARK}={id}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes()))
        .unwrap_or(false)
}
