//! The seccomp filter a program starts under: what Landlock cannot say. Without network
//! namespaces (`Level::Landlock`) a program may not open a unix socket (Landlock does not
//! govern connecting to one by path: the Docker engine's is root on the host; socket pairs
//! stay allowed), nor an IP socket when it has no network grant, nor one that is not TCP
//! when it has (Landlock's network rules are TCP's). At every level it may not reach the
//! kernel's key rings, which Landlock does not govern either.

use crate::policy::{Level, Network};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;

/// The filter for a program at `level` with `network`.
pub fn program(level: Level, network: &Network) -> Result<BpfProgram, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for call in [libc::SYS_keyctl, libc::SYS_add_key, libc::SYS_request_key] {
        rules.insert(call, Vec::new());
    }
    if level == Level::Landlock {
        let domain = |family: i32| SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, family as u64);
        let kind =
            |kind: i32| SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::MaskedEq(0xf), kind as u64);
        let mut socket = vec![SeccompRule::new(vec![domain(libc::AF_UNIX)?])?];
        for family in [libc::AF_INET, libc::AF_INET6] {
            match network {
                Network::None => socket.push(SeccompRule::new(vec![domain(family)?])?),
                Network::Granted { .. } => {
                    for not_tcp in [libc::SOCK_DGRAM, libc::SOCK_RAW, libc::SOCK_SEQPACKET] {
                        socket.push(SeccompRule::new(vec![domain(family)?, kind(not_tcp)?])?);
                    }
                }
            }
        }
        rules.insert(libc::SYS_socket, socket);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        std::env::consts::ARCH.try_into()?,
    )?;
    filter.try_into()
}
