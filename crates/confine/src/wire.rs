//! The messages between wharf and its confinement process: one JSON document a datagram of
//! a `SOCK_SEQPACKET` socket pair, with descriptors beside it (`SCM_RIGHTS`): the pipes a
//! program writes to on the way in, the handle of the started program (a pidfd) and the
//! socket its proxy listens on on the way out.

use crate::policy::{Program, Setup};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;

/// Largest message: a program's arguments and environment together. A datagram is bounded
/// by the socket's buffer (`net.core.wmem_max`, 208 KiB by default).
pub const MAX_MESSAGE: usize = 192 << 10;
/// Most descriptors sent with one message.
const MAX_FDS: usize = 4;

#[derive(Debug, Serialize, Deserialize)]
pub enum ToConfiner {
    /// The first message: what the confinement process holds for the whole run.
    Setup(Setup),
    /// Start a program; its stdout and stderr descriptors come with the message.
    Spawn { id: u64, program: Program },
    /// Kill a program and whatever it started.
    Kill { id: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum FromConfiner {
    /// Set up: what it enforces, and why not more.
    Ready(crate::Report),
    /// The program runs; its pidfd comes with the message (and its proxy's listening socket
    /// when it may reach the network through wharf).
    Started { id: u64 },
    /// It could not start: `missing` when the program was not found.
    Failed { id: u64, error: String, missing: bool },
    /// It ended: its exit code, or the signal that ended it.
    Exited {
        id: u64,
        code: Option<i32>,
        signal: Option<i32>,
        /// In an audit: the paths it reached beyond its grants, cut to what a grant names,
        /// and whether it wrote.
        #[serde(default)]
        beyond: Vec<(std::path::PathBuf, bool)>,
    },
}

/// Send `message` with `fds`; blocking or not as the socket is.
pub fn send<T: Serialize>(socket: BorrowedFd<'_>, message: &T, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(std::io::Error::other(format!(
            "its arguments and environment take {} bytes, more than the {} KiB a program is started with",
            bytes.len(),
            MAX_MESSAGE >> 10
        )));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("too many descriptors for one message"));
    }
    rustix::net::sendmsg(socket, &[IoSlice::new(&bytes)], &mut control, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// The next message and its descriptors, read into `buffer` (kept by the caller, at least
/// [`MAX_MESSAGE`] long); None at the end of the stream (the other side closed it).
pub fn recv<T: for<'de> Deserialize<'de>>(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
) -> std::io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        socket.as_fd(),
        &mut [IoSliceMut::new(buffer)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if got.bytes == 0 {
        return Ok(None);
    }
    let message = serde_json::from_slice(&buffer[..got.bytes]).map_err(std::io::Error::other)?;
    Ok(Some((message, fds)))
}
