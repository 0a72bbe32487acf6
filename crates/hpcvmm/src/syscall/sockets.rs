//! Sockets: none implemented yet. Every socket call is `Unsupported(ENOSYS)` in the
//! [`table`](super::table); handlers go here, creating `FileKind::Socket` descriptions.
