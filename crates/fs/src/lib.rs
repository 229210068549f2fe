//! File access for untrusted input, the lowest layer of wharf: a path that a step, a run
//! folder or an image names is resolved beneath its root by the kernel ([`beneath`]), and a
//! file it names is read only when it is a regular file within a limit ([`bounded`]); what
//! it left in a directory is removed without following a link ([`pool`]); a process's own
//! directory is held by a lock and swept once its process is gone ([`held`]).

pub mod beneath;
pub mod bounded;
pub mod held;
pub mod pool;
