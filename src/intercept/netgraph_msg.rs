//! The ng_socket(4) wire formats the netgraph copy source needs, as bytes: socket
//! addresses, the one control message it sends (`NGM_CONNECT`) and the hook names ng_ipfw(4)
//! accepts.
//!
//! Owns these encodings and nothing else: no socket, no syscall, no `cfg` gate, so every
//! byte is tested on Linux. `netgraph.rs` (FreeBSD only) is the thin syscall glue around
//! it. Must not grow messages that change anything but our own node's one hook.
//!
//! Every fact below is from freebsd/freebsd-src (read, not copied):
//! - **Family and protocols.** `AF_NETGRAPH` is 32 (sys/sys/socket.h; the libc crate has
//!   the same value), the protocols are `NG_DATA` 1 and `NG_CONTROL` 2
//!   (sys/netgraph/ng_socket.h), both `SOCK_DGRAM` (sys/netgraph/ng_socket.c `ngsw[]`).
//! - **`struct sockaddr_ng`** { u_char sg_len; sa_family_t sg_family; char sg_data[14];
//!   /* actually longer */ } (ng_socket.h). `sg_len` counts the whole structure; a path
//!   or name goes in `sg_data` NUL-terminated. `ng_bind` wants `sg_data[sg_len - 3]` to be
//!   that NUL and `sg_len` at most `NG_NODESIZ + 2`; `ngc_send` takes the `sg_len - 2`
//!   bytes after the header as the destination path.
//! - **A control socket makes a node; a data socket joins one.** `ngc_attach` checks
//!   `PRIV_NETGRAPH_CONTROL` and creates a node of type "socket"; `ngd_attach` checks no
//!   privilege, and `connect(2)` on it (`ng_connect_data`) attaches it to the socket node
//!   named by the path, refusing a node that is not a socket node (EINVAL) or already has a
//!   data socket (EADDRINUSE). `bind(2)` on the control socket names the node
//!   (`ng_bind` → `ng_name_node`, in sys/netgraph/ng_base.c: a name is 1..31 bytes without
//!   '.' or ':', not of the `[hex]` ID form, unique: else EADDRINUSE).
//! - **The node lives while either socket is open.** `ng_socket_free_priv` removes the
//!   node only when the last of control socket and data socket is gone, so the control
//!   socket can be closed once the hook is connected, leaving a data socket alone.
//! - **`struct ng_mesg`** (sys/netgraph/ng_message.h): a 56-byte header { u_char
//!   version (= `NG_VERSION` 8); u_char spare; u_int16_t spare2; u_int32_t arglen, cmd,
//!   flags, token, typecookie; u_char cmdstr[32]; } then `arglen` bytes of data, in host
//!   byte order. `NGM_GENERIC_COOKIE` is 1137070366, `NGM_CONNECT` 3, and `struct
//!   ngm_connect` is { char path[512]; char ourhook[32]; char peerhook[32]; }.
//!   `ngc_send` refuses any other version (EINVAL) and sleeps until the message has been
//!   applied, returning its error; `ng_generic_msg` (ng_base.c) refuses an `NGM_CONNECT`
//!   whose `arglen` is not `sizeof(struct ngm_connect)`, and connects hook `ourhook` of
//!   the addressed node (".": our own) to hook `peerhook` of the node at `path`.
//! - **ng_ipfw(4).** One node for the whole kernel, named "ipfw" at module load
//!   (sys/netgraph/ng_ipfw.c `ng_ipfw_mod_event`; `ng_ipfw_constructor` refuses a second).
//!   `ng_ipfw_newhook` accepts only names made of decimal digits without a leading zero
//!   ("0" itself is fine) and keeps the number as a `u_int16_t`; `ng_ipfw_input` sends a
//!   packet to the hook whose number equals the rule's cookie (`fwa->rule.info`, set from
//!   the `netgraph`/`ngtee` argument in sys/netpfil/ipfw/ip_fw2.c) and returns ESRCH when
//!   there is none: so the hook for `ipfw add ... ngtee 10004` is named "10004".
//! - **What arrives.** `ngs_rcvdata` appends the packet to the data socket with a
//!   `sockaddr_ng` naming the hook it came in on (`sg_len` = name length + 3,
//!   NUL-terminated), and nothing else: ng_ipfw sends an `ngtee` copy "without a tag"
//!   (`m_dup` of the packet; `NG_SEND_DATA_ONLY`), so neither the rule nor the direction
//!   comes with it.

