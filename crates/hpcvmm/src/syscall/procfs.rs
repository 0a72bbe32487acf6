//! Virtual files the VMM answers itself instead of the host (a guest-private `/proc` and
//! `/sys` will grow here): a path lookup gives a [`Node`], whose content is generated from the
//! kernel objects at open time.

use super::Ctx;

/// A virtual file system node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A regular file with this content.
    File(Vec<u8>),
    /// A symbolic link to this target (readlink answers it).
    Link(Vec<u8>),
}

/// The virtual node at guest path `full` (absolute, as resolved by the caller), if any.
pub fn lookup(ctx: &Ctx<'_>, full: &str) -> Option<Node> {
    let n = ctx.run.ncpus();
    match full {
        "/sys/devices/system/cpu/online"
        | "/sys/devices/system/cpu/possible"
        | "/sys/devices/system/cpu/present" => Some(Node::File(if n == 1 {
            b"0\n".to_vec()
        } else {
            format!("0-{}\n", n - 1).into_bytes()
        })),
        "/proc/self/exe" => Some(Node::Link(ctx.tg.exe_path.as_bytes().to_vec())),
        _ => None,
    }
}

/// The content of a virtual regular file at `full`, if there is one.
pub fn file(ctx: &Ctx<'_>, full: &str) -> Option<Vec<u8>> {
    match lookup(ctx, full)? {
        Node::File(c) => Some(c),
        Node::Link(_) => None,
    }
}
