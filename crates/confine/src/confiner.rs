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
    /// The child of this process: the program, or the relay that waits for it.
    child: libc::pid_t,
    /// The program (this process's view of its pid).
    program: libc::pid_t,
    /// It is the first process of a process namespace: killing it ends everything it started.
    own_namespace: bool,
}

struct Confiner {
    socket: OwnedFd,
    setup: Setup,
    level: Level,
    landlock: u32,
    root: bool,
    running: HashMap<u64, Running>,
}

fn run() -> io::Result<()> {
    // SAFETY: fd 0 is the socket wharf handed over as standard input; this process owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(0) };
    let mut buffer = vec![0u8; MAX_MESSAGE];
    let Some((ToConfiner::Setup(setup), _)) = wire::recv::<ToConfiner>(socket.as_fd(), &mut buffer)? else {
        return Err(io::Error::other("wharf did not send the setup first"));
    };
    // Stdin is the socket; programs get /dev/null instead, opened for each.
    let report = prepare(&setup);
    wire::send(socket.as_fd(), &FromConfiner::Ready(report.clone()), &[])?;
    let mut confiner = Confiner {
        socket,
        landlock: report.landlock.unwrap_or(0),
        level: report.level,
        root: report.root,
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
    report
}

impl Confiner {
    fn serve(&mut self, buffer: &mut [u8]) -> io::Result<()> {
        let children = child_signals()?;
        loop {
            let mut fds = [
                rustix::event::PollFd::new(&self.socket, rustix::event::PollFlags::IN),
                rustix::event::PollFd::new(&children, rustix::event::PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let (message, child) = (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
            if child {
                drain_signals(&children);
                self.reap()?;
            }
            if message {
                match wire::recv::<ToConfiner>(self.socket.as_fd(), buffer) {
                    Ok(Some((request, fds))) => self.handle(request, fds)?,
                    // wharf is gone, however it ended: so is everything it started.
                    Ok(None) | Err(_) => {
                        self.end_all();
                        return Ok(());
                    }
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
            let (code, signal) = if libc::WIFEXITED(status) {
                (Some(libc::WEXITSTATUS(status)), None)
            } else if libc::WIFSIGNALED(status) {
                (None, Some(libc::WTERMSIG(status)))
            } else {
                (None, None)
            };
            wire::send(self.socket.as_fd(), &FromConfiner::Exited { id, code, signal }, &[])?;
        }
    }

    /// End a program and whatever it started: its process namespace; else its process
    /// group, and the detached processes that came here with its mark.
    fn end(&self, id: u64, running: &Running) {
        // SAFETY: signalling pids this process started; a stale one only fails.
        unsafe {
            if running.own_namespace {
                libc::kill(running.program, libc::SIGKILL);
                return;
            }
            libc::kill(-running.program, libc::SIGKILL);
        }
        for orphan in children() {
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
        for child in children() {
            // SAFETY: as above.
            unsafe { libc::kill(child, libc::SIGKILL) };
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
        let (failure_read, failure_write) = pipe()?;
        let (pid_read, pid_write) = pipe()?;
        let (proxy_here, proxy_there) = if proxied {
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
        // SAFETY: this process has one thread; the child runs `child` and never returns.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(io::Error::last_os_error());
        }
        if child == 0 {
            drop(failure_read);
            drop(pid_read);
            drop(proxy_here);
            let error = self.child(
                program,
                &prepared,
                &stdout,
                &stderr,
                &failure_write,
                &pid_write,
                proxy_there.as_ref(),
                own_namespace,
            );
            let errno = error.raw_os_error().unwrap_or(libc::EIO);
            let message = format!("{errno}:{error}");
            // SAFETY: writing to our own pipe, then leaving without running destructors.
            unsafe {
                libc::write(failure_write.as_raw_fd(), message.as_ptr().cast(), message.len());
                libc::_exit(127);
            }
        }
        drop((failure_write, pid_write, proxy_there, stdout, stderr));
        let program_pid = if own_namespace {
            let text = read_all(&pid_read)?;
            text.trim().parse().unwrap_or(child)
        } else {
            child
        };
        let proxy = match &proxy_here {
            Some(socket) => Some(receive_fd(socket)?),
            None => None,
        };
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
        // The direct child's pidfd: it is not reaped before the serve loop runs again, so
        // it exists even if the program has already ended; a relay ends as its program.
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(child).ok_or_else(|| io::Error::other("no program pid"))?,
            rustix::process::PidfdFlags::empty(),
        )?;
        Ok((
            Running {
                child,
                program: program_pid,
                own_namespace,
            },
            pidfd,
            proxy,
        ))
    }

    /// In the forked child: become the program. Returns only what went wrong.
    #[allow(clippy::too_many_arguments)]
    fn child(
        &self,
        program: &Program,
        prepared: &Prepared,
        stdout: &OwnedFd,
        stderr: &OwnedFd,
        failure: &OwnedFd,
        pid_out: &OwnedFd,
        proxy: Option<&OwnedFd>,
        own_namespace: bool,
    ) -> io::Error {
        let steps = || -> io::Result<std::convert::Infallible> {
            // Dies with this process (its parent, single-threaded: no thread to outlive).
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            if own_namespace {
                // SAFETY: plain system call.
                check(unsafe { libc::setsid() })?;
            } else {
                rustix::process::setpgid(None, None)?;
            }
            if let Some(proxy) = proxy {
                // A network of its own: only a loopback, where wharf's proxy listens.
                // SAFETY: plain system call in a single-threaded child.
                check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
                crate::namespaces::loopback_up()?;
                let listener = std::net::TcpListener::bind(("127.0.0.1", PROXY_PORT))?;
                send_fd(proxy, listener.as_fd())?;
            }
            if own_namespace {
                // SAFETY: plain system calls; the relay below only waits and exits.
                unsafe {
                    check(libc::unshare(libc::CLONE_NEWPID))?;
                    let program = libc::fork();
                    if program < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if program > 0 {
                        relay(program, pid_out, failure);
                    }
                }
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            }
            self.become_program(program, prepared, stdout, stderr)
        };
        match steps() {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    /// Stdio, directory, limits, Landlock, seccomp, capabilities, then exec.
    fn become_program(
        &self,
        program: &Program,
        prepared: &Prepared,
        stdout: &OwnedFd,
        stderr: &OwnedFd,
    ) -> io::Result<std::convert::Infallible> {
        let null = std::fs::File::open("/dev/null")?;
        // SAFETY: duplicating descriptors this process owns onto 0, 1 and 2.
        unsafe {
            check(libc::dup2(null.as_raw_fd(), 0))?;
            check(libc::dup2(stdout.as_raw_fd(), 1))?;
            check(libc::dup2(stderr.as_raw_fd(), 2))?;
        }
        rustix::process::chdir(&program.cwd)?;
        limit(program)?;
        rustix::thread::set_no_new_privs(true)?;
        if self.level >= Level::Landlock {
            layers::restrict_program(&self.setup, program, self.level, self.landlock)
                .map_err(|e| io::Error::other(format!("Landlock: {e}")))?;
            let filter = crate::filter::program(self.level, &program.network)
                .map_err(|e| io::Error::other(format!("seccomp: {e}")))?;
            seccompiler::apply_filter(&filter).map_err(|e| io::Error::other(format!("seccomp: {e}")))?;
        }
        if self.root && self.level > Level::None {
            drop_capabilities()?;
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

/// The relay between this process and a program that is the first of its own process
/// namespace: it tells the program's pid, waits for it, and ends as it ended.
///
/// # Safety
/// Called in a forked child; never returns.
unsafe fn relay(program: libc::pid_t, pid_out: &OwnedFd, failure: &OwnedFd) -> ! {
    let text = program.to_string();
    // SAFETY: writes to our own pipe; waitpid on our own child; then exit as it did.
    unsafe {
        libc::write(pid_out.as_raw_fd(), text.as_ptr().cast(), text.len());
        // Only the program holds the failure pipe now: its end (exec) is what wharf awaits.
        libc::close(failure.as_raw_fd());
        libc::close(pid_out.as_raw_fd());
        let mut status = 0;
        while libc::waitpid(program, &mut status, 0) < 0 {
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                libc::_exit(127);
            }
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(libc::getpid(), signal);
        }
        libc::_exit(libc::WEXITSTATUS(status))
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

/// A root program keeps uid 0 (files it owns) but none of root's powers: the bounding set
/// is emptied, so no exec gives them back.
fn drop_capabilities() -> io::Result<()> {
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

fn drain_signals(fd: &OwnedFd) {
    let mut info = [0u8; 128];
    // SAFETY: reading whole signalfd_siginfo records into a local buffer.
    while unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) } > 0 {}
}

/// This process's children, as the kernel lists them.
fn children() -> Vec<libc::pid_t> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether process `pid` carries program `id`'s mark in its environment.
fn marked(pid: libc::pid_t, id: u64) -> bool {
    let wanted = format!("{MARK}={id}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes()))
        .unwrap_or(false)
}