use std::fmt;

/// `AF_NETGRAPH` / `PF_NETGRAPH` (sys/sys/socket.h).
pub const AF_NETGRAPH: u8 = 32;
/// `NG_DATA`: the data socket protocol (ng_socket.h).
pub const NG_DATA: i32 = 1;
/// `NG_CONTROL`: the control socket protocol (ng_socket.h).
pub const NG_CONTROL: i32 = 2;
/// `NG_HOOKSIZ`: a hook name including its NUL (ng_message.h).
pub const NG_HOOKSIZ: usize = 32;
/// `NG_NODESIZ`: a node name including its NUL.
pub const NG_NODESIZ: usize = 32;
/// `NG_PATHSIZ`: a path including its NUL.
pub const NG_PATHSIZ: usize = 512;
/// `NG_CMDSTRSIZ`: `cmdstr` in the message header.
pub const NG_CMDSTRSIZ: usize = 32;
/// `NG_VERSION`: the message header version `ngc_send` insists on.
pub const NG_VERSION: u8 = 8;
/// `NGM_GENERIC_COOKIE`: the type cookie of the messages every node understands.
pub const NGM_GENERIC_COOKIE: u32 = 1_137_070_366;
/// `NGM_CONNECT`: connect a hook of the addressed node to a hook of another node.
pub const NGM_CONNECT: u32 = 3;
/// `sizeof(struct ng_mesg)` without data: 4 + 5 * 4 + `NG_CMDSTRSIZ`.
pub const NG_MESG_HDR_LEN: usize = 56;
/// `sizeof(struct ngm_connect)`.
pub const NGM_CONNECT_LEN: usize = NG_PATHSIZ + 2 * NG_HOOKSIZ;
/// The ng_ipfw node's absolute path.
pub const IPFW_NODE_PATH: &str = "ipfw:";
/// The path of the node a control socket belongs to.
pub const OWN_NODE_PATH: &str = ".";
/// Room for the address `recvfrom(2)` fills in on a data socket: header, the longest hook
/// name and its NUL (`ngs_rcvdata` uses the same bound).
pub const RECV_ADDR_LEN: usize = NG_HOOKSIZ + 4;

/// A name or path that netgraph would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Occurs when a string does not fit its field with its NUL (`what` names the field).
    #[error("netgraph {what} {text:?} is longer than {max} bytes")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// The string.
        text: String,
        /// The longest string the field holds.
        max: usize,
    },
    /// Occurs when a name or path is empty or holds a NUL.
    #[error("netgraph {what} {text:?} is empty or holds a NUL")]
    Bad {
        /// Which field.
        what: &'static str,
        /// The string.
        text: String,
    },
}

/// The ng_ipfw hook that `ipfw ... ngtee COOKIE` (and `netgraph COOKIE`) feed: the cookie in
/// decimal, which is always a name `ng_ipfw_newhook` accepts.
pub fn ipfw_hook_name(cookie: u16) -> String {
    cookie.to_string()
}

/// Whether ng_ipfw accepts `name` as a hook (`ng_ipfw_newhook`): decimal digits only, no
/// leading zero unless the name is "0", and a value that fits the node's `u_int16_t`.
pub fn is_ipfw_hook_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_digit())
        && (name == "0" || !name.starts_with('0'))
        && name.parse::<u16>().is_ok()
}

/// The name our socket node takes: one per cookie, so a second instance for the same
/// cookie fails at `bind(2)` with EADDRINUSE before it touches ipfw's node.
pub fn node_name(cookie: u16) -> String {
    format!("ftp6proxy-{cookie}")
}

fn check(what: &'static str, text: &str, size: usize) -> Result<(), Error> {
    if text.is_empty() || text.contains('\0') {
        return Err(Error::Bad {
            what,
            text: text.to_string(),
        });
    }
    if text.len() >= size {
        return Err(Error::TooLong {
            what,
            text: text.to_string(),
            max: size - 1,
        });
    }
    Ok(())
}

