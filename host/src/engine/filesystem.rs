//! What wharf adds to a step's filesystem. wasmtime-wasi does the filesystem work; some
//! functions of `wasi:filesystem/types` are shadowed in the linker by the ones below, which
//! do wharf's part first and then call wasmtime-wasi's own:
//!
//! - The disk limit: what a step may write through its grants (and a WASI command into its
//!   scratch directory) is counted as it writes, and the write that would pass the limit
//!   stops the step instead of reaching the disk. A file written through a stream gets its
//!   stream wrapped, so every later write on it is charged too. Counted: every byte written
//!   (rewrites included), every size a file is set to, and [`ENTRY_COST`] for every file,
//!   directory or link created: an upper bound of what the step can fill.
//! - In a recorded run, the workspace paths a step looks at (opens, examines, lists,
//!   renames, removes) are kept for its replay as it finds them
//!   ([`crate::journal::capture`]).
//! - wharf's own state (`.wharf/`) is neither opened nor changed, whatever the grants
//!   ([`crate::sandbox::reserved`]).

use super::limits::DiskBudget;
use super::state::StepState;
use crate::journal::capture::Look;
use crate::journal::tape::Tape;
use crate::journal::witness::Use;
use bytes::Bytes;
use std::os::fd::AsFd;
use std::sync::Arc;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, Host as _, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{DynOutputStream, FsResult, OutputStream, Pollable, StreamError};

type StreamResult<T> = Result<T, StreamError>;

/// The interface shadowed; the linker serves older 0.2 imports from it too.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// What creating a file, directory or link costs: at least a block of the disk.
pub const ENTRY_COST: u64 = 4096;

fn over(budget: &DiskBudget) -> wasmtime::Error {
    wasmtime::format_err!("disk limit of {} bytes reached", budget.limit)
}

/// Charge `bytes`, or trap: the step has written all it may.
fn charge(state: &StepState, bytes: u64) -> wasmtime::Result<()> {
    if state.disk.charge(bytes) {
        Ok(())
    } else {
        Err(over(&state.disk))
    }
}

/// In a recorded run, keep what the step is about to look at: `path` beneath directory `fd`.
fn look(state: &StepState, fd: &Resource<Descriptor>, path: &str, look: Look) {
    let Tape::Record(recorder) = &state.call.tape else {
        return;
    };
    if let Ok(Descriptor::Dir(dir)) = state.table.get(fd) {
        recorder.capture.look(dir.dir.as_fd(), path, look);
    }
}

/// In a run whose steps are cached, note how the step uses `path` beneath directory `fd`.
fn witness(state: &StepState, fd: &Resource<Descriptor>, path: &str, how: Use) {
    let Tape::Record(recorder) = &state.call.tape else {
        return;
    };
    let Some(witness) = &recorder.witness else { return };
    if let Ok(Descriptor::Dir(dir)) = state.table.get(fd) {
        witness.look(dir.dir.as_fd(), path, how);
    }
}

/// The host directory a step's directory handle is, as the kernel names it.
fn host_dir(state: &StepState, fd: &Resource<Descriptor>) -> Option<std::path::PathBuf> {
    let Ok(Descriptor::Dir(dir)) = state.table.get(fd) else {
        return None;
    };
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", dir.dir.as_fd().as_raw_fd())).ok()
}

/// In an audit run, note the workspace path `path` beneath directory `fd` if the step's
/// grants do not cover it for reading (or, with `write`, for writing): the audit opened
/// the whole workspace, and this is what the step reached beyond its grants.
fn audited(state: &StepState, fd: &Resource<Descriptor>, path: &str, write: bool) {
    let Some(audit) = &state.call.audit else {
        return;
    };
    let Some(host) = host_dir(state, fd) else {
        return;
    };
    if let Some(rel) = audit.workspace_path(&host, path, write) {
        let _ = audit.permit(state.call.grants.check_path(&rel, write));
    }
}

/// Whether `path` beneath directory `fd` is in wharf's own state; if so the call is refused
/// (`not-permitted`), and the step's log says why.
fn reserved(state: &StepState, fd: &Resource<Descriptor>, path: &str, follow: bool) -> bool {
    let held = host_dir(state, fd).is_some_and(|host| state.reserved.holds(&host, path, follow));
    if held {
        state.call.scope.log(
            crate::events::Level::Warn,
            format!("`{path}` is in `.wharf/`, wharf's own state (runs, deploys, locks): no step may open or change it, whatever its grants"),
        );
    }
    held
}