/// A `sockaddr_ng` holding `path` (a node name for `bind(2)`, a path for `connect(2)` and
/// `sendto(2)`), NUL-terminated, `sg_len` its exact length. Pass exactly these bytes and
/// this length: FreeBSD sets `sa_len` from the length given to the syscall.
///
/// # Errors
/// [`Error`] for an empty path, a NUL inside it, or one longer than a `u_char` length
/// allows.
pub fn sockaddr_ng(path: &str) -> Result<Vec<u8>, Error> {
    check("address", path, usize::from(u8::MAX) - 2)?;
    let len = u8::try_from(2 + path.len() + 1).expect("checked above");
    let mut sa = Vec::with_capacity(usize::from(len));
    sa.push(len);
    sa.push(AF_NETGRAPH);
    sa.extend_from_slice(path.as_bytes());
    sa.push(0);
    Ok(sa)
}

/// The `sockaddr_ng` that names our node for `bind(2)` on the control socket.
///
/// # Errors
/// [`Error`] when `name` is not a node name `ng_name_node` accepts.
pub fn bind_addr(name: &str) -> Result<Vec<u8>, Error> {
    check("node name", name, NG_NODESIZ)?;
    if name.contains(['.', ':']) || (name.starts_with('[') && name.ends_with(']')) {
        return Err(Error::Bad {
            what: "node name",
            text: name.to_string(),
        });
    }
    sockaddr_ng(name)
}

/// An `NGM_CONNECT` message: connect hook `ourhook` of the node it is sent to (".", our
/// own) to hook `peerhook` of the node at `path`.
///
/// # Errors
/// [`Error`] when a field is empty or does not fit.
pub fn connect_msg(
    token: u32,
    path: &str,
    ourhook: &str,
    peerhook: &str,
) -> Result<Vec<u8>, Error> {
    check("path", path, NG_PATHSIZ)?;
    check("hook", ourhook, NG_HOOKSIZ)?;
    check("hook", peerhook, NG_HOOKSIZ)?;
    let mut msg = Vec::with_capacity(NG_MESG_HDR_LEN + NGM_CONNECT_LEN);
    msg.push(NG_VERSION);
    msg.push(0); // spare
    msg.extend_from_slice(&0u16.to_ne_bytes()); // spare2
    let arglen = u32::try_from(NGM_CONNECT_LEN).expect("576 fits");
    msg.extend_from_slice(&arglen.to_ne_bytes());
    msg.extend_from_slice(&NGM_CONNECT.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // flags: NGF_ORIG
    msg.extend_from_slice(&token.to_ne_bytes());
    msg.extend_from_slice(&NGM_GENERIC_COOKIE.to_ne_bytes());
    push_padded(&mut msg, "connect", NG_CMDSTRSIZ);
    debug_assert_eq!(msg.len(), NG_MESG_HDR_LEN);
    push_padded(&mut msg, path, NG_PATHSIZ);
    push_padded(&mut msg, ourhook, NG_HOOKSIZ);
    push_padded(&mut msg, peerhook, NG_HOOKSIZ);
    Ok(msg)
}

fn push_padded(buf: &mut Vec<u8>, text: &str, size: usize) {
    let start = buf.len();
    buf.extend_from_slice(text.as_bytes());
    buf.resize(start + size, 0);
}

/// The hook a packet came in on, from the address `recvfrom(2)` filled in on a data
/// socket (`addr`, cut to the length the kernel returned). `None` when it is not a
/// netgraph address.
pub fn hook_of(addr: &[u8]) -> Option<&[u8]> {
    let len = usize::from(*addr.first()?).min(addr.len());
    if len < 2 || addr.get(1) != Some(&AF_NETGRAPH) {
        return None;
    }
    let data = &addr[2..len];
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    Some(&data[..end])
}

/// A hook name for log lines (untrusted only in the sense that the kernel wrote it).
pub struct HookName<'a>(pub &'a [u8]);

impl fmt::Display for HookName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_names_are_the_cookie_in_decimal() {
        for (cookie, name) in [(10004, "10004"), (0, "0"), (1, "1"), (65535, "65535")] {
            assert_eq!(ipfw_hook_name(cookie), name);
            assert!(is_ipfw_hook_name(name), "{name}");
        }
    }

    /// The rules of `ng_ipfw_newhook` (and its `u_int16_t` rule number).
    #[test]
    fn hook_names_ng_ipfw_refuses() {
        for name in [
            "",
            "010004",
            "00",
            "10004a",
            "-1",
            " 1",
            "65536",
            "99999999999",
        ] {
            assert!(!is_ipfw_hook_name(name), "{name:?}");
        }
    }

    #[test]
    fn sockaddr_holds_the_path_nul_terminated_with_its_exact_length() {
        assert_eq!(sockaddr_ng(".").unwrap(), [4, 32, b'.', 0]);
        assert_eq!(
            sockaddr_ng("ipfw:").unwrap(),
            [8, 32, b'i', b'p', b'f', b'w', b':', 0]
        );
        assert!(sockaddr_ng("").is_err());
        assert!(sockaddr_ng("a\0b").is_err());
        assert!(sockaddr_ng(&"x".repeat(252)).is_ok());
        assert!(sockaddr_ng(&"x".repeat(254)).is_err());
    }

    /// `ng_bind`: 4 <= sg_len <= NG_NODESIZ + 2 and the byte at sg_len - 3 is the NUL.
    #[test]
    fn bind_address_satisfies_ng_bind() {
        let sa = bind_addr(&node_name(10004)).unwrap();
        assert_eq!(&sa[2..], b"ftp6proxy-10004\0");
        let len = usize::from(sa[0]);
        assert_eq!(len, sa.len());
        assert!((4..=NG_NODESIZ + 2).contains(&len));
        assert_eq!(sa[len - 1], 0, "sg_data[sg_len - 3] is the NUL");
        assert!(bind_addr(&node_name(65535)).is_ok());
        for bad in ["", "a.b", "a:b", "[1f]", &"n".repeat(32)] {
            assert!(bind_addr(bad).is_err(), "{bad:?}");
        }
        assert!(bind_addr(&"n".repeat(31)).is_ok());
    }

    #[test]
    fn connect_message_layout() {
        let msg = connect_msg(7, IPFW_NODE_PATH, "10004", "10004").unwrap();
        assert_eq!(msg.len(), NG_MESG_HDR_LEN + NGM_CONNECT_LEN);
        assert_eq!(msg.len(), 632);
        let u32_at = |at: usize| u32::from_ne_bytes(msg[at..at + 4].try_into().unwrap());
        assert_eq!(msg[0], 8, "NG_VERSION");
        assert_eq!(&msg[1..4], &[0, 0, 0], "spare, spare2");
        assert_eq!(u32_at(4), 576, "arglen = sizeof(struct ngm_connect)");
        assert_eq!(u32_at(8), 3, "NGM_CONNECT");
        assert_eq!(u32_at(12), 0, "NGF_ORIG");
        assert_eq!(u32_at(16), 7, "token");
        assert_eq!(u32_at(20), 1_137_070_366, "NGM_GENERIC_COOKIE");
        assert_eq!(&msg[24..32], b"connect\0");
        assert!(msg[32..56].iter().all(|&b| b == 0));
        assert_eq!(&msg[56..62], b"ipfw:\0");
        assert!(msg[62..568].iter().all(|&b| b == 0), "path padded to 512");
        assert_eq!(&msg[568..574], b"10004\0");
        assert_eq!(&msg[600..606], b"10004\0");
        assert!(msg[606..].iter().all(|&b| b == 0));
    }

    #[test]
    fn connect_message_refuses_what_does_not_fit() {
        assert!(connect_msg(1, "", "1", "1").is_err());
        assert!(connect_msg(1, "ipfw:", &"1".repeat(32), "1").is_err());
        assert!(connect_msg(1, "ipfw:", "1", &"1".repeat(31)).is_ok());
        assert!(connect_msg(1, &"p".repeat(512), "1", "1").is_err());
    }

    /// What `ngs_rcvdata` writes: sg_len = name length + 3, family, name, NUL.
    #[test]
    fn hook_is_read_from_the_receive_address() {
        let mut addr = vec![8, 32];
        addr.extend_from_slice(b"10004\0");
        addr.resize(RECV_ADDR_LEN, 0xee);
        assert_eq!(hook_of(&addr), Some(&b"10004"[..]));
        assert_eq!(
            hook_of(&addr[..5]),
            Some(&b"100"[..]),
            "cut to what was returned"
        );
        assert_eq!(hook_of(&[8, 2, b'1', 0]), None, "not AF_NETGRAPH");
        assert_eq!(hook_of(&[]), None);
        assert_eq!(hook_of(&[1]), None);
        assert_eq!(format!("{}", HookName(b"a\x01")), "a\\x01");
    }
}