/// The refusal a guest gets for wharf's own state.
fn refused<T>() -> FsOutcome<T> {
    Ok((Err(ErrorCode::NotPermitted),))
}

fn follows(flags: PathFlags) -> Look {
    Look::Entry {
        follow: flags.contains(PathFlags::SYMLINK_FOLLOW),
    }
}

type FsOutcome<T> = wasmtime::Result<(Result<T, ErrorCode>,)>;

/// A result as the guest gets it: an error code, or a trap for what is not one.
fn outcome<T>(fs: &mut WasiFilesystemCtxView<'_>, result: FsResult<T>) -> FsOutcome<T> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(e) => Ok((Err(fs.convert_error_code(e)?),)),
    }
}

pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store, (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                charge(state, buf.len() as u64)?;
                let mut fs = state.filesystem();
                let result = HostDescriptor::write(&mut fs, fd, buf, offset).await;
                outcome(&mut fs, result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store, (fd, size): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                charge(state, size)?;
                let mut fs = state.filesystem();
                let result = HostDescriptor::set_size(&mut fs, fd, size).await;
                outcome(&mut fs, result)
            })
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store, (fd, offset): (Resource<Descriptor>, u64)| {
            let state = store.data_mut();
            let budget = state.disk.clone();
            let mut fs = state.filesystem();
            let result = match HostDescriptor::write_via_stream(&mut fs, fd, offset) {
                Ok(stream) => Ok(metered(fs.table, stream, budget)?),
                Err(e) => Err(fs.convert_error_code(e)?),
            };
            Ok((result,)) as FsOutcome<Resource<DynOutputStream>>
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            let state = store.data_mut();
            let budget = state.disk.clone();
            let mut fs = state.filesystem();
            let result = match HostDescriptor::append_via_stream(&mut fs, fd) {
                Ok(stream) => Ok(metered(fs.table, stream, budget)?),
                Err(e) => Err(fs.convert_error_code(e)?),
            };
            Ok((result,)) as FsOutcome<Resource<DynOutputStream>>
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                if reserved(state, &fd, &path, path_flags.contains(PathFlags::SYMLINK_FOLLOW)) {
                    return refused();
                }
                look(state, &fd, &path, follows(path_flags));
                let writes = oflags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE)
                    || flags.intersects(DescriptorFlags::WRITE | DescriptorFlags::MUTATE_DIRECTORY);
                let follow = path_flags.contains(PathFlags::SYMLINK_FOLLOW);
                let replaces = oflags.contains(OpenFlags::CREATE | OpenFlags::TRUNCATE)
                    && !oflags.intersects(OpenFlags::EXCLUSIVE | OpenFlags::DIRECTORY)
                    && flags.contains(DescriptorFlags::WRITE)
                    && !flags.contains(DescriptorFlags::READ);
                let how = match (replaces, writes) {
                    (true, _) => Use::Replace,
                    (false, true) => Use::Write { follow },
                    (false, false) => Use::Read { follow },
                };
                witness(state, &fd, &path, how);
                audited(state, &fd, &path, writes);
                if oflags.contains(OpenFlags::CREATE) {
                    charge(state, ENTRY_COST)?;
                }
                let mut fs = state.filesystem();
                let result = HostDescriptor::open_at(&mut fs, fd, path_flags, path, oflags, flags).await;
                outcome(&mut fs, result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.stat-at",
        |mut store, (fd, path_flags, path): (Resource<Descriptor>, PathFlags, String)| {
            Box::new(async move {
                let state = store.data_mut();
                look(state, &fd, &path, follows(path_flags));
                witness(
                    state,
                    &fd,
                    &path,
                    Use::Read {
                        follow: path_flags.contains(PathFlags::SYMLINK_FOLLOW),
                    },
                );
                audited(state, &fd, &path, false);
                let mut fs = state.filesystem();
                let result = HostDescriptor::stat_at(&mut fs, fd, path_flags, path).await;
                outcome(&mut fs, result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.read-directory",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let state = store.data_mut();
                look(state, &fd, ".", Look::Listing);
                witness(state, &fd, ".", Use::List);
                audited(state, &fd, ".", false);
                let mut fs = state.filesystem();
                let result = HostDescriptor::read_directory(&mut fs, fd).await;
                outcome(&mut fs, result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.unlink-file-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let state = store.data_mut();
                if reserved(state, &fd, &path, false) {
                    return refused();
                }
                look(state, &fd, &path, Look::Entry { follow: false });
                witness(state, &fd, &path, Use::Write { follow: false });
                audited(state, &fd, &path, true);
                let mut fs = state.filesystem();
                let result = HostDescriptor::unlink_file_at(&mut fs, fd, path).await;
                outcome(&mut fs, result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.remove-directory-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let state = store.data_mut();
                if reserved(state, &fd, &path, false) {
                    return refused();
                }
                look(state, &fd, &path, Look::Entry { follow: false });
                witness(state, &fd, &path, Use::Write { follow: false });
                audited(state, &fd, &path, true);
                let mut fs = state.filesystem();
                let result = HostDescriptor::remove_directory_at(&mut fs, fd, path).await;
                outcome(&mut fs, result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.rename-at",
        |mut store, (fd, old, new_fd, new): (Resource<Descriptor>, String, Resource<Descriptor>, String)| {
            Box::new(async move {
                let state = store.data_mut();
                if reserved(state, &fd, &old, false) || reserved(state, &new_fd, &new, false) {
                    return refused();
                }
                look(state, &fd, &old, Look::Entry { follow: false });
                look(state, &new_fd, &new, Look::Entry { follow: false });
                witness(state, &fd, &old, Use::Write { follow: false });
                witness(state, &new_fd, &new, Use::Write { follow: false });
                audited(state, &fd, &old, true);
                audited(state, &new_fd, &new, true);
                let mut fs = state.filesystem();
                let result = HostDescriptor::rename_at(&mut fs, fd, old, new_fd, new).await;
                outcome(&mut fs, result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let state = store.data_mut();
                if reserved(state, &fd, &path, false) {
                    return refused();
                }
                charge(state, ENTRY_COST)?;
                witness(state, &fd, &path, Use::Write { follow: false });
                audited(state, &fd, &path, true);
                let mut fs = state.filesystem();
                let result = HostDescriptor::create_directory_at(&mut fs, fd, path).await;
                outcome(&mut fs, result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store, (fd, old, new): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                let state = store.data_mut();
                if reserved(state, &fd, &new, false) {
                    return refused();
                }
                charge(state, ENTRY_COST)?;
                witness(state, &fd, &new, Use::Write { follow: false });
                audited(state, &fd, &new, true);
                let mut fs = state.filesystem();
                let result = HostDescriptor::symlink_at(&mut fs, fd, old, new).await;
                outcome(&mut fs, result)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.link-at",
        |mut store,
         (fd, old_flags, old, new_fd, new): (Resource<Descriptor>, PathFlags, String, Resource<Descriptor>, String)| {
            Box::new(async move {
                let state = store.data_mut();
                // A hard link of a state file elsewhere would be the state file, written.
                let follow_old = old_flags.contains(PathFlags::SYMLINK_FOLLOW);
                if reserved(state, &fd, &old, follow_old) || reserved(state, &new_fd, &new, false) {
                    return refused();
                }
                charge(state, ENTRY_COST)?;
                witness(state, &fd, &old, Use::Read { follow: follow_old });
                witness(state, &new_fd, &new, Use::Write { follow: false });
                audited(state, &new_fd, &new, true);
                let mut fs = state.filesystem();
                let result = HostDescriptor::link_at(&mut fs, fd, old_flags, old, new_fd, new).await;
                outcome(&mut fs, result)
            })
        },
    )?;
    Ok(())
}

/// Replace a file's output stream in the table with one that charges every write.
fn metered(
    table: &mut wasmtime::component::ResourceTable,
    stream: Resource<DynOutputStream>,
    budget: Arc<DiskBudget>,
) -> wasmtime::Result<Resource<DynOutputStream>> {
    let inner = table.delete(stream)?;
    let wrapped: DynOutputStream = Box::new(Metered { inner, budget });
    Ok(table.push(wrapped)?)
}

struct Metered {
    inner: DynOutputStream,
    budget: Arc<DiskBudget>,
}

impl Metered {
    fn charge(&self, bytes: usize) -> StreamResult<()> {
        if self.budget.charge(bytes as u64) {
            Ok(())
        } else {
            Err(StreamError::Trap(over(&self.budget)))
        }
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Metered {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.charge(bytes.len())?;
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    fn write_zeroes(&mut self, nelem: usize) -> StreamResult<()> {
        self.charge(nelem)?;
        self.inner.write_zeroes(nelem)
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Metered {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}
